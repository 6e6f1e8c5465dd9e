package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// optionalString is a string flag that knows whether it was given, so that --reason "" (rows
// whose reason is empty) differs from no --reason (any reason).
type optionalString struct{ v *string }

func (o *optionalString) String() string {
	if o == nil || o.v == nil {
		return ""
	}
	return *o.v
}

func (o *optionalString) Set(s string) error { o.v = &s; return nil }

// age is a flag of a duration that also takes days ("30d"), since rows are requeued by weeks.
type age struct{ d time.Duration }

func (a *age) String() string {
	if a == nil || a.d == 0 {
		return ""
	}
	return a.d.String()
}

func (a *age) Set(s string) error {
	d, err := parseAge(s)
	if err != nil {
		return err
	}
	a.d = d
	return nil
}

// parseAge reads a Go duration ("36h", "90m") or a whole number of days ("30d").
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if maxDays := int64(math.MaxInt64 / (24 * time.Hour)); err != nil || n > maxDays || n < -maxDays {
			return 0, fmt.Errorf("%q is not a whole number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 36h or 30d", s)
	}
	return d, nil
}

func cmdRequeue(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "requeue", "requeue --status failed|done [--reason TEXT] [--older-than DUR] [--dry-run] [flags]\n\n"+
		"Puts rows back in the queue: pending, due now, attempts 0, reason cleared; a done row keeps its results\n"+
		"(exists_whatsapp, avatar_available, url_avatar, checked_at) until it is answered again. Rows leased by a\n"+
		"run right now are never touched. It works through the table 10,000 ids per transaction and prints\n"+
		"\"requeued N rows\" (with --dry-run, \"would requeue N rows\" and changes nothing).")
	tableFlag(f)
	status := f.String("status", "", "which rows to put back: failed or done (required)")
	var reason optionalString
	f.Var(&reason, "reason", "only rows whose reason is exactly `TEXT`: an exact match, case, spaces and punctuation included, "+
		"no patterns (enrich status --exact lists the reasons)")
	var older age
	f.Var(&older, "older-than", "only rows checked longer ago than `DUR` (their checked_at, or updated_at for a row "+
		"without one), e.g. 720h or 30d; default any age")
	dryRun := f.Bool("dry-run", false, "count the rows that would be put back and change nothing")
	if _, err := f.parse(args, false); err != nil {
		return err
	}
	switch *status {
	case store.StatusFailed, store.StatusDone:
	case "":
		return configErrorf("--status is required: --status failed or --status done (see enrich requeue --help)")
	case store.StatusPending:
		return configErrorf("--status pending: pending rows are in the queue already; use --status failed or --status done")
	default:
		return configErrorf("--status %q: use --status failed or --status done", *status)
	}
	if older.d < 0 {
		return configErrorf("--older-than %v: must not be negative; give an age such as 720h or 30d, or leave it out for any age", older.d)
	}
	pool, st, err := a.connectStore(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	n, err := st.Requeue(ctx, store.RequeueFilter{Status: *status, Reason: reason.v, OlderThan: older.d}, *dryRun)
	switch {
	case *dryRun && err == nil:
		fmt.Fprintf(a.io.out, "would requeue %d rows\n", n)
	case *dryRun:
		return dbErr("requeue", err)
	case err != nil:
		fmt.Fprintf(a.io.out, "requeued %d rows before the error\n", n)
		return dbErr("requeue", err)
	default:
		fmt.Fprintf(a.io.out, "requeued %d rows\n", n)
	}
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/rs/zerolog"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// display is how a run shows itself: a live bar or periodic log lines (never both), and the
// closing summary.
type display struct {
	bar bool
	// every is the progress lines' period (negative: none).
	every time.Duration
	// summary is log, text or json.
	summary string
}

// display resolves --progress and --summary against where the output goes.
func (a *app) display(rf runFlags, logFormat string) (display, error) {
	consoleLogs := logFormat == "console" || (logFormat == "auto" && isTerminal(a.io.err))
	d := display{every: rf.progressEvery, summary: rf.summary}
	if rf.progressEvery <= 0 {
		return d, configErrorf("--progress-every %s: give a positive duration, e.g. 10s (or --progress off)", rf.progressEvery)
	}
	switch rf.progress {
	case "auto":
		d.bar = logFormat != "json" && terminalWidth(a.io.err) > 0
	case "bar":
		d.bar = true
	case "lines":
	case "off":
		d.every = -1
	default:
		return d, configErrorf("--progress %q: use auto, bar, lines or off", rf.progress)
	}
	if d.bar {
		d.every = -1
	}
	switch rf.summary {
	case "auto":
		d.summary = "log"
		if consoleLogs {
			d.summary = "text"
		}
	case "log", "text", "json":
	default:
		return d, configErrorf("--summary %q: use auto, log, text or json", rf.summary)
	}
	return d, nil
}

// terminalWidth is w's width in columns when it is a terminal that reports one, else 0: a
// pseudo-terminal with no size (some CI runners, `script` without a size) gets lines, not a bar
// it cannot draw.
func terminalWidth(w any) int {
	f, ok := w.(*os.File)
	if !ok || !isTerminal(f) {
		return 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return width
}

// progressInterval is the engine's ProgressInterval: lines, or none while a bar shows progress.
func (d display) progressInterval() time.Duration { return d.every }

// barRefresh is how often the bar redraws from the run's snapshot.
const barRefresh = 200 * time.Millisecond

// run runs r, with the bar on stderr while it runs when the display has one: log lines are
// printed above the bar meanwhile, through the bar's container, so neither breaks the other.
func (d display) run(a *app, r *enrich.Runner, ctx context.Context) (enrich.Summary, error) {
	if !d.bar {
		return r.Run(ctx)
	}
	p := mpb.New(mpb.WithOutput(a.io.err), mpb.WithAutoRefresh(), mpb.WithRefreshRate(barRefresh), mpb.WithWidth(40))
	snap := r.Snapshot
	bar := p.New(0, mpb.BarStyle(),
		mpb.PrependDecorators(
			decor.Any(func(decor.Statistics) string { return doneOfTotal(snap()) }, decor.WCSyncSpaceR),
		),
		mpb.AppendDecorators(
			decor.Any(func(decor.Statistics) string { return rateAndETA(snap()) }, decor.WCSyncSpace),
			decor.Any(func(decor.Statistics) string { return instanceStates(snap().Instances) }, decor.WCSyncSpace),
		),
	)
	logger := a.log
	a.log = a.log.Output(zerolog.ConsoleWriter{Out: p, TimeFormat: time.TimeOnly, NoColor: !isTerminal(a.io.err)})
	stop := make(chan struct{})
	updated := make(chan struct{})
	go func() {
		defer close(updated)
		t := time.NewTicker(barRefresh)
		defer t.Stop()
		for {
			s := snap()
			if s.Due >= 0 {
				bar.SetTotal(max(s.Due, s.Finished()), false)
			}
			bar.SetCurrent(s.Finished())
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	sum, err := r.Run(ctx)
	close(stop)
	<-updated
	s := snap()
	if s.Due >= 0 && s.Finished() < s.Due {
		// Stopped short (a signal, --max-duration, --limit, a failure): the bar stays where the
		// run got to, not drawn full.
		bar.SetTotal(s.Due, false)
		bar.SetCurrent(s.Finished())
		bar.Abort(false)
	} else {
		bar.SetTotal(max(s.Finished(), 1), false)
		bar.SetCurrent(s.Finished())
		bar.SetTotal(-1, true) // complete: the bar is drawn once more and stays
	}
	p.Wait()
	a.log = logger
	return sum, err
}

// doneOfTotal is "1,234 / 10,000 rows" (total "?" until counted).
func doneOfTotal(s enrich.Snapshot) string {
	total := "?"
	if s.Due >= 0 {
		total = thousands(max(s.Due, s.Finished()))
	}
	return fmt.Sprintf("%s / %s rows", thousands(s.Finished()), total)
}

// rateAndETA is "95.3 rows/s  ETA 1m40s".
func rateAndETA(s enrich.Snapshot) string {
	out := fmt.Sprintf("%.1f rows/s", s.Summary.RowsPerSecond())
	if eta, ok := s.ETA(); ok {
		out += "  ETA " + eta.Round(time.Second).String()
	}
	return out
}

// instanceStates is each instance's state, shortest first: "1101000001 running 9.8/s", or
// "3 running, 1 paused" when there are more than three.
func instanceStates(ins []enrich.InstanceSnapshot) string {
	if len(ins) > 3 {
		n := map[string]int{}
		for _, in := range ins {
			n[in.State]++
		}
		var parts []string
		for _, st := range enrich.InstanceStates {
			if n[st] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", n[st], st))
			}
		}
		return strings.Join(parts, ", ")
	}
	parts := make([]string, len(ins))
	for i, in := range ins {
		parts[i] = in.ID + " " + in.State
		if in.State == enrich.StateRunning || in.State == enrich.StatePaused {
			parts[i] += fmt.Sprintf(" %.1f/s", in.Rate)
		}
	}
	return strings.Join(parts, "  ")
}

// thousands writes n with comma separators.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// runReport is a run's end, for the closing summary.
type runReport struct {
	Run, Table string
	Start, End time.Time
	Summary    enrich.Summary
	Err        error
	ExitCode   int
	// Signal is the signal that stopped the run ("SIGINT", "SIGTERM"), or "".
	Signal string
}

// stopped says the run ended by a signal with every answer written: a normal end (README),
// reported as "stopped" and a success, with the signal's exit code all the same.
func (rep runReport) stopped() bool {
	return rep.Signal != "" && errors.Is(rep.Err, enrich.ErrInterrupted) && !errors.Is(rep.Err, enrich.ErrUnwritten) &&
		rep.ExitCode != exitOK
}

// summaryJSON is --summary json: one object, stable snake_case keys (documented in docs/operations.md).
type summaryJSON struct {
	Run           string           `json:"run"`
	Table         string           `json:"table"`
	StartedAt     time.Time        `json:"started_at"`
	FinishedAt    time.Time        `json:"finished_at"`
	ElapsedS      float64          `json:"elapsed_seconds"`
	ExitCode      int              `json:"exit_code"`
	Success       bool             `json:"success"`
	Stop          string           `json:"stop"`
	Error         string           `json:"error,omitempty"`
	Claimed       int64            `json:"claimed"`
	Done          int64            `json:"done"`
	Failed        int64            `json:"failed"`
	Rescheduled   int64            `json:"rescheduled"`
	Released      int64            `json:"released"`
	Lost          int64            `json:"lost"`
	Unwritten     int64            `json:"unwritten"`
	InvalidLocal  int64            `json:"invalid_local"`
	RateLimited   int64            `json:"rate_limited"`
	RowsPerSecond float64          `json:"rows_per_second"`
	Calls         map[string]int64 `json:"calls"`
	// Existence counts the run's answers by where exists_whatsapp came from (avatar,
	// checkWhatsapp, getAvatar; unchecked and badPhoneNumber left it NULL; none: a group);
	// ExistsUnknown is the unchecked ones, which a later run completes.
	Existence     map[string]int64 `json:"existence"`
	ExistsUnknown int64            `json:"exists_unknown"`
}

// printSummary writes the closing summary to stdout, as the display says (log: nothing more).
func (d display) printSummary(a *app, rep runReport) error {
	s := rep.Summary
	var err error
	switch d.summary {
	case "json":
		j := summaryJSON{
			Run: rep.Run, Table: rep.Table, StartedAt: rep.Start.UTC(), FinishedAt: rep.End.UTC(),
			ElapsedS: math.Round(rep.End.Sub(rep.Start).Seconds()*1000) / 1000, ExitCode: rep.ExitCode,
			Success: rep.ExitCode == exitOK || rep.stopped(), Stop: s.Stop,
			Claimed: s.Claimed, Done: s.Done, Failed: s.Failed, Rescheduled: s.Rescheduled, Released: s.Released,
			Lost: s.Lost, Unwritten: s.Unwritten, InvalidLocal: s.InvalidLocal, RateLimited: s.RateLimited,
			RowsPerSecond: math.Round(s.RowsPerSecond()*10) / 10, Calls: s.Calls,
			Existence: s.Existence, ExistsUnknown: s.ExistsUnknown,
		}
		if j.Existence == nil {
			j.Existence = map[string]int64{}
		}
		if rep.Err != nil && !rep.stopped() {
			j.Error = rep.Err.Error()
		}
		if j.Calls == nil {
			j.Calls = map[string]int64{}
		}
		err = json.NewEncoder(a.io.out).Encode(j)
	case "text":
		err = writeSummaryText(a.io.out, rep)
	}
	if err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

// writeSummaryText is the summary for people.
func writeSummaryText(w io.Writer, rep runReport) error {
	s := rep.Summary
	outcome := "finished"
	switch {
	case rep.stopped():
		outcome = fmt.Sprintf("stopped by %s (exit %d)", rep.Signal, rep.ExitCode)
	case rep.ExitCode != exitOK:
		outcome = fmt.Sprintf("failed (exit %d)", rep.ExitCode)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "run %s on %s: %s after %s, %s\n", rep.Run, rep.Table, outcome,
		rep.End.Sub(rep.Start).Round(time.Millisecond), s.Stop)
	fmt.Fprintf(&b, "  done         %12s\n", thousands(s.Done))
	fmt.Fprintf(&b, "  failed       %12s\n", thousands(s.Failed))
	fmt.Fprintf(&b, "  rescheduled  %12s  (times: a row put off again counts again; status counts rows)\n", thousands(s.Rescheduled))
	fmt.Fprintf(&b, "  released     %12s\n", thousands(s.Released))
	if s.Lost > 0 {
		fmt.Fprintf(&b, "  lost         %12s  (another run's claim took them over)\n", thousands(s.Lost))
	}
	if s.Unwritten > 0 {
		fmt.Fprintf(&b, "  unwritten    %12s  (asked again when their lease expires)\n", thousands(s.Unwritten))
	}
	fmt.Fprintf(&b, "  429s         %12s\n", thousands(s.RateLimited))
	fmt.Fprintf(&b, "  rows/s       %12.1f\n", s.RowsPerSecond())
	keys := make([]string, 0, len(s.Calls))
	for k := range s.Calls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  calls: %-30s %s\n", k, thousands(s.Calls[k]))
	}
	fmt.Fprintf(&b, "  exists unknown %10s  (unchecked: a later run with greenapi.confirm_missing completes them)\n", thousands(s.ExistsUnknown))
	for _, k := range sortedKeys(s.Existence) {
		fmt.Fprintf(&b, "  existence: %-26s %s\n", k, thousands(s.Existence[k]))
	}
	if rep.Err != nil && !rep.stopped() {
		fmt.Fprintf(&b, "  error: %v\n", rep.Err)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

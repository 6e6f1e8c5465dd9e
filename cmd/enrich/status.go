package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/enrich-dev/enrich/store"
)

func cmdStatus(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "status", "status [flags]")
	tableFlag(f)
	explain := f.Bool("explain", false, "also print PostgreSQL's plan for the claim query (it should use the due index)")
	pool, st, _, err := openStore(ctx, f, args, false)
	if err != nil {
		return err
	}
	defer pool.Close()
	return printStatus(ctx, a.io.out, st, *explain)
}

// printStatus writes the status report people read after a run.
func printStatus(ctx context.Context, w io.Writer, st *store.Store, explain bool) error {
	rep, err := st.Status(ctx)
	if err != nil {
		return dbErr("status", err)
	}
	fmt.Fprintf(w, "table %s\n", st.Table())
	for _, s := range sortedKeys(rep.ByStatus) {
		fmt.Fprintf(w, "  %-10s %d\n", s, rep.ByStatus[s])
	}
	fmt.Fprintf(w, "due now      %d\n", rep.Due)
	fmt.Fprintf(w, "leased       %d\n", rep.Leased)
	fmt.Fprintf(w, "scheduled    %d\n", rep.Scheduled)
	if rep.OldestDue != nil {
		fmt.Fprintf(w, "oldest due   %s (%s ago)\n", rep.OldestDue.Format(time.RFC3339),
			time.Since(*rep.OldestDue).Round(time.Second))
	} else {
		fmt.Fprintf(w, "oldest due   -\n")
	}
	if len(rep.Reasons) > 0 {
		fmt.Fprintf(w, "reasons\n")
		for _, r := range rep.Reasons {
			fmt.Fprintf(w, "  %-8s %8d  %s\n", r.Status, r.Count, r.Reason)
		}
	}
	if explain {
		plan, err := st.ExplainClaim(ctx, store.ChunkSize)
		if err != nil {
			return dbErr("explain", err)
		}
		fmt.Fprintf(w, "claim plan\n%s", indent(plan, "  "))
	}
	return nil
}

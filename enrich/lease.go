package enrich

import (
	"context"
	"time"
)

// renewLoop renews the lease of every row the run holds, every third of a lease, until done is
// closed: rows wait in memory, in calls and in the writer for as long as they need, and still no
// other run takes them.
func (r *Runner) renewLoop(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.Lease / 3)
	defer t.Stop()
	var failing dbRetry
	for {
		select {
		case <-done:
			return
		case <-t.C:
			r.renew(&failing)
		}
	}
}

// renew renews the held rows' leases once. A row the database no longer has under its claim is
// lost: if it waits in the queue it is dropped, never called; if it is out (in a call, a
// backoff, held back as a suspect), whoever hands it back drops it (rows.giveBack), and an answer
// already received is fenced off by the store. A failed renewal changes nothing: rows whose lease
// runs short are simply not started (rows.callable) until a renewal succeeds. Renewals that fail
// for RetryFor (or with an error no retry mends) stop the run with ErrDatabase, as claims and
// writes do: when every row in hand waits for a renewal, nothing else meets the database, and
// the run waited for the stall watchdog.
func (r *Runner) renew(failing *dbRetry) {
	if r.dbCtx.Err() != nil {
		return
	}
	// A renewal and a write of the same rows in two transactions at once could deadlock each
	// other (each locks rows in its own order): they take turns.
	r.w.flushing.Lock()
	leases := r.rows.leases()
	if len(leases) == 0 {
		r.w.flushing.Unlock()
		return
	}
	sent := r.cfg.Now()
	ctx, cancel := context.WithTimeout(r.dbCtx, min(r.cfg.DatabaseTimeout, r.cfg.Lease/3))
	ids, err := r.store.Renew(ctx, r.cfg.Owner, leases, r.cfg.Lease)
	cancel()
	r.w.flushing.Unlock()
	if err != nil {
		if _, first, stop := r.databaseFailed(failing, err); stop == nil && first {
			r.log.Warn().Err(err).Int("rows", len(leases)).Str("retry_for", r.cfg.RetryFor.String()).
				Msg("renewing the leases of rows in hand failed; retrying, and no call starts on a row whose lease runs short")
		}
		return
	}
	if down := failing.ok(r.cfg.Now()); down > 0 {
		r.log.Info().Str("after", down.Round(time.Millisecond).String()).Msg("the database is back: leases renewed")
	}
	renewed := make(map[int64]bool, len(ids))
	for _, id := range ids {
		renewed[id] = true
	}
	if lost, dropped := r.rows.renewed(leases, renewed, sent); lost > 0 {
		r.log.Warn().Int("rows", lost).Int("dropped", dropped).
			Msg("rows in hand are no longer this run's (their lease lapsed and another claim took them): " +
				"those not yet called are dropped")
	}
}

package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgconn"
)

// runRecordTimeout bounds each write to the runs table: the record is for people reading
// status, and never worth holding a run (or its exit after SIGTERM) for long.
const runRecordTimeout = 5 * time.Second

// Outcomes a run records in the runs table.
const (
	outcomeFinished    = "finished"
	outcomeDailyCap    = "daily cap"
	outcomeInterrupted = "interrupted"
	outcomeFailed      = "failed"
)

// recordRun records a run in the runs table, for `enrich status`: its start now, a heartbeat
// every store.RunHeartbeat (10 s) with the counts progress gives so far (nil: no counts) until
// finish is called, and its end when it is. earlier is how many runs of the table started before
// it and still run (store.EarlierRuns; 0 when that cannot be told). Every write is on a
// context a SIGTERM does not cut, bounded by runRecordTimeout. The record never changes the
// run: a database error is logged as a warning (status will then not show the run, or show it
// as lost) and the run goes on. finish stops the heartbeat and records the end once; calling it
// again does nothing.
func (a *app) recordRun(ctx context.Context, st *store.Store, owner string, progress func() enrich.Summary) (finish func(sum enrich.Summary, err error, exitCode int), earlier int) {
	return a.recordRunEvery(ctx, st, owner, progress, store.RunHeartbeat, nil)
}

// recordRunEvery is recordRun with the heartbeat's interval, and beat (when not nil) called
// after each heartbeat with its error, so tests can wait for one.
func (a *app) recordRunEvery(ctx context.Context, st *store.Store, owner string, progress func() enrich.Summary,
	every time.Duration, beat func(error)) (finish func(sum enrich.Summary, err error, exitCode int), earlier int) {
	bg := context.WithoutCancel(ctx)
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	sctx, cancel := context.WithTimeout(bg, runRecordTimeout)
	id, err := st.StartRun(sctx, store.RunStart{Owner: owner, Host: host, Version: buildVersion().Short()})
	if err != nil {
		cancel()
		a.log.Warn().Err(err).Str("run", owner).Msg("could not record the run's start in the runs table " +
			"(enrich_runs; `enrich migrate` creates it): status will not list this run")
		return func(enrich.Summary, error, int) {}, 0
	}
	earlier, err = st.EarlierRuns(sctx, id)
	cancel()
	if err != nil {
		a.log.Warn().Err(err).Str("run", owner).Msg("could not tell from the runs table whether another run of the table " +
			"started first: this run takes the instances it finds free as it starts")
	}

	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			hctx, cancel := context.WithTimeout(bg, runRecordTimeout)
			var err error
			if progress != nil {
				err = st.ProgressRun(hctx, id, runCounts(progress()))
			} else {
				err = st.HeartbeatRun(hctx, id)
			}
			cancel()
			if err != nil && !failing {
				a.log.Warn().Err(err).Str("run", owner).Msg("could not record the run's heartbeat in the runs table: " +
					"status shows the run as lost until one succeeds")
			}
			failing = err != nil
			if beat != nil {
				beat(err)
			}
		}
	}()

	var once sync.Once
	finish = func(sum enrich.Summary, runErr error, exitCode int) {
		once.Do(func() {
			close(stop)
			<-stopped
			end := store.RunEnd{
				Outcome: runOutcome(sum, runErr), Stop: sum.Stop, ExitCode: exitCode, Counts: runCounts(sum),
			}
			if runErr != nil {
				end.Error = a.redact(runErr.Error())
			}
			fctx, cancel := context.WithTimeout(bg, runRecordTimeout)
			defer cancel()
			if err := st.FinishRun(fctx, id, end); err != nil {
				a.log.Warn().Err(err).Str("run", owner).Msg("could not record the run's end in the runs table: " +
					"status shows the run as lost")
			}
		})
	}
	return finish, earlier
}

// runOutcome is how a run ended, in the words of the runs table.
func runOutcome(sum enrich.Summary, err error) string {
	switch {
	case err == nil && sum.Stop == "daily cap reached":
		return outcomeDailyCap
	case err == nil:
		return outcomeFinished
	case errors.Is(err, enrich.ErrInterrupted), errors.Is(err, context.Canceled):
		return outcomeInterrupted
	}
	return outcomeFailed
}

// runCounts is what the runs table records of a run's summary, so far or at its end.
func runCounts(sum enrich.Summary) store.RunCounts {
	return store.RunCounts{Done: sum.Done, Failed: sum.Failed, Rescheduled: sum.Rescheduled,
		Released: sum.Released, Claimed: sum.Claimed, RateLimited: sum.RateLimited, Calls: totalCalls(sum)}
}

// totalCalls is every API call of the run, of any method and outcome.
func totalCalls(sum enrich.Summary) int64 {
	var n int64
	for _, c := range sum.Calls {
		n += c
	}
	return n
}

// redact removes the configuration's secrets (every instance's token, the database password)
// from s, in case an error quoted one: the runs table is read by anyone who can run status.
func (a *app) redact(s string) string {
	secrets := make([]string, 0, len(a.cfg.GreenAPI.Instances)+1)
	for _, in := range a.cfg.GreenAPI.Instances {
		secrets = append(secrets, in.Token)
	}
	if pc, err := pgconn.ParseConfig(a.cfg.Database.URL); err == nil {
		secrets = append(secrets, pc.Password)
	}
	for _, sec := range secrets {
		if len(sec) >= 4 { // shorter would blank out common words, and is no secret anyway
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

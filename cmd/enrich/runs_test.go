package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/rs/zerolog"
)

func recordApp(dbURL string) (*app, *output) {
	logs := &output{} // the heartbeat goroutine and the test use it at once
	cfg := defaultConfig()
	cfg.Database.URL = dbURL
	rps := RPSDefault
	cfg.GreenAPI.Instances = []InstanceConfig{{ID: "1101000001", Token: "tok-secret-0001", RPS: &rps}}
	return &app{log: zerolog.New(logs), cfg: cfg}, logs
}

// TestRunRecord calls recordRun as cmdRun does, against a test database: the start, the
// heartbeat, the end with each outcome, secrets kept out of the table, and a database that
// fails the record without failing the run.
func TestRunRecord(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	st, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	a, logs := recordApp(dbURL)
	ctx := context.Background()
	host, _ := os.Hostname()
	last := func(t *testing.T) store.Run {
		t.Helper()
		runs, err := st.LastRuns(ctx, 1)
		if err != nil || len(runs) != 1 {
			t.Fatalf("LastRuns = %v, %v", runs, err)
		}
		return runs[0]
	}

	t.Run("outcomes", func(t *testing.T) {
		sum := enrich.Summary{Claimed: 19, Done: 10, Failed: 2, Rescheduled: 3, Released: 4, RateLimited: 5,
			Calls: map[string]int64{"getAvatar ok": 12, "getAvatar rate_limited": 5, "getStateInstance ok": 4}}
		counts := store.RunCounts{Done: 10, Failed: 2, Rescheduled: 3, Released: 4, Claimed: 19, RateLimited: 5, Calls: 21}
		for _, tc := range []struct {
			stop     string
			err      error
			code     int
			state    string
			errorCol string
		}{
			{"no due rows left", nil, 0, "finished", ""},
			{"max_duration reached", nil, 0, "finished", ""},
			{"daily cap reached", nil, 0, "daily cap", ""},
			{"interrupted", enrich.ErrInterrupted, 143, "interrupted", "run interrupted"},
			{"", context.Canceled, 130, "interrupted", "context canceled"},
			{"database failure", fmt.Errorf("write batch: %w: connection refused", enrich.ErrDatabase), 3, "failed",
				"write batch: database: connection refused"},
			{"no usable instance", fmt.Errorf("%w: instance 1101000001: token tok-secret-0001 refused", enrich.ErrNoInstance), 2,
				"failed", "no usable Green API instance left: instance 1101000001: token [redacted] refused"},
		} {
			owner := "host:1:" + strings.ReplaceAll(tc.state, " ", "")
			finish, _ := a.recordRun(ctx, st, owner, nil)
			r := last(t)
			if r.Owner != owner || r.Host != host || r.Version != buildVersion().Short() || r.State != store.RunRunning ||
				r.FinishedAt != nil {
				t.Errorf("%s: started run %+v", tc.stop, r)
			}
			s := sum
			s.Stop = tc.stop
			finish(s, tc.err, tc.code)
			finish(enrich.Summary{Stop: "again"}, errors.New("again"), 99) // once only
			r = last(t)
			if r.State != tc.state || r.Stop != tc.stop || r.ExitCode == nil || *r.ExitCode != tc.code || r.Counts != counts ||
				r.Error != tc.errorCol || r.FinishedAt == nil {
				t.Errorf("%s: finished run %+v (exit %v), want state %q, exit %d, error %q", tc.stop, r, r.ExitCode, tc.state,
					tc.code, tc.errorCol)
			}
		}
	})

	t.Run("heartbeat", func(t *testing.T) {
		beats := make(chan error, 1)
		finish, _ := a.recordRunEvery(ctx, st, "host:1:beat", nil, 10*time.Millisecond, func(err error) {
			select {
			case beats <- err:
			default:
			}
		})
		started := last(t)
		for range 2 {
			if err := <-beats; err != nil {
				t.Fatalf("heartbeat: %v", err)
			}
		}
		if r := last(t); !r.SeenAt.After(started.SeenAt) || r.State != store.RunRunning {
			t.Errorf("after heartbeats: seen at %v (started %v), state %s", r.SeenAt, started.SeenAt, r.State)
		}
		finish(enrich.Summary{Stop: "no due rows left"}, nil, 0)
		// No heartbeat after finish: beat is called only by the goroutine finish has stopped.
		select {
		case err := <-beats:
			if r := last(t); r.State != "finished" {
				t.Errorf("state %s after finish (late beat %v)", r.State, err)
			}
		default:
		}
	})

	// A running run's row shows what it did so far, from its heartbeats: a run stuck at 1,499
	// of 1,500 does not look like one that just started, and a killed run keeps the counts of
	// its last heartbeat.
	t.Run("counts while running", func(t *testing.T) {
		beats := make(chan error, 1)
		progress := func() enrich.Summary {
			return enrich.Summary{Claimed: 1500, Done: 1499, Failed: 1, Calls: map[string]int64{"getAvatar ok": 1499, "getAvatar bad_request": 1}}
		}
		finish, _ := a.recordRunEvery(ctx, st, "host:1:live", progress, 10*time.Millisecond, func(err error) {
			select {
			case beats <- err:
			default:
			}
		})
		if r := last(t); r.Counts != (store.RunCounts{}) {
			t.Errorf("a run that just started shows counts %+v", r.Counts)
		}
		if err := <-beats; err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		r := last(t)
		t.Logf("running: state %s, counts %+v", r.State, r.Counts)
		want := store.RunCounts{Done: 1499, Failed: 1, Claimed: 1500, Calls: 1500}
		if r.State != store.RunRunning || r.FinishedAt != nil || r.Counts != want {
			t.Errorf("a running run's row: state %s, counts %+v; want running with %+v", r.State, r.Counts, want)
		}
		finish(enrich.Summary{Stop: "no due rows left", Claimed: 1500, Done: 1500, Calls: map[string]int64{"getAvatar ok": 1500}}, nil, 0)
		if r := last(t); r.State != "finished" || r.Counts.Done != 1500 {
			t.Errorf("finished: %+v", r)
		}
	})

	t.Run("a signal does not cut the record", func(t *testing.T) {
		sctx, cancel := context.WithCancel(ctx)
		finish, _ := a.recordRun(sctx, st, "host:1:sigterm", nil)
		cancel() // SIGTERM: the run winds down and then records its end
		finish(enrich.Summary{Stop: "interrupted"}, enrich.ErrInterrupted, 143)
		if r := last(t); r.Owner != "host:1:sigterm" || r.State != "interrupted" {
			t.Errorf("run ended after a signal: %+v", r)
		}
	})

	t.Run("database down", func(t *testing.T) {
		down := pgtest.Connect(t, dbURL)
		dst, err := store.New(down, store.Config{})
		if err != nil {
			t.Fatal(err)
		}
		finish, _ := a.recordRun(ctx, dst, "host:1:dbdown", nil)
		down.Close() // the end cannot be written
		finish(enrich.Summary{Stop: "no due rows left"}, nil, 0)
		if r := last(t); r.Owner != "host:1:dbdown" || r.State != store.RunRunning {
			t.Errorf("run whose end could not be written: %+v", r)
		}
		if !strings.Contains(logs.String(), `"level":"warn"`) || !strings.Contains(logs.String(), "could not record the run's end") {
			t.Errorf("no warning for the end not recorded:\n%s", logs.String())
		}
		// And a start that cannot be written: a warning, and a finish that does nothing.
		finish, _ = a.recordRun(ctx, dst, "host:1:nostart", nil)
		finish(enrich.Summary{}, nil, 0)
		if !strings.Contains(logs.String(), "could not record the run's start") {
			t.Errorf("no warning for the start not recorded:\n%s", logs.String())
		}
	})

	if strings.Contains(logs.String(), "tok-secret-0001") {
		t.Errorf("the token reached the log:\n%s", logs.String())
	}
	var leaked int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM enrich_runs WHERE error LIKE '%tok-secret-0001%'").Scan(&leaked); err != nil || leaked != 0 {
		t.Errorf("%d runs carry the token in error (%v)", leaked, err)
	}
}

package store_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/store"
)

// TestRunsRecord follows runs through the runs table: a run that heartbeats is running, one
// that stops heartbeating is lost, a finished one shows its outcome and counts, and a finished
// run cannot be finished again.
func TestRunsRecord(t *testing.T) {
	t.Parallel()
	b := setup(t)

	if runs, err := b.store.LastRuns(b.ctx, 5); err != nil || len(runs) != 0 {
		t.Fatalf("LastRuns on a new table = %v, %v; want none", runs, err)
	}
	start := b.clock.Now()
	lost, err := b.store.StartRun(b.ctx, store.RunStart{Owner: "host-a:1:aa", Host: "host-a", Version: "v1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	live, err := b.store.StartRun(b.ctx, store.RunStart{Owner: "host-b:2:bb", Host: "host-b", Version: "v1.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	done, err := b.store.StartRun(b.ctx, store.RunStart{Owner: "host-c:3:cc", Host: "host-c", Version: "v1.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	if !(lost < live && live < done) {
		t.Fatalf("run ids %d, %d, %d: want increasing in start order", lost, live, done)
	}

	// Past the lost limit, with heartbeats from two of them on the way.
	b.clock.Advance(store.RunLostAfter / 2)
	for _, id := range []store.RunID{live, done} {
		if err := b.store.HeartbeatRun(b.ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	b.clock.Advance(store.RunLostAfter/2 + time.Second)
	beat := b.clock.Now()
	if err := b.store.HeartbeatRun(b.ctx, live); err != nil {
		t.Fatal(err)
	}
	end := store.RunEnd{Outcome: "finished", Stop: "no due rows left", ExitCode: 0, Error: "",
		Counts: store.RunCounts{Done: 10, Failed: 2, Rescheduled: 3, Released: 4, Claimed: 19, RateLimited: 5, Calls: 21}}
	if err := b.store.FinishRun(b.ctx, done, end); err != nil {
		t.Fatal(err)
	}
	// Only the first end counts, and a heartbeat after it changes nothing.
	if err := b.store.FinishRun(b.ctx, done, store.RunEnd{Outcome: "failed", ExitCode: 3, Error: "late"}); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(time.Second)
	if err := b.store.HeartbeatRun(b.ctx, done); err != nil {
		t.Fatal(err)
	}
	if err := b.store.FinishRun(b.ctx, done, store.RunEnd{}); err == nil {
		t.Error("FinishRun with no outcome: no error")
	}

	runs, err := b.store.LastRuns(b.ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 {
		t.Fatalf("LastRuns = %d runs, want 3: %+v", len(runs), runs)
	}
	got := map[store.RunID]store.Run{}
	for i, r := range runs {
		got[r.ID] = r
		if i > 0 && r.ID > runs[i-1].ID {
			t.Errorf("runs not newest first: %d after %d", r.ID, runs[i-1].ID)
		}
		if !r.StartedAt.Equal(start) {
			t.Errorf("run %d started at %v, want %v", r.ID, r.StartedAt, start)
		}
	}
	if r := got[lost]; r.State != store.RunLost || r.FinishedAt != nil || r.Owner != "host-a:1:aa" || r.Host != "host-a" ||
		r.Version != "v1.0.0" || !r.SeenAt.Equal(start) || r.ExitCode != nil {
		t.Errorf("lost run: %+v", r)
	}
	if r := got[live]; r.State != store.RunRunning || r.FinishedAt != nil || !r.SeenAt.Equal(beat) {
		t.Errorf("live run: %+v, want running, seen at %v", r, beat)
	}
	r := got[done]
	if r.State != "finished" || r.FinishedAt == nil || !r.FinishedAt.Equal(beat) || r.Stop != end.Stop ||
		r.ExitCode == nil || *r.ExitCode != 0 || r.Counts != end.Counts || r.Error != "" || !r.SeenAt.Equal(beat) {
		t.Errorf("finished run: %+v (finished %v), want %+v at %v", r, r.FinishedAt, end, beat)
	}
	if runs, err := b.store.LastRuns(b.ctx, 1); err != nil || len(runs) != 1 || runs[0].ID != done {
		t.Errorf("LastRuns(1) = %+v, %v; want the newest only", runs, err)
	}
	if runs, err := b.store.LastRuns(b.ctx, 0); err != nil || len(runs) != 0 {
		t.Errorf("LastRuns(0) = %+v, %v; want none", runs, err)
	}

	// Another contacts table of the schema has runs of its own.
	other, err := store.New(b.pool, store.Config{Table: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if runs, err := other.LastRuns(b.ctx, 5); err != nil || len(runs) != 0 {
		t.Errorf("LastRuns of another table = %+v, %v; want none", runs, err)
	}
}

// TestRunsRecordKeepsTheLast checks FinishRun's trim: all but the last RunsKept runs of the table
// go, and other tables' runs stay.
func TestRunsRecordKeepsTheLast(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const extra = 7
	b.exec(t, `INSERT INTO enrich_runs (table_name, owner, host, version, started_at, seen_at)
		SELECT $1, 'old:' || i, 'h', 'v', now(), now() FROM generate_series(1, $2::int) AS i`, "contacts", store.RunsKept+extra)
	b.exec(t, `INSERT INTO enrich_runs (table_name, owner, host, version, started_at, seen_at)
		SELECT 'elsewhere', 'old:' || i, 'h', 'v', now(), now() FROM generate_series(1, 3) AS i`)
	id, err := b.store.StartRun(b.ctx, store.RunStart{Owner: "new:1:ab", Host: "h", Version: "v"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.store.FinishRun(b.ctx, id, store.RunEnd{Outcome: "finished"}); err != nil {
		t.Fatal(err)
	}
	var mine, others int64
	var oldest string
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FILTER (WHERE table_name = 'contacts'),
		count(*) FILTER (WHERE table_name <> 'contacts'),
		(SELECT owner FROM enrich_runs WHERE table_name = 'contacts' ORDER BY id LIMIT 1) FROM enrich_runs`).Scan(&mine, &others, &oldest); err != nil {
		t.Fatal(err)
	}
	if mine != store.RunsKept || others != 3 {
		t.Errorf("after FinishRun: %d runs of the table, %d of others; want %d and 3", mine, others, store.RunsKept)
	}
	// The new run and the newest RunsKept-1 old ones stay: the first extra+1 old ones went.
	if want := "old:" + strconv.Itoa(extra+2); oldest != want {
		t.Errorf("oldest run kept %q, want %q", oldest, want)
	}
	runs, err := b.store.LastRuns(b.ctx, store.RunsMax+10)
	if err != nil || len(runs) != store.RunsMax || runs[0].ID != id {
		t.Errorf("LastRuns(more than RunsMax) = %d runs, %v; want %d, the new one first", len(runs), err, store.RunsMax)
	}
}

// TestProgressRun: a running run's heartbeat records its counts so far, and moves seen_at; a
// finished run's row keeps the counts of its end.
func TestProgressRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, err := b.store.StartRun(b.ctx, store.RunStart{Owner: "host:1:live", Host: "host", Version: "v"})
	if err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(store.RunHeartbeat)
	so := store.RunCounts{Done: 1499, Failed: 1, Claimed: 1500, Calls: 1502, RateLimited: 2}
	if err := b.store.ProgressRun(b.ctx, id, so); err != nil {
		t.Fatal(err)
	}
	runs, err := b.store.LastRuns(b.ctx, 1)
	if err != nil || len(runs) != 1 || runs[0].Counts != so || runs[0].State != store.RunRunning || !runs[0].SeenAt.Equal(b.clock.Now()) {
		t.Fatalf("after a heartbeat with counts: %+v, %v; want running, seen now, with %+v", runs, err, so)
	}
	end := store.RunCounts{Done: 1500, Failed: 1, Claimed: 1501, Calls: 1503, RateLimited: 2}
	if err := b.store.FinishRun(b.ctx, id, store.RunEnd{Outcome: "finished", Counts: end}); err != nil {
		t.Fatal(err)
	}
	if err := b.store.ProgressRun(b.ctx, id, so); err != nil {
		t.Fatal(err)
	}
	if runs, err := b.store.LastRuns(b.ctx, 1); err != nil || runs[0].Counts != end {
		t.Fatalf("a late heartbeat after the end: %+v, %v; want the end's counts %+v", runs, err, end)
	}
}

// TestEarlierRuns counts the runs of the table that started before a run and still run: not one
// that finished, nor one lost (no heartbeat for RunLostAfter), nor a later one, nor another
// table's.
func TestEarlierRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	start := func(st *store.Store, owner string) store.RunID {
		t.Helper()
		id, err := st.StartRun(b.ctx, store.RunStart{Owner: owner, Host: "h", Version: "v"})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	other, err := store.New(b.pool, store.Config{Table: "other"})
	if err != nil {
		t.Fatal(err)
	}
	lost := start(b.store, "h:1:lost")
	b.clock.Advance(time.Second)
	live, done := start(b.store, "h:2:live"), start(b.store, "h:3:done")
	start(other, "h:4:other")
	b.clock.Advance(store.RunLostAfter - time.Second)
	if err := b.store.HeartbeatRun(b.ctx, live); err != nil {
		t.Fatal(err)
	}
	if err := b.store.FinishRun(b.ctx, done, store.RunEnd{Outcome: "finished"}); err != nil {
		t.Fatal(err)
	}
	// lost's heartbeat is RunLostAfter old: it no longer counts; live's is fresh.
	b.clock.Advance(time.Second)
	me := start(b.store, "h:5:me")
	later := start(b.store, "h:6:later")
	for _, tc := range []struct {
		name string
		id   store.RunID
		want int
	}{
		{"the first run", lost, 0},
		{"beside the live one", live, 0},
		{"after the live one", me, 1},
		{"after the live one and me", later, 2},
	} {
		if n, err := b.store.EarlierRuns(b.ctx, tc.id); err != nil || n != tc.want {
			t.Errorf("%s: EarlierRuns = %d, %v; want %d", tc.name, n, err, tc.want)
		}
	}
}

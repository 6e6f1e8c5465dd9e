package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	// claimBatch is the batch one timed claim takes: run.batch_size's default.
	claimBatch = 200
	// claimTimed is how many claims a median is taken of.
	claimTimed = 20
	claimLease = 10 * time.Minute
)

// claimer claims and completes batches through the store as a run's claimer does, timing each
// claim: store.ClaimAfter from the cursor past its last full batch (the zero cursor, the start of
// the due order, after a short one).
type claimer struct {
	st     *store.Store
	owner  string
	token  int64
	cursor store.Cursor
}

// once claims a batch (timed) and completes it (not timed), so the table moves on as under a
// run: the claimed rows leave the due prefix and then the index. fromStart claims from the
// start of the due order, as a run that has just begun does, and leaves the cursor alone.
func (c *claimer) once(ctx context.Context, fromStart ...bool) (time.Duration, error) {
	c.token++
	after := c.cursor
	if len(fromStart) > 0 && fromStart[0] {
		after = store.Cursor{}
	}
	t0 := time.Now()
	got, err := c.st.ClaimAfter(ctx, c.owner, c.token, claimBatch, claimLease, after)
	took := time.Since(t0)
	if err != nil {
		return 0, err
	}
	if len(got) != claimBatch {
		return 0, fmt.Errorf("claim took %d rows, want %d", len(got), claimBatch)
	}
	if after == c.cursor {
		c.cursor = c.cursor.After(got)
	}
	done := make([]store.Done, len(got))
	for i, r := range got {
		done[i] = store.Done{Lease: r.Lease}
	}
	if _, err := c.st.Complete(ctx, c.owner, done); err != nil {
		return 0, err
	}
	return took, nil
}

// timed is the claim times of n claims.
func (c *claimer) timed(ctx context.Context, n int, fromStart ...bool) ([]time.Duration, error) {
	var ds []time.Duration
	for range n {
		d, err := c.once(ctx, fromStart...)
		if err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// tableState is what a claim walks through: dead tuples and the due index's size.
type tableState struct {
	DeadTuples  int64 `json:"n_dead_tup"`
	DueIndexKiB int64 `json:"due_index_kib"`
	// Checkpoints (timed and requested, server-wide) and the WAL position, to tell a
	// checkpoint's full-page writes from the walk.
	Checkpoints  int64   `json:"checkpoints"`
	WALBytes     int64   `json:"wal_lsn_bytes"`
	ProbeBuffers int64   `json:"probe_shared_buffers"`
	ProbeMS      float64 `json:"probe_ms"`
	Probe        string  `json:"probe_plan,omitempty"`
}

// probeSQL is the SELECT of a claim from the start of the due order (store's sqlClaim CTE):
// run under EXPLAIN (ANALYZE, BUFFERS) in a transaction that is rolled back, it shows how many
// buffers such a claim's walk of the due index touches, dead entries included.
const probeSQL = `EXPLAIN (ANALYZE, BUFFERS)
SELECT id FROM contacts
WHERE status = 'pending'
  AND next_attempt_at <= now()
  AND (locked_until IS NULL OR locked_until <= now())
ORDER BY next_attempt_at, id
LIMIT 200
FOR UPDATE SKIP LOCKED`

var (
	buffersRe = regexp.MustCompile(`Buffers: shared hit=(\d+)(?: read=(\d+))?`)
	execRe    = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)
)

func readState(ctx context.Context, pool *pgxpool.Pool, withPlan bool) (tableState, error) {
	var s tableState
	err := pool.QueryRow(ctx, `
		SELECT coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'contacts'::regclass), 0),
		       coalesce((SELECT sum(pg_relation_size(indexrelid)) / 1024 FROM pg_index
		                 WHERE indrelid = 'contacts'::regclass AND pg_get_indexdef(indexrelid) LIKE '%(next_attempt_at, id)%'), 0)::bigint`).
		Scan(&s.DeadTuples, &s.DueIndexKiB)
	if err != nil {
		return s, err
	}
	if err := pool.QueryRow(ctx, `SELECT checkpoints_timed + checkpoints_req, pg_current_wal_lsn() - '0/0' FROM pg_stat_bgwriter`).
		Scan(&s.Checkpoints, &s.WALBytes); err != nil {
		return s, err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return s, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	rows, err := tx.Query(ctx, probeSQL)
	if err != nil {
		return s, err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return s, err
	}
	plan := strings.Join(lines, "\n")
	if m := buffersRe.FindStringSubmatch(plan); m != nil {
		hit, _ := strconv.ParseInt(m[1], 10, 64)
		read, _ := strconv.ParseInt(m[2], 10, 64)
		s.ProbeBuffers = hit + read
	}
	if m := execRe.FindStringSubmatch(plan); m != nil {
		s.ProbeMS, _ = strconv.ParseFloat(m[1], 64)
	}
	if withPlan {
		s.Probe = plan
	}
	return s, nil
}

// claimSize is what claimCost measured on one table.
type claimSize struct {
	Rows    int        `json:"rows"`
	LoadS   float64    `json:"load_s"`
	ClaimMS []float64  `json:"claim_ms"`
	Median  float64    `json:"median_ms"`
	State   tableState `json:"state"`
}

// snapshotRun is the claim loop under a REPEATABLE READ snapshot held open.
type snapshotRun struct {
	Rows    int     `json:"rows"`
	HoldS   float64 `json:"hold_s"`
	Claims  int     `json:"claims"`
	StartMS float64 `json:"start_median_ms"`
	EndMS   float64 `json:"end_median_ms"`
	// StartN and EndN are how many claims those medians are of.
	StartN int `json:"start_claims"`
	EndN   int `json:"end_claims"`
	// FromStartMS is claims from the start of the due order at the end of the hold, as a run
	// that begins then makes: they walk every dead entry the held snapshot keeps.
	FromStartMS float64    `json:"end_from_start_median_ms"`
	AfterMS     float64    `json:"after_release_median_ms"`
	Start       tableState `json:"start"`
	End         tableState `json:"end"`
	After       tableState `json:"after_release"`
	EverySecMS  []float64  `json:"median_ms_each_second"`
}

// claimCost: one claim of a batch at a small and a large table (all rows due), and on the large
// one while a REPEATABLE READ transaction holds its snapshot for a minute.
func (e *env) claimCost(ctx context.Context, d *details) ([]Figure, error) {
	sizes := []int{100_000, 10_000_000}
	hold := time.Minute
	if e.quick {
		sizes, hold = []int{10_000, 500_000}, 5*time.Second
	}
	// Both tables are loaded first and claimed from in turn, so that a noisy neighbour slows
	// both sizes alike and their ratio stays honest.
	res := make([]claimSize, len(sizes))
	claimers := make([]*claimer, len(sizes))
	pools := make([]*pgxpool.Pool, len(sizes))
	tables := make([]table, len(sizes))
	defer func() {
		for i := range sizes {
			if pools[i] != nil {
				pools[i].Close()
			}
			if tables[i].name != "" {
				_ = e.dropDB(tables[i].name)
			}
		}
	}()
	for i, rows := range sizes {
		fmt.Fprintf(e.log, "   %s rows: loading\n", thousands(rows))
		t0 := time.Now()
		t, err := e.loadTable(ctx, "claim", rows)
		tables[i] = t
		if err != nil {
			return nil, err
		}
		res[i] = claimSize{Rows: rows, LoadS: time.Since(t0).Seconds()}
		cfg, err := store.NewPoolConfig(t.url, store.PoolOptions{})
		if err != nil {
			return nil, err
		}
		if pools[i], err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
			return nil, err
		}
		st, err := store.New(pools[i], store.Config{})
		if err != nil {
			return nil, err
		}
		claimers[i] = &claimer{st: st, owner: "bench-claim"}
		if _, err := claimers[i].timed(ctx, 3); err != nil { // warm the connection and the cache
			return nil, err
		}
	}
	times := make([][]time.Duration, len(sizes))
	for range claimTimed {
		for i, c := range claimers {
			d, err := c.once(ctx)
			if err != nil {
				return nil, err
			}
			times[i] = append(times[i], d)
		}
	}
	for i := range sizes {
		cs := &res[i]
		for _, x := range times[i] {
			cs.ClaimMS = append(cs.ClaimMS, round(ms(x)))
		}
		cs.Median = ms(medianDur(times[i]))
		var err error
		if cs.State, err = readState(ctx, pools[i], true); err != nil {
			return nil, err
		}
		fmt.Fprintf(e.log, "   %s rows: claim %.2f ms (median of %d), loaded in %.1f s\n", thousands(cs.Rows), cs.Median, claimTimed, cs.LoadS)
	}
	last := len(sizes) - 1
	_ = e.dropDB(tables[0].name) // the small table is done with; free the server for the long part
	pools[0].Close()
	pools[0], tables[0] = nil, table{}
	snap, err := e.underSnapshot(ctx, pools[last], claimers[last], tables[last], hold)
	if err != nil {
		return nil, err
	}
	snap.Rows = sizes[last]
	d.set("claim", map[string]any{"batch": claimBatch, "sizes": res, "snapshot": snap})
	small, large := res[0], res[1]
	ls, ll := thousands(small.Rows), thousands(large.Rows)
	figs := []Figure{
		{Scenario: "claim", Name: fmt.Sprintf("claim of %d at %s rows", claimBatch, ls), Value: small.Median, Unit: "ms", N: claimTimed, Runs: small.ClaimMS,
			Note: fmt.Sprintf("store.ClaimAfter from the cursor past the last batch, as a run claims, then store.Complete (untimed), taking turns with the other table; a claim from the start touches %d buffers", small.State.ProbeBuffers)},
		{Scenario: "claim", Name: fmt.Sprintf("claim of %d at %s rows", claimBatch, ll), Value: large.Median, Unit: "ms", N: claimTimed, Runs: large.ClaimMS,
			Note: fmt.Sprintf("%d buffers; the table loaded in %.0f s", large.State.ProbeBuffers, large.LoadS)},
		Figure{Scenario: "claim", Name: fmt.Sprintf("%s ÷ %s rows", ll, ls), Value: large.Median / small.Median, Unit: "ratio", N: claimTimed}.target("<=", 1.5),
		{Scenario: "claim", Name: fmt.Sprintf("under a %.0f s snapshot: claim at the start", hold.Seconds()), Value: snap.StartMS, Unit: "ms", N: snap.StartN,
			Note: fmt.Sprintf("%s rows; a REPEATABLE READ transaction on another connection has read the table; median of the claims in the first %.1f s", ll, (hold / 12).Seconds())},
		{Scenario: "claim", Name: fmt.Sprintf("under a %.0f s snapshot: claim at the end", hold.Seconds()), Value: snap.EndMS, Unit: "ms", N: snap.EndN,
			Note: fmt.Sprintf("the last %.1f s, after %d claims and completions of %d rows back to back, each from the cursor past the last; %d dead tuples (pg_stat, approximate), due index %d → %d KiB, %d checkpoints and %.0f MiB of WAL meanwhile; after the snapshot ends: %.2f ms",
				(hold / 12).Seconds(), snap.Claims, claimBatch, snap.End.DeadTuples, snap.Start.DueIndexKiB, snap.End.DueIndexKiB,
				snap.End.Checkpoints-snap.Start.Checkpoints, mib(snap.End.WALBytes-snap.Start.WALBytes), snap.AfterMS)},
		{Scenario: "claim", Name: fmt.Sprintf("under a %.0f s snapshot: claim from the start at the end", hold.Seconds()), Value: snap.FromStartMS, Unit: "ms", N: claimTimed,
			Note: fmt.Sprintf("as a run that begins then claims (store.ClaimAfter from the zero cursor): its walk touches %d buffers (%d at the start)",
				snap.End.ProbeBuffers, snap.Start.ProbeBuffers)},
		Figure{Scenario: "claim", Name: "under the snapshot: end ÷ start", Value: snap.EndMS / snap.StartMS, Unit: "ratio", N: snap.EndN,
			Note: "the run's own claims, from its cursor; target as for table size"}.target("<=", 1.5),
	}
	return figs, nil
}

// underSnapshot holds a REPEATABLE READ snapshot open on its own connection for hold while c
// claims and completes batches back to back, and times the claims.
func (e *env) underSnapshot(ctx context.Context, pool *pgxpool.Pool, c *claimer, t table, hold time.Duration) (snapshotRun, error) {
	s := snapshotRun{HoldS: hold.Seconds()}
	conn, err := pgx.Connect(ctx, t.url)
	if err != nil {
		return s, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return s, err
	}
	var n int64
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM contacts WHERE id <= 10`).Scan(&n); err != nil {
		return s, err
	}
	if s.Start, err = readState(ctx, pool, false); err != nil {
		return s, err
	}
	fmt.Fprintf(e.log, "   snapshot held: claiming and completing for %v\n", hold)
	type sample struct {
		at time.Duration
		d  time.Duration
	}
	var samples []sample
	start := time.Now()
	for time.Since(start) < hold {
		d, err := c.once(ctx)
		if err != nil {
			return s, err
		}
		samples = append(samples, sample{time.Since(start), d})
	}
	if s.End, err = readState(ctx, pool, true); err != nil {
		return s, err
	}
	fromStart, err := c.timed(ctx, claimTimed, true)
	if err != nil {
		return s, err
	}
	s.FromStartMS = ms(medianDur(fromStart))
	if err := tx.Rollback(ctx); err != nil {
		return s, err
	}
	s.Claims = len(samples)
	// Start and end are the claims of the first and the last twelfth of the hold (5 s of a
	// minute): hundreds of claims each, so one slow moment (a checkpoint's first page writes, a
	// neighbour) does not decide the figure.
	edge := hold / 12
	var a, b []time.Duration
	for _, x := range samples {
		if x.at < edge {
			a = append(a, x.d)
		}
		if x.at >= hold-edge {
			b = append(b, x.d)
		}
	}
	s.StartN, s.EndN = len(a), len(b)
	s.StartMS, s.EndMS = ms(medianDur(a)), ms(medianDur(b))
	for sec := time.Duration(0); sec < hold; sec += time.Second {
		var in []time.Duration
		for _, x := range samples {
			if x.at >= sec && x.at < sec+time.Second {
				in = append(in, x.d)
			}
		}
		if len(in) > 0 {
			s.EverySecMS = append(s.EverySecMS, round(ms(medianDur(in))))
		}
	}
	after, err := c.timed(ctx, claimTimed)
	if err != nil {
		return s, err
	}
	s.AfterMS = ms(medianDur(after))
	if s.After, err = readState(ctx, pool, false); err != nil {
		return s, err
	}
	fmt.Fprintf(e.log, "   snapshot: %d claims; claim %.2f ms at the start, %.2f ms at the end (%.2f ms from the start of the due order), %.2f ms after it ended\n",
		s.Claims, s.StartMS, s.EndMS, s.FromStartMS, s.AfterMS)
	return s, nil
}

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgxpool"
)

// sourceResult is the source scenario's measurements.
type sourceResult struct {
	Rows int `json:"rows"`
	// FirstLinkS is the first `enrich migrate` of a source of Rows rows: the state's migrations,
	// the triggers, and the state filled from the source.
	FirstLinkS float64 `json:"first_link_s"`
	// CurrentLinkMS is a later migrate, the link current: what a nightly migrate costs.
	CurrentLinkMS []float64 `json:"current_link_ms"`
	// BulkRatio is a Batch-row INSERT ... SELECT into the linked source ÷ the same into a copy
	// of it without the link, one per round.
	Batch     int       `json:"batch"`
	BulkRatio []float64 `json:"bulk_insert_ratio"`
	// RowUS is the link's cost of one single-row INSERT (a thousand in a DO block, with the link
	// less without), in µs, one per round.
	RowUS []float64 `json:"single_row_insert_extra_us"`
}

// sourceDDL is a CRM's table, and a copy of its shape with no link, to measure the link against.
const sourceDDL = `
CREATE SCHEMA crm;
CREATE TABLE crm.customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, phone text, name text NOT NULL DEFAULT '',
                            has_whatsapp boolean, avatar_url text);
CREATE TABLE crm.plain (LIKE crm.customers INCLUDING ALL);
INSERT INTO crm.customers (phone, name) SELECT '+7 904 ' || lpad(g::text, 7, '0'), 'c' FROM generate_series(1, %[1]d) g;
INSERT INTO crm.plain (phone, name) SELECT '+7 904 ' || lpad(g::text, 7, '0'), 'c' FROM generate_series(1, %[1]d) g;
ANALYZE crm.customers;
ANALYZE crm.plain`

// source: the cost of enriching the user's own table in place ([source], issue 16) on a source
// of a million rows. The first migrate (migrations, triggers, the state filled in one scan); a
// later one, when the link is current, which must not grow with the table (a catalog read, no
// scan); and what the link's triggers add to the user's writes: a bulk INSERT ... SELECT of
// 100,000 rows (statement-level, one insert into the state) against the same into a copy of the
// table without the link, and single-row INSERTs. Three rounds, alternating with and without.
func (e *env) source(ctx context.Context, d *details) ([]Figure, error) {
	res := sourceResult{Rows: 1_000_000, Batch: 100_000}
	if e.quick {
		res.Rows, res.Batch = 50_000, 10_000
	}
	name, url, err := e.createDB(ctx, "source", "")
	if err != nil {
		return nil, err
	}
	defer e.dropDB(name)
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, fmt.Sprintf(sourceDDL, res.Rows)); err != nil {
		return nil, fmt.Errorf("make the source: %w", err)
	}
	src := store.Source{Table: "crm.customers", Key: "id", Phone: "phone",
		WriteBack: store.WriteBack{ExistsWhatsapp: "has_whatsapp", URLAvatar: "avatar_url"}}
	state, err := store.StateTable(src.Table)
	if err != nil {
		return nil, err
	}
	migrate := func() (bool, error) {
		if _, err := store.MigrateWith(ctx, pool, state, store.MigrateOptions{}); err != nil {
			return false, err
		}
		return store.LinkSource(ctx, pool, state, src, store.MigrateOptions{})
	}
	t0 := time.Now()
	if linked, err := migrate(); err != nil || !linked {
		return nil, fmt.Errorf("first migrate: linked %v, %w", linked, err)
	}
	res.FirstLinkS = time.Since(t0).Seconds()
	fmt.Fprintf(e.log, "   first migrate of a %d-row source: %.1f s\n", res.Rows, res.FirstLinkS)

	timed := func(sql string) (time.Duration, error) {
		t0 := time.Now()
		_, err := pool.Exec(ctx, sql)
		return time.Since(t0), err
	}
	const singles = 1000
	for round := range 3 {
		t0 := time.Now()
		if linked, err := migrate(); err != nil || linked {
			return nil, fmt.Errorf("migrate with the link current: linked %v, %w", linked, err)
		}
		res.CurrentLinkMS = append(res.CurrentLinkMS, ms(time.Since(t0)))
		var took [2][2]time.Duration // [plain, linked][bulk, singles]
		for i, table := range []string{"crm.plain", "crm.customers"} {
			first := res.Rows + 1 + round*(res.Batch+singles)
			bulk := fmt.Sprintf(`INSERT INTO %s (phone) SELECT '+7 905 ' || lpad(g::text, 7, '0') FROM generate_series(%d, %d) g`,
				table, first, first+res.Batch-1)
			one := fmt.Sprintf(`DO $$ BEGIN FOR i IN %d..%d LOOP INSERT INTO %s (phone) VALUES ('+7 906 ' || lpad(i::text, 7, '0')); END LOOP; END $$`,
				first, first+singles-1, table)
			if took[i][0], err = timed(bulk); err != nil {
				return nil, fmt.Errorf("bulk insert into %s: %w", table, err)
			}
			if took[i][1], err = timed(one); err != nil {
				return nil, fmt.Errorf("single-row inserts into %s: %w", table, err)
			}
		}
		res.BulkRatio = append(res.BulkRatio, took[1][0].Seconds()/took[0][0].Seconds())
		res.RowUS = append(res.RowUS, float64((took[1][1]-took[0][1]).Microseconds())/singles)
		fmt.Fprintf(e.log, "   round %d: migrate %.0f ms; %d-row INSERT %v linked, %v plain; %d single-row INSERTs %v linked, %v plain\n",
			round+1, res.CurrentLinkMS[round], res.Batch, took[1][0].Round(time.Millisecond), took[0][0].Round(time.Millisecond),
			singles, took[1][1].Round(time.Millisecond), took[0][1].Round(time.Millisecond))
	}
	var due int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM crm.customers_enrich WHERE status = 'pending'`).Scan(&due); err != nil {
		return nil, err
	}
	if want := int64(res.Rows + 3*(res.Batch+singles)); due != want {
		return nil, fmt.Errorf("the state holds %d due rows, want %d (every customer's)", due, want)
	}
	d.set("source", res)
	return []Figure{
		{Scenario: "source", Name: fmt.Sprintf("first migrate of a %d-row source table", res.Rows), Value: res.FirstLinkS, Unit: "s", N: 1,
			Note: "the state's migrations, the triggers, and the state filled in one scan; the source's writes wait meanwhile"},
		Figure{Scenario: "source", Name: "migrate with the link current", Value: median(res.CurrentLinkMS), Unit: "ms", N: 3,
			Runs: res.CurrentLinkMS, Note: "catalog reads only: a nightly migrate does not grow with the table"}.target("<=", 1000),
		{Scenario: "source", Name: fmt.Sprintf("%d-row INSERT ... SELECT into the linked source ÷ without the link", res.Batch),
			Value: median(res.BulkRatio), Unit: "x", N: 3, Runs: res.BulkRatio,
			Note: "inserts are taken a statement at a time: one insert into the state per statement"},
		{Scenario: "source", Name: "single-row INSERT: the link's cost", Value: median(res.RowUS), Unit: "µs", N: 3, Runs: res.RowUS,
			Note: fmt.Sprintf("%d INSERTs in a DO block, with the link less without, per row", singles)},
	}, nil
}

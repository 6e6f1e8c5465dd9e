package store_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// TestWritePlan: a write of a large batch while many rows are leased, on a table whose statistics
// were taken when none was, reads its arrays once. The planner once took locked_by = owner for a
// one-row filter, scanned the table for the owner's rows and rescanned the arrays for each: a
// thousand leased rows times a thousand results per write, seconds per statement.
func TestWritePlan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const rows, leased, batch = 200000, 6000, 1000
	b.exec(t, fmt.Sprintf(`INSERT INTO %s (phone_number) SELECT (79000000000 + g)::text FROM generate_series(1, %d) g`, b.table, rows))
	b.exec(t, "ANALYZE "+b.table) // no row is leased: locked_by is NULL everywhere
	const owner, token = "host:1:plan", int64(7)
	b.exec(t, fmt.Sprintf(`UPDATE %s SET locked_by = $1, lease_token = $2, locked_until = now() + interval '1 hour',
		next_attempt_at = now() + interval '1 hour' WHERE id <= %d`, b.table, leased), owner, token)

	ids, tokens := make([]int64, batch), make([]int64, batch)
	flags, texts, delays := make([]bool, batch), make([]string, batch), make([]int64, batch)
	sources := make([]string, batch)
	for i := range batch {
		ids[i], tokens[i], texts[i], delays[i], sources[i] = int64(2*i+1), token, "https://pps.whatsapp.net/v/t61/a.jpg", 1e6, "getAvatar"
	}
	args := map[string][]any{
		"complete":   {nil, owner, ids, tokens, flags, flags, texts, sources, make([]*time.Time, batch), make([]string, batch)},
		"reschedule": {nil, owner, ids, tokens, texts, delays},
		"fail":       {nil, owner, ids, tokens, texts, flags},
		"release":    {nil, owner, ids, tokens},
		"renew":      {nil, owner, ids, tokens, int64(600e6)},
	}
	for name, sql := range b.store.FencedQueries() {
		t.Run(name, func(t *testing.T) {
			plan := explainAnalyze(t, b, sql, args[name]...)
			if got := plan.rows("ModifyTable"); got != batch {
				t.Errorf("%s changed %d rows, want %d", name, got, batch)
			}
			for _, n := range plan.nodes("Function Scan") {
				if n.Loops != 1 {
					t.Errorf("%s scans its arrays %d times, want once; plan:\n%s", name, n.Loops, plan.text)
				}
			}
		})
	}
}

// planNode is one node of EXPLAIN (ANALYZE, FORMAT JSON).
type planNode struct {
	Type string `json:"Node Type"`
	// Relation is the table a scan or a modification reads.
	Relation string     `json:"Relation Name"`
	Loops    int        `json:"Actual Loops"`
	Rows     int        `json:"Actual Rows"`
	Plans    []planNode `json:"Plans"`
}

type plan struct {
	root planNode
	text string
}

// explainAnalyze runs sql under EXPLAIN ANALYZE with args, as the store sends it (a custom plan
// for these parameter values), and rolls it back.
func explainAnalyze(t *testing.T, b *bundle, sql string, args ...any) plan {
	t.Helper()
	tx, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(b.ctx) }()
	var out []byte
	if err := tx.QueryRow(b.ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&out); err != nil {
		t.Fatalf("explain: %v", err)
	}
	var doc []struct {
		Plan planNode `json:"Plan"`
	}
	if err := json.Unmarshal(out, &doc); err != nil || len(doc) != 1 {
		t.Fatalf("explain output: %v: %s", err, out)
	}
	return plan{root: doc[0].Plan, text: string(out)}
}

// nodes lists every node of type typ.
func (p plan) nodes(typ string) []planNode {
	var found []planNode
	var walk func(n planNode)
	walk = func(n planNode) {
		if n.Type == typ {
			found = append(found, n)
		}
		for _, c := range n.Plans {
			walk(c)
		}
	}
	walk(p.root)
	return found
}

// rows is how many rows fed the first node of type typ (its first child's output).
func (p plan) rows(typ string) int {
	ns := p.nodes(typ)
	if len(ns) == 0 {
		return -1
	}
	if len(ns[0].Plans) > 0 {
		return ns[0].Plans[0].Rows
	}
	return ns[0].Rows
}

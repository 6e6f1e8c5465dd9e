package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// customersDDL is a CRM's own table, as a user has it before enrich.
const customersDDL = `
CREATE SCHEMA crm;
CREATE TABLE crm.customers (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone        text,
    name         text NOT NULL DEFAULT '',
    has_whatsapp boolean,
    avatar_url   text
)`

// customersSource is the configuration of the tests' source.
var customersSource = store.Source{Table: "crm.customers", Key: "id", Phone: "phone", Region: "RU",
	WriteBack: store.WriteBack{ExistsWhatsapp: "has_whatsapp", URLAvatar: "avatar_url"}}

// sourceBundle is a database with crm.customers, linked, and a store on its state.
type sourceBundle struct {
	ctx   context.Context
	pool  *pgxpool.Pool
	store *store.Store
	state string
	token int64
}

// setupSource makes crm.customers, fills it with phones, migrates and links it, and checks
// that the source's columns are exactly what they were.
func setupSource(t *testing.T, phones ...any) *sourceBundle {
	t.Helper()
	ctx := context.Background()
	pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
	if _, err := pool.Exec(ctx, customersDDL); err != nil {
		t.Fatalf("create customers: %v", err)
	}
	for i, p := range phones {
		if _, err := pool.Exec(ctx, `INSERT INTO crm.customers (phone, name) VALUES ($1, $2)`, p, fmt.Sprint("customer ", i+1)); err != nil {
			t.Fatalf("insert customer: %v", err)
		}
	}
	before := columnsOf(t, pool, "crm", "customers")
	state, err := store.StateTable(customersSource.Table)
	if err != nil {
		t.Fatal(err)
	}
	if state != "crm.customers_enrich" {
		t.Fatalf("StateTable = %q, want crm.customers_enrich", state)
	}
	if _, err := store.MigrateWith(ctx, pool, state, store.MigrateOptions{}); err != nil {
		t.Fatalf("migrate state: %v", err)
	}
	linked, err := store.LinkSource(ctx, pool, state, customersSource, store.MigrateOptions{})
	if err != nil || !linked {
		t.Fatalf("link source: %v, %v; want linked", linked, err)
	}
	if linked, err := store.LinkSource(ctx, pool, state, customersSource, store.MigrateOptions{}); err != nil || linked {
		t.Fatalf("link source again: %v, %v; want nothing to do", linked, err)
	}
	if after := columnsOf(t, pool, "crm", "customers"); !reflect.DeepEqual(after, before) {
		t.Fatalf("migrate changed the source's columns:\nbefore %v\nafter  %v", before, after)
	}
	src := customersSource
	st, err := store.New(pool, store.Config{Table: state, Source: &src})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	return &sourceBundle{ctx: ctx, pool: pool, store: st, state: state}
}

// columnsOf describes every column of a table, in order: what "unchanged" means.
func columnsOf(t *testing.T, pool *pgxpool.Pool, schema, table string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') || ' ' || is_identity
FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`, schema, table)
	if err != nil {
		t.Fatal(err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return cols
}

// customer is a source row as the user reads it.
type customer struct {
	Phone       *string
	HasWhatsapp *bool
	AvatarURL   *string
}

func (b *sourceBundle) customer(t *testing.T, id int64) customer {
	t.Helper()
	var c customer
	if err := b.pool.QueryRow(b.ctx, `SELECT phone, has_whatsapp, avatar_url FROM crm.customers WHERE id = $1`, id).
		Scan(&c.Phone, &c.HasWhatsapp, &c.AvatarURL); err != nil {
		t.Fatalf("read customer %d: %v", id, err)
	}
	return c
}

// claim claims every due row, keyed by the customer's id.
func (b *sourceBundle) claim(t *testing.T) map[int64]store.Claimed {
	t.Helper()
	b.token++
	cs, err := b.store.Claim(b.ctx, "test:1", b.token, 100, 10*time.Minute)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	out := map[int64]store.Claimed{}
	for _, c := range cs {
		var key int64
		if err := b.pool.QueryRow(b.ctx, `SELECT source_key FROM crm.customers_enrich WHERE id = $1`, c.ID).Scan(&key); err != nil {
			t.Fatal(err)
		}
		out[key] = c
	}
	return out
}

func (b *sourceBundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := b.pool.Exec(b.ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (b *sourceBundle) stateRows(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM crm.customers_enrich`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSourceInPlace: crm.customers is enriched in place. Its rows with a phone are due after
// migrate, each claim reads the phone as enqueue would, answers land in the mapped columns in
// the write that lands the state's, and inserts, phone changes, deletes and a truncate keep the
// state in step with no enqueue step; a call in flight for a number that changed writes nothing.
func TestSourceInPlace(t *testing.T) {
	t.Parallel()
	b := setupSource(t, "+7 (900) 123-45-67", nil, "8 900 765-43-21", "not a number", "   ")
	if n := b.stateRows(t); n != 3 {
		t.Fatalf("state rows after migrate: %d, want 3 (the customers with a phone)", n)
	}
	got := b.claim(t)
	if len(got) != 3 {
		t.Fatalf("claimed %d rows, want 3: %v", len(got), got)
	}
	if c := got[1]; c.PhoneNumber == nil || *c.PhoneNumber != "79001234567" || c.Invalid != nil {
		t.Fatalf("customer 1 claimed as %+v, want phone 79001234567", c)
	}
	if c := got[3]; c.PhoneNumber == nil || *c.PhoneNumber != "79007654321" {
		t.Fatalf("customer 3 (a national number, region RU) claimed as %+v, want 79007654321", c)
	}
	if c := got[4]; c.Invalid == nil || !strings.HasPrefix(c.Invalid.Error(), "not a phone number") {
		t.Fatalf("customer 4 claimed with Invalid %v, want a refusal", c.Invalid)
	}
	yes := true
	w, err := b.store.Write(b.ctx, "test:1", store.Batch{
		Done:   []store.Done{{Lease: got[1].Lease, ExistsWhatsapp: &yes, URLAvatar: "https://pps.whatsapp.net/v/1.jpg", ExistsSource: "getAvatar"}},
		Failed: []store.Failure{{Lease: got[4].Lease, Reason: got[4].Invalid.Error()}},
		Retry:  []store.Retry{{Lease: got[3].Lease, Reason: "HTTP 502", Delay: time.Hour}},
	})
	if err != nil || w.Done != 1 || w.Failed != 1 || w.Retried != 1 {
		t.Fatalf("write: %+v, %v; want one of each", w, err)
	}
	if c := b.customer(t, 1); c.HasWhatsapp == nil || !*c.HasWhatsapp || c.AvatarURL == nil || *c.AvatarURL != "https://pps.whatsapp.net/v/1.jpg" {
		t.Fatalf("customer 1 after its answer: %+v", c)
	}
	if c := b.customer(t, 4); c.HasWhatsapp != nil || c.AvatarURL != nil {
		t.Fatalf("customer 4 (failed) got answers: %+v", c)
	}

	// A new customer is due with no enqueue step; a changed phone is due again, and the call
	// in flight for the old number writes nothing.
	b.exec(t, `INSERT INTO crm.customers (phone) VALUES ('+44 20 7946 0958')`)
	b.exec(t, `UPDATE crm.customers SET has_whatsapp = NULL, avatar_url = NULL WHERE id = 1`)
	b.exec(t, `UPDATE crm.customers SET phone = '+7 900 111-22-33' WHERE id = 1`)
	b.exec(t, `UPDATE crm.customers SET name = 'renamed' WHERE id = 3`) // not the phone: nothing to do
	got = b.claim(t)
	if len(got) != 2 || got[6].PhoneNumber == nil || *got[6].PhoneNumber != "442079460958" ||
		got[1].PhoneNumber == nil || *got[1].PhoneNumber != "79001112233" {
		t.Fatalf("claimed after the changes: %v, want customer 6 (new) and 1 (phone changed)", got)
	}
	inFlight := got[1].Lease
	b.exec(t, `UPDATE crm.customers SET phone = '+7 900 444-55-66' WHERE id = 1`)
	w, err = b.store.Write(b.ctx, "test:1", store.Batch{Done: []store.Done{{Lease: inFlight, ExistsWhatsapp: &yes, URLAvatar: "https://old"}}})
	if err != nil || w.Done != 0 {
		t.Fatalf("write for the old number: %+v, %v; want nothing written", w, err)
	}
	if c := b.customer(t, 1); c.HasWhatsapp != nil || c.AvatarURL != nil {
		t.Fatalf("customer 1 got the old number's answer: %+v", c)
	}

	// A deleted customer, or one whose phone is gone, leaves no work behind; so does a truncate.
	b.exec(t, `DELETE FROM crm.customers WHERE id = 6`)
	b.exec(t, `UPDATE crm.customers SET phone = NULL WHERE id = 4`)
	var left []int64
	rows, _ := b.pool.Query(b.ctx, `SELECT source_key FROM crm.customers_enrich ORDER BY source_key`)
	left, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || !reflect.DeepEqual(left, []int64{1, 3}) {
		t.Fatalf("state keys after delete: %v, %v; want [1 3]", left, err)
	}
	b.exec(t, `TRUNCATE crm.customers`)
	if n := b.stateRows(t); n != 0 {
		t.Fatalf("state rows after truncate: %d, want 0", n)
	}
	if _, err := b.store.Enqueue(b.ctx, []store.NewContact{{PhoneNumber: "79001234567"}}); err == nil ||
		!strings.Contains(err.Error(), "insert the numbers into") {
		t.Fatalf("enqueue into a source's state: %v, want a refusal naming the source", err)
	}
}

// TestSourceSharedPhone: two customers with one number are two rows of work, each answered
// into its own row (a contacts table keeps one row per number).
func TestSourceSharedPhone(t *testing.T) {
	t.Parallel()
	b := setupSource(t, "79001234567", "+7 900 123 45 67")
	got := b.claim(t)
	if len(got) != 2 {
		t.Fatalf("claimed %d, want 2", len(got))
	}
	no := false
	if _, err := b.store.Write(b.ctx, "test:1", store.Batch{Done: []store.Done{
		{Lease: got[1].Lease, ExistsWhatsapp: &no}, {Lease: got[2].Lease, ExistsWhatsapp: &no}}}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int64{1, 2} {
		if c := b.customer(t, id); c.HasWhatsapp == nil || *c.HasWhatsapp {
			t.Fatalf("customer %d: %+v, want has_whatsapp false", id, c)
		}
	}
}

// TestSourceRefused: a source the database refutes stops migrate or the run's check with an
// error that names the key and the fix, and changes nothing.
func TestSourceRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		ddl   string
		src   func(*store.Source)
		check bool // refused by the store's start-up check rather than by the link
		want  string
	}{
		{"view's computed column", `CREATE VIEW crm.people AS SELECT id, phone, (avatar_url IS NOT NULL) AS pictured FROM crm.customers`,
			func(s *store.Source) {
				s.Table, s.WriteBack = "crm.people", store.WriteBack{AvatarAvailable: "pictured"}
			}, true, `source.write_back.avatar_available = "pictured": the column cannot be updated`},
		{"missing table", ``, func(s *store.Source) { s.Table = "crm.nobody" }, false, "source.table \"crm\".\"nobody\" does not exist"},
		{"key not unique", ``, func(s *store.Source) { s.Key = "name" }, false, `source.key = "name"`},
		{"no phone column", ``, func(s *store.Source) { s.Phone = "mobile" }, false, `source.phone = "mobile"`},
		{"missing mapped column", ``, func(s *store.Source) { s.WriteBack.CheckedAt = "checked" }, true,
			`source.write_back.checked_at = "checked"`},
		{"wrong type", `ALTER TABLE crm.customers ADD COLUMN wa text`, func(s *store.Source) { s.WriteBack.ExistsWhatsapp = "wa" }, true,
			`source.write_back.exists_whatsapp = "wa" is text: it takes boolean`},
		{"short url column", `ALTER TABLE crm.customers ADD COLUMN pic varchar(255)`, func(s *store.Source) { s.WriteBack.URLAvatar = "pic" }, true,
			`source.write_back.url_avatar = "pic" is character varying(255): too short`},
		{"generated", `ALTER TABLE crm.customers ADD COLUMN g boolean GENERATED ALWAYS AS (phone IS NOT NULL) STORED`,
			func(s *store.Source) { s.WriteBack.AvatarAvailable = "g" }, true, "generated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
			if _, err := pool.Exec(ctx, customersDDL+";"+tc.ddl); err != nil {
				t.Fatal(err)
			}
			src := customersSource
			tc.src(&src)
			state, _ := store.StateTable(src.Table)
			if _, err := store.MigrateWith(ctx, pool, state, store.MigrateOptions{}); err != nil {
				t.Fatal(err)
			}
			_, err := store.LinkSource(ctx, pool, state, src, store.MigrateOptions{})
			if !tc.check {
				var se *store.SourceError
				if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("link: %v; want a SourceError with %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("link: %v", err)
			}
			st, err := store.New(pool, store.Config{Table: state, Source: &src})
			if err != nil {
				t.Fatal(err)
			}
			err = st.Check(ctx)
			var se *store.SourceError
			if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: %v; want a SourceError with %q", err, tc.want)
			}
		})
	}
}

// TestSourceView: a view is a source too. It cannot carry triggers, so SyncSource brings the
// state in step at each run's start (one scan of the view): rows the view shows become due,
// rows it stops showing leave no work, answers are written back through the view into the
// table under it, and a key the view shows twice is refused with the key named.
func TestSourceView(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
	if _, err := pool.Exec(ctx, customersDDL+`;
INSERT INTO crm.customers (phone, name) VALUES ('+79001234567', 'a'), ('+79001234568', 'hidden'), ('+79001234569', 'b');
CREATE VIEW crm.visible AS SELECT id, phone, has_whatsapp, avatar_url FROM crm.customers WHERE name <> 'hidden'`); err != nil {
		t.Fatal(err)
	}
	src := customersSource
	src.Table = "crm.visible"
	state, _ := store.StateTable(src.Table)
	if _, err := store.MigrateWith(ctx, pool, state, store.MigrateOptions{}); err != nil {
		t.Fatal(err)
	}
	if linked, err := store.LinkSource(ctx, pool, state, src, store.MigrateOptions{}); err != nil || !linked {
		t.Fatalf("link a view: %v, %v", linked, err)
	}
	if linked, err := store.LinkSource(ctx, pool, state, src, store.MigrateOptions{}); err != nil || linked {
		t.Fatalf("link a view again: %v, %v; want nothing to do", linked, err)
	}
	st, err := store.New(pool, store.Config{Table: state, Source: &src})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	keys := func() []int64 {
		t.Helper()
		rows, _ := pool.Query(ctx, `SELECT source_key FROM crm.visible_enrich ORDER BY source_key`)
		ks, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		return ks
	}
	if got := keys(); !reflect.DeepEqual(got, []int64{1, 3}) {
		t.Fatalf("state after the link: %v, want [1 3]", got)
	}
	// The view changes under it: nothing follows until the next sync.
	if _, err := pool.Exec(ctx, `UPDATE crm.customers SET name = 'shown' WHERE id = 2;
		UPDATE crm.customers SET name = 'hidden' WHERE id = 1; INSERT INTO crm.customers (phone) VALUES ('+79001234570')`); err != nil {
		t.Fatal(err)
	}
	if n, err := st.SyncSource(ctx); err != nil || n != 3 {
		t.Fatalf("sync: %d, %v; want 3 rows changed (one gone, two new)", n, err)
	}
	if got := keys(); !reflect.DeepEqual(got, []int64{2, 3, 4}) {
		t.Fatalf("state after the sync: %v, want [2 3 4]", got)
	}
	if n, err := st.SyncSource(ctx); err != nil || n != 0 {
		t.Fatalf("sync again: %d, %v; want nothing", n, err)
	}
	cs, err := st.Claim(ctx, "test:1", 1, 10, time.Minute)
	if err != nil || len(cs) != 3 {
		t.Fatalf("claim: %d rows, %v", len(cs), err)
	}
	yes := true
	var done []store.Done
	for _, c := range cs {
		done = append(done, store.Done{Lease: c.Lease, ExistsWhatsapp: &yes, URLAvatar: "https://pps.whatsapp.net/v/x.jpg"})
	}
	if w, err := st.Write(ctx, "test:1", store.Batch{Done: done}); err != nil || w.Done != 3 {
		t.Fatalf("write through the view: %+v, %v", w, err)
	}
	var answered int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM crm.customers WHERE has_whatsapp AND avatar_url <> ''`).Scan(&answered); err != nil || answered != 3 {
		t.Fatalf("customers answered through the view: %d, %v; want 3", answered, err)
	}

	// A view that shows a key twice cannot be written back through it.
	if _, err := pool.Exec(ctx, `CREATE OR REPLACE VIEW crm.visible AS
		SELECT id, phone, has_whatsapp, avatar_url FROM crm.customers WHERE name <> 'hidden'
		UNION ALL SELECT id, phone || '0', has_whatsapp, avatar_url FROM crm.customers WHERE id = 3`); err != nil {
		t.Fatal(err)
	}
	_, err = st.SyncSource(ctx)
	var se *store.SourceError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), `source.key = "id" is not unique in "crm"."visible"`) {
		t.Fatalf("sync of a view with a key twice: %v; want a SourceError naming source.key", err)
	}
}

// TestSourceWritePlan: at each write, the source is reached by its key, never scanned. On a
// 100,000-customer source, analyzed, a write of 1,000 answers updates the mapped columns
// through the key's index: a run's cost does not grow with the user's table.
func TestSourceWritePlan(t *testing.T) {
	t.Parallel()
	b := setupSource(t)
	const customers, batch = 100000, 1000
	b.exec(t, fmt.Sprintf(`INSERT INTO crm.customers (phone) SELECT (79000000000 + g)::text FROM generate_series(1, %d) g`, customers))
	b.exec(t, `ANALYZE crm.customers; ANALYZE crm.customers_enrich`)
	cs, err := b.store.Claim(b.ctx, "test:1", 1, batch, 10*time.Minute)
	if err != nil || len(cs) != batch {
		t.Fatalf("claim: %d, %v", len(cs), err)
	}
	ids, tokens := make([]int64, batch), make([]int64, batch)
	flags, texts, delays := make([]bool, batch), make([]string, batch), make([]int64, batch)
	sources := make([]string, batch)
	for i, c := range cs {
		ids[i], tokens[i], texts[i], delays[i], sources[i] = c.ID, c.Token, "https://pps.whatsapp.net/v/t61/a.jpg", 1e6, "getAvatar"
	}
	args := map[string][]any{
		"complete":   {nil, "test:1", ids, tokens, flags, flags, texts, sources, make([]*time.Time, batch), make([]string, batch)},
		"reschedule": {nil, "test:1", ids, tokens, texts, delays},
		"fail":       {nil, "test:1", ids, tokens, texts, flags},
	}
	queries := b.store.FencedQueries()
	for name, a := range args {
		t.Run(name, func(t *testing.T) {
			p := explainAnalyze(t, &bundle{ctx: b.ctx, pool: b.pool}, queries[name], a...)
			mods := p.nodes("ModifyTable")
			if len(mods) != 2 {
				t.Fatalf("%s: %d ModifyTable nodes, want 2 (the state, the source); plan:\n%s", name, len(mods), p.text)
			}
			for _, n := range p.nodes("Seq Scan") {
				if n.Relation == "customers" {
					t.Fatalf("%s scans the source; plan:\n%s", name, p.text)
				}
			}
			if got := p.rows("ModifyTable"); got != batch {
				t.Fatalf("%s wrote %d source rows, want %d; plan:\n%s", name, got, batch, p.text)
			}
		})
	}
}

// TestSourceCheck: a [source] whose names cannot work is refused before any connection, naming
// the key.
func TestSourceCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		src  func(*store.Source)
		want string
	}{
		{"good", func(*store.Source) {}, ""},
		{"no key", func(s *store.Source) { s.Key = "" }, "source.key is empty"},
		{"odd phone", func(s *store.Source) { s.Phone = "phone; DROP TABLE x" }, `source.phone = "phone; DROP TABLE x" is not a plain column name`},
		{"bad table", func(s *store.Source) { s.Table = "a.b.c" }, "source.table:"},
		{"result onto the phone", func(s *store.Source) { s.WriteBack.Reason = "phone" }, `source.write_back.reason = "phone": the column is source.phone too`},
		{"two results, one column", func(s *store.Source) { s.WriteBack.CheckedAt = "has_whatsapp" },
			`source.write_back.checked_at = "has_whatsapp": the column is source.write_back.exists_whatsapp too`},
		{"bad region", func(s *store.Source) { s.Region = "XX" }, "input.region, which reads source.phone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := customersSource
			tc.src(&src)
			err := src.Check()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Check: %v; want %q", err, tc.want)
			}
		})
	}
}

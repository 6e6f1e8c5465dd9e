package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// sourceDDL is the CRM table, before enrich.
const sourceDDL = `
CREATE SCHEMA crm;
CREATE TABLE crm.customers (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone        text,
    name         text NOT NULL DEFAULT '',
    has_whatsapp boolean,
    avatar_url   text
)`

// sourceBundle is a database with crm.customers, a simulator and the configuration that
// names them.
type sourceBundle struct {
	pool *pgxpool.Pool
	env  map[string]string
	sim  *simulator.Simulator
	inst simulator.Instance
}

func setupSourceCLI(t *testing.T, extraTOML string) *sourceBundle {
	t.Helper()
	return setupSourceTable(t, "crm.customers", extraTOML)
}

// setupSourceTable is setupSourceCLI with source.table set to table.
func setupSourceTable(t *testing.T, table, extraTOML string) *sourceBundle {
	t.Helper()
	dbURL := pgtest.NewEmptyDB(t)
	pool := pgtest.Connect(t, dbURL)
	if _, err := pool.Exec(context.Background(), sourceDDL); err != nil {
		t.Fatal(err)
	}
	inst := simulator.Instance{ID: "1101000081", Token: "tok-source", RPS: 50}
	sim, err := simulator.New(simulator.Config{Seed: 81, Instances: []simulator.Instance{inst}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	cfg := writeFile(t, t.TempDir(), "enrich.toml", fmt.Sprintf(`
[greenapi]
api_url = %q

[[greenapi.instance]]
id = %q
token = %q
rps = 50

[input]
region = "RU"

[source]
table = %q
key = "id"
phone = "phone"

[source.write_back]
exists_whatsapp = "has_whatsapp"
url_avatar = "avatar_url"
%s`, srv.URL, inst.ID, inst.Token, table, extraTOML))
	return &sourceBundle{pool: pool, sim: sim, inst: inst, env: map[string]string{"DATABASE_URL": dbURL, "ENRICH_CONFIG": cfg}}
}

// insert adds customers with the phones given, as the CRM would, and returns their ids.
func (b *sourceBundle) insert(t *testing.T, phones ...string) []int64 {
	t.Helper()
	rows, err := b.pool.Query(context.Background(),
		`INSERT INTO crm.customers (phone, name) SELECT p, 'customer' FROM unnest($1::text[]) AS p RETURNING id`, phones)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// cli runs enrich in-process and fails the test on an error.
func (b *sourceBundle) cli(t *testing.T, args ...string) string {
	t.Helper()
	out, stderr, err := runCLI(t, b.env, args...)
	if err != nil {
		t.Fatalf("enrich %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

// calls is how many GetAvatar requests the simulator has served.
func (b *sourceBundle) calls() int {
	return b.sim.Stats().Instances[b.inst.ID].Methods["getAvatar"].Requests
}

// checkAnswered checks that each customer of want (id → its number's digits) carries its
// number's answer in the mapped columns, and returns how many have a link and how many
// WhatsApp, so a test can tell it checked something.
func (b *sourceBundle) checkAnswered(t *testing.T, want map[int64]string) (links, accounts int) {
	t.Helper()
	for id, digits := range want {
		var exists *bool
		var url *string
		if err := b.pool.QueryRow(context.Background(), `SELECT has_whatsapp, avatar_url FROM crm.customers WHERE id = $1`, id).
			Scan(&exists, &url); err != nil {
			t.Fatal(err)
		}
		tr := b.sim.Truth(digits)
		wantExists, _ := tr.Existence(false)
		if tr.BadRequest {
			wantExists = nil
		}
		wantURL := tr.Avatar().URLAvatar
		if tr.BadRequest {
			if url != nil || exists != nil {
				t.Errorf("customer %d (%s, refused by the API): has_whatsapp %v, avatar_url %v; want both NULL", id, digits, fmtBool(exists), url)
			}
			continue
		}
		if !sameBool(exists, wantExists) || url == nil || *url != wantURL {
			t.Errorf("customer %d (%s): has_whatsapp %v, avatar_url %v; want %v, %q", id, digits, fmtBool(exists), url, fmtBool(wantExists), wantURL)
		}
		if wantURL != "" {
			links++
		}
		if wantExists != nil && *wantExists {
			accounts++
		}
	}
	return links, accounts
}

// TestSourceEndToEnd: the crm.customers(id, phone, name, has_whatsapp, avatar_url) is
// enriched in place: migrate leaves its columns as they were, a run answers every customer with
// a phone into has_whatsapp and avatar_url (numbers written as people write them, national ones
// read in input.region), a phone that is no number fails without a call, and customers inserted
// later and phones changed later are answered by the next run, which calls nothing else.
func TestSourceEndToEnd(t *testing.T) {
	t.Parallel()
	b := setupSourceCLI(t, "")
	want := map[int64]string{}
	for i := range 30 {
		digits := fmt.Sprintf("7904%07d", i)
		written := fmt.Sprintf("+7 (904) %s-%s-%s", digits[4:7], digits[7:9], digits[9:])
		if i%3 == 0 {
			written = "8 904 " + digits[4:] // national, in RU
		}
		want[b.insert(t, written)[0]] = digits
	}
	garbage := b.insert(t, "call me maybe")[0]
	b.insert(t, "") // a customer with no phone is no work
	before := sourceColumns(t, b.pool)

	if out := b.cli(t, "migrate"); !strings.Contains(out, "the source link of crm.customers") {
		t.Fatalf("migrate said:\n%s", out)
	}
	if out := b.cli(t, "migrate"); !strings.Contains(out, "up to date") {
		t.Fatalf("second migrate said:\n%s", out)
	}
	if after := sourceColumns(t, b.pool); !reflect.DeepEqual(after, before) {
		t.Fatalf("migrate changed crm.customers' columns:\nbefore %v\nafter  %v", before, after)
	}

	b.cli(t, "run")
	if got := b.calls(); got != 30 {
		t.Fatalf("first run: %d GetAvatar calls, want 30 (one per customer with a number)", got)
	}
	if links, accounts := b.checkAnswered(t, want); links < 5 || accounts < 10 {
		t.Fatalf("%d links and %d accounts among 30: the seed does not exercise the write-back", links, accounts)
	}
	var status, reason string
	if err := b.pool.QueryRow(context.Background(), `SELECT status, reason FROM crm.customers_enrich WHERE source_key = $1`, garbage).
		Scan(&status, &reason); err != nil || status != "failed" || !strings.HasPrefix(reason, "not a phone number") {
		t.Fatalf("customer %d (no number): %s %q, %v; want failed, not a phone number", garbage, status, reason, err)
	}

	// status and export read the state as they read a contacts table.
	var st statusJSON
	if err := json.Unmarshal([]byte(b.cli(t, "status", "--json", "--exact")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Table != "crm.customers_enrich" || st.Source != "crm.customers" || st.ByStatus["done"]+st.ByStatus["failed"] != 31 || st.DueNow != 0 {
		t.Fatalf("status of the source's state: table %s, source %s, by status %v, due %d; want crm.customers_enrich "+
			"of crm.customers, 31 answered, none due", st.Table, st.Source, st.ByStatus, st.DueNow)
	}
	if out := b.cli(t, "export", "--format", "csv"); strings.Count(out, "\n") != 31 {
		t.Fatalf("export of the source's state: %d lines, want a header and the 30 done rows:\n%s", strings.Count(out, "\n"), out)
	}

	// Later: new customers, and changed phones; the next run answers exactly those.
	later := map[int64]string{}
	for i := range 4 {
		digits := fmt.Sprintf("7905%07d", i)
		later[b.insert(t, "+"+digits)[0]] = digits
	}
	changed := 0
	for id := range want {
		if changed == 3 {
			break
		}
		digits := fmt.Sprintf("7906%07d", changed)
		if _, err := b.pool.Exec(context.Background(), `UPDATE crm.customers SET phone = $1 WHERE id = $2`, "+"+digits, id); err != nil {
			t.Fatal(err)
		}
		want[id], later[id] = digits, digits
		changed++
	}
	before2 := b.calls()
	b.cli(t, "run")
	if got := b.calls() - before2; got != len(later) {
		t.Fatalf("second run: %d GetAvatar calls, want %d (4 new customers, 3 changed phones)", got, len(later))
	}
	b.checkAnswered(t, want)
	b.checkAnswered(t, later)
}

// sourceColumns describes crm.customers' columns in order: what "unchanged" means.
func sourceColumns(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '') || ' ' || is_identity
FROM information_schema.columns WHERE table_schema = 'crm' AND table_name = 'customers' ORDER BY ordinal_position`)
	if err != nil {
		t.Fatal(err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return cols
}

// TestSourceDryRun: migrate --dry-run prints the link (triggers on the source, the fill) after
// the state's migrations and changes nothing.
func TestSourceDryRun(t *testing.T) {
	t.Parallel()
	b := setupSourceCLI(t, "")
	out := b.cli(t, "migrate", "--dry-run")
	for _, want := range []string{"0001_contacts.sql", "link source.table crm.customers", `CREATE TRIGGER "customers_enrich_update" AFTER UPDATE OF "id", "phone" ON "crm"."customers"`,
		"nothing was changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	var state *string
	var triggers int
	if err := b.pool.QueryRow(context.Background(), `SELECT to_regclass('crm.customers_enrich')::text,
		(SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal)`).Scan(&state, &triggers); err != nil || state != nil || triggers != 0 {
		t.Fatalf("after the dry run: state table %v, %d triggers, %v; want none", state, triggers, err)
	}
}

// TestSourceRefusedCLI: a source the database refutes is the configuration's fault: the
// command exits 1 with the key and the fix, before any call.
func TestSourceRefusedCLI(t *testing.T) {
	t.Parallel()
	b := setupSourceCLI(t, "checked_at = \"last_checked\"\n")
	b.cli(t, "migrate")
	b.insert(t, "+79040000001")
	_, stderr, err := runCLI(t, b.env, "run")
	var ce *configError
	if !errors.As(err, &ce) || exitCode(err, nil) != exitConfig || !strings.Contains(err.Error(), `source.write_back.checked_at = "last_checked"`) {
		t.Fatalf("run with a missing mapped column: %v (exit %d)\n%s; want exit 1 naming the key", err, exitCode(err, nil), stderr)
	}
	if got := b.calls(); got != 0 {
		t.Fatalf("%d calls before the refusal", got)
	}
	_, _, err = runCLIInput(t, "79040000002\n", b.env, "enqueue", "-")
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "insert the numbers into") {
		t.Fatalf("enqueue into a source's state: %v; want a configuration error naming the source", err)
	}
}

// TestSourceViewEndToEnd: a view is a source too: each run brings its state in step first (one
// scan), so customers the view shows later are answered by the next run, through the view
// into the table under it, and customers it stops showing are not called.
func TestSourceViewEndToEnd(t *testing.T) {
	t.Parallel()
	b := setupSourceTable(t, "crm.leads", "")
	if _, err := b.pool.Exec(context.Background(), `CREATE VIEW crm.leads AS
		SELECT id, phone, has_whatsapp, avatar_url FROM crm.customers WHERE name <> 'archived'`); err != nil {
		t.Fatal(err)
	}
	want := map[int64]string{}
	for i := range 6 {
		digits := fmt.Sprintf("7907%07d", i)
		want[b.insert(t, "+"+digits)[0]] = digits
	}
	b.cli(t, "migrate")
	b.cli(t, "run")
	if got := b.calls(); got != 6 {
		t.Fatalf("first run: %d calls, want 6", got)
	}
	b.checkAnswered(t, want)
	later := map[int64]string{}
	for i := range 3 {
		digits := fmt.Sprintf("7908%07d", i)
		later[b.insert(t, "+"+digits)[0]] = digits
	}
	archived := b.insert(t, "+79090000000")[0]
	if _, err := b.pool.Exec(context.Background(), `UPDATE crm.customers SET name = 'archived' WHERE id = $1`, archived); err != nil {
		t.Fatal(err)
	}
	b.cli(t, "run")
	if got := b.calls(); got != 9 {
		t.Fatalf("after the second run: %d calls, want 9 (3 new customers; the archived one not called)", got)
	}
	b.checkAnswered(t, later)
}

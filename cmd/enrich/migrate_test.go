package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/migrations"
	"github.com/enrich-dev/enrich/store"
)

// TestMigrateStatusAndDryRun: `enrich migrate status` lists every file as pending on a new
// database and as applied after `enrich migrate`; `enrich migrate --dry-run` prints the pending
// files' SQL for the table and changes nothing.
func TestMigrateStatusAndDryRun(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewEmptyDB(t)
	env := map[string]string{"DATABASE_URL": dbURL}
	files, err := fsNames()
	if err != nil {
		t.Fatal(err)
	}

	statusJSON := func(t *testing.T) (pending int, states []store.MigrationState) {
		t.Helper()
		out, _, err := runCLI(t, env, "migrate", "status", "--table", "crm.people", "--json")
		if err != nil {
			t.Fatalf("migrate status: %v", err)
		}
		var got struct {
			Table      string
			Pending    int
			Migrations []store.MigrationState
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("migrate status --json: %v\n%s", err, out)
		}
		if got.Table != `"crm"."people"` || len(got.Migrations) != len(files) {
			t.Fatalf("migrate status --json: table %s, %d files; want \"crm\".\"people\" and %d:\n%s", got.Table, len(got.Migrations), len(files), out)
		}
		return got.Pending, got.Migrations
	}

	if _, err := pgtest.Connect(t, dbURL).Exec(t.Context(), `CREATE SCHEMA crm`); err != nil {
		t.Fatal(err)
	}
	if pending, _ := statusJSON(t); pending != len(files) {
		t.Fatalf("a new database: %d pending, want every file (%d)", pending, len(files))
	}
	out, _, err := runCLI(t, env, "migrate", "status", "--table", "crm.people")
	if err != nil || !strings.Contains(out, "run enrich migrate (enrich migrate --dry-run prints their SQL)") {
		t.Fatalf("migrate status: %v\n%s", err, out)
	}
	for _, name := range files {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +pending *$`).MatchString(out) {
			t.Errorf("migrate status does not list %s as pending:\n%s", name, out)
		}
	}

	out, _, err = runCLI(t, env, "migrate", "--dry-run", "--table", "crm.people")
	if err != nil {
		t.Fatalf("migrate --dry-run: %v", err)
	}
	for _, want := range []string{"-- " + files[0] + ": would run in one transaction", `CREATE TABLE "crm"."people"`,
		"CREATE INDEX CONCURRENTLY", "nothing was changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("migrate --dry-run lacks %q:\n%.2000s", want, out)
		}
	}
	if pending, _ := statusJSON(t); pending != len(files) {
		t.Fatalf("after --dry-run: %d pending, want every file still (%d): a dry run changes nothing", pending, len(files))
	}

	if _, _, err := runCLI(t, env, "migrate", "--table", "crm.people"); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	pending, states := statusJSON(t)
	if pending != 0 {
		t.Fatalf("after migrate: %d pending, want 0", pending)
	}
	for _, s := range states {
		if !s.Applied || s.AppliedAt == nil || s.SQL != "" {
			t.Errorf("after migrate: %+v, want applied with a time and no SQL", s)
		}
	}
	out, _, err = runCLI(t, env, "migrate", "--dry-run", "--table", "crm.people")
	if err != nil || !strings.Contains(out, "is up to date: nothing would run") {
		t.Fatalf("migrate --dry-run on a current table: %v\n%s", err, out)
	}
}

// fsNames lists the embedded migration files in order.
func fsNames() ([]string, error) {
	entries, err := migrations.FS.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".sql") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

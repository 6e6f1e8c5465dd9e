package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrateTables creates each schema and migrates its contacts table into one new database, with
// the budget in budgetSchema ("" for the default), and returns the pool and a Store per table.
func migrateTables(t *testing.T, budgetSchema string, tables ...string) (*pgxpool.Pool, []*store.Store) {
	t.Helper()
	ctx := context.Background()
	pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
	var stores []*store.Store
	for _, table := range tables {
		if schema, _, ok := strings.Cut(table, "."); ok {
			if _, err := pool.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+schema); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := store.MigrateWith(ctx, pool, table, store.MigrateOptions{BudgetSchema: budgetSchema}); err != nil {
			t.Fatalf("migrate %s: %v", table, err)
		}
		st, err := store.New(pool, store.Config{Table: table, BudgetSchema: budgetSchema})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Check(ctx); err != nil {
			t.Fatalf("check %s: %v", table, err)
		}
		stores = append(stores, st)
	}
	return pool, stores
}

// TestBudgetAcrossSchemas: an instance used for contacts tables in two schemas has one budget:
// the second table's runs get the slots after the first's, never the same ones (issue 15: one
// budget per instance per database, whatever the schema; each schema had its own before).
func TestBudgetAcrossSchemas(t *testing.T) {
	t.Parallel()
	for _, budgetSchema := range []string{"", "crm"} {
		name := budgetSchema
		if name == "" {
			name = "default"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			pool, st := migrateTables(t, budgetSchema, "crm.contacts", "sales.contacts", "contacts")
			req := store.BudgetRequest{Instance: "1101000001", MaxRPS: 10, Want: 10, PerDay: 25}
			var end time.Time
			var used int64
			for i, s := range st {
				req.Owner = []string{"crm-run", "sales-run", "public-run"}[i]
				g, err := s.Reserve(ctx, req, policy)
				if err != nil {
					t.Fatalf("reserve through %s: %v", s.Table(), err)
				}
				if i > 0 && g.Start.Before(end) {
					t.Fatalf("%s's grant starts at %v, before the previous table's block ends (%v): two budgets",
						s.Table(), g.Start, end)
				}
				end = g.Start.Add(time.Duration(g.Slots) * g.Interval)
				used = g.Used
			}
			if used != 25 {
				t.Fatalf("the day's count after three tables asked 10 each with a cap of 25: %d, want 25 (one cap for the database)", used)
			}
			want := budgetSchema
			if want == "" {
				want = store.BudgetSchemaDefault
			}
			var n int
			if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+want+`.enrich_instances WHERE instance_id = '1101000001'`).Scan(&n); err != nil || n != 1 {
				t.Fatalf("rows for the instance in %s.enrich_instances: %d, %v; want 1", want, n, err)
			}
		})
	}
}

// TestBudgetSchemaMigration: an installation whose budget lived beside its contacts tables (up
// to migration 0012) keeps what it counted: 0013 moves each schema's rows into the budget
// schema, merged (the later day, the larger count of the same day, the slower rate).
func TestBudgetSchemaMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := migrateTables(t, "", "crm.contacts", "sales.contacts")
	// As an older version left them: each schema's own budget, one instance in both.
	for _, q := range []string{
		`DELETE FROM enrich.enrich_instances`,
		`INSERT INTO crm.enrich_instances (instance_id, rate, day, used, headroom) VALUES ('1101000001', 10, '2026-12-02', 40, 0.015)`,
		`INSERT INTO sales.enrich_instances (instance_id, rate, day, used, headroom) VALUES ('1101000001', 8.5, '2026-12-02', 55, 0.03),
		                                                                              ('1101000002', 10, '2026-12-01', 7, 0.015)`,
		`INSERT INTO crm.enrich_instances (instance_id, rate, day, used, headroom) VALUES ('1101000002', 10, '2026-12-02', 3, 0.015)`,
		`DELETE FROM crm.enrich_schema_migrations WHERE version = 13`,
		`DELETE FROM sales.enrich_schema_migrations WHERE version = 13`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for _, table := range []string{"crm.contacts", "sales.contacts"} {
		applied, err := store.Migrate(ctx, pool, table)
		if err != nil || len(applied) != 1 || !strings.HasPrefix(applied[0], "0013_") {
			t.Fatalf("migrate %s: %v, %v; want 0013 applied", table, applied, err)
		}
	}
	type row struct {
		rate, headroom float64
		day            string
		used           int64
	}
	want := map[string]row{
		"1101000001": {8.5, 0.03, "2026-12-02", 55}, // the same day in both: the larger count, the slower rate
		"1101000002": {10, 0.015, "2026-12-02", 3},  // the later day's count
	}
	for id, w := range want {
		var got row
		if err := pool.QueryRow(ctx, `SELECT rate, headroom, day::text, used FROM enrich.enrich_instances WHERE instance_id = $1`, id).
			Scan(&got.rate, &got.headroom, &got.day, &got.used); err != nil {
			t.Fatalf("instance %s: %v", id, err)
		}
		if got != w {
			t.Errorf("instance %s after the move: %+v, want %+v", id, got, w)
		}
	}
}

// TestBudgetSchemaNotAllowed: a role that may not create the budget's schema gets an error that
// names database.budget_schema and both ways out; nothing of the file is applied.
func TestBudgetSchemaNotAllowed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := pgtest.NewEmptyDB(t)
	admin := pgtest.Connect(t, dbURL)
	role := "enrich_lowpriv_" + strings.ReplaceAll(strings.ToLower(t.Name()), "/", "_")
	var db string
	if err := admin.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`DROP ROLE IF EXISTS ` + role, `CREATE ROLE ` + role + ` LOGIN`,
		`CREATE SCHEMA crm AUTHORIZATION ` + role, `REVOKE CREATE ON DATABASE "` + db + `" FROM PUBLIC`,
	} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), `DROP SCHEMA crm CASCADE`)
		_, _ = admin.Exec(context.Background(), `DROP OWNED BY `+role)
		_, _ = admin.Exec(context.Background(), `DROP ROLE `+role)
	})
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.User = role
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	_, err = store.Migrate(ctx, pool, "crm.contacts")
	if err == nil || !strings.Contains(err.Error(), "database.budget_schema") ||
		!strings.Contains(err.Error(), `CREATE SCHEMA "enrich" AUTHORIZATION`) {
		t.Fatalf("migrate as a role without CREATE on the database: %v; want the error to name database.budget_schema and the fix", err)
	}
	// The way out: a schema the role may create tables in.
	if _, err := store.MigrateWith(ctx, pool, "crm.contacts", store.MigrateOptions{BudgetSchema: "crm"}); err != nil {
		t.Fatalf("migrate with the budget in crm: %v", err)
	}
}

package pgtest_test

import (
	"context"
	"testing"

	"github.com/enrich-dev/enrich/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestNewDB(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("MigratedAndIsolated", func(t *testing.T) {
		t.Parallel()
		a, b := pgtest.NewPool(t), pgtest.NewPool(t)
		if _, err := a.Exec(ctx, `INSERT INTO contacts (phone_number) VALUES ('79001234567')`); err != nil {
			t.Fatalf("insert into a: %v", err)
		}
		var na, nb int
		if err := a.QueryRow(ctx, `SELECT count(*) FROM contacts`).Scan(&na); err != nil {
			t.Fatal(err)
		}
		if err := b.QueryRow(ctx, `SELECT count(*) FROM contacts`).Scan(&nb); err != nil {
			t.Fatal(err)
		}
		if na != 1 || nb != 0 {
			t.Fatalf("rows: a=%d b=%d, want 1 and 0 (databases must not share data)", na, nb)
		}
	})

	t.Run("Empty", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
		var reg *string
		if err := pool.QueryRow(ctx, `SELECT to_regclass('contacts')::text`).Scan(&reg); err != nil {
			t.Fatal(err)
		}
		if reg != nil {
			t.Fatalf("empty database has table %s", *reg)
		}
	})

	t.Run("AdminURL", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.Connect(t, pgtest.AdminURL())
		var v string
		if err := pool.QueryRow(ctx, `SHOW server_version`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		t.Logf("server version %s", v)
	})
}

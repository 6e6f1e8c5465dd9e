package pgcluster

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestStart exercises the throw-away cluster even where a server runs, so the fallback that
// tests and the demo need on a machine without one cannot rot.
func TestStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := Start(ctx)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	var dir string
	t.Cleanup(func() {
		c.Stop()
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("cluster directory %s still there after stop (%v)", dir, err)
		}
	})
	if err := Ping(ctx, c.URL, localProbeTimeout); err != nil {
		t.Fatalf("ping %s: %v", c.URL, err)
	}
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var fsync, user string
	if err := conn.QueryRow(ctx, `SELECT current_setting('fsync'), current_setting('data_directory'), current_user`).
		Scan(&fsync, &dir, &user); err != nil {
		t.Fatal(err)
	}
	if fsync != "off" || user != "postgres" {
		t.Errorf("fsync=%s user=%s, want off and postgres", fsync, user)
	}
}

func TestRedactAndWithDatabase(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, redacted, withDB string }{
		{"postgres://u:hunter2@h:5432/a?sslmode=disable", "postgres://u:xxxxx@h:5432/a?sslmode=disable", "postgres://u:hunter2@h:5432/b?sslmode=disable"},
		{"postgres://postgres@/postgres?host=%2Ftmp%2Fx", "postgres://postgres@/postgres?host=%2Ftmp%2Fx", "postgres://postgres@/b?host=%2Ftmp%2Fx"},
		{"host=h user=u password=hunter2 dbname=a", "host=h user=u password=xxxxx dbname=a", "host=h user=u password=hunter2 dbname=a dbname='b'"},
		{"host=h password='hun ter2' dbname=a", "host=h password=xxxxx dbname=a", "host=h password='hun ter2' dbname=a dbname='b'"},
	} {
		if got := Redact(tc.in); got != tc.redacted {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.redacted)
		}
		if got, err := WithDatabase(tc.in, "b"); err != nil || got != tc.withDB {
			t.Errorf("WithDatabase(%q) = %q, %v; want %q", tc.in, got, err, tc.withDB)
		}
	}
}

// TestDownUp stops a cluster as a restart would and starts it again: clients are disconnected,
// nothing answers while it is down, and what was committed before is there after.
func TestDownUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c, err := Start(ctx)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(c.Stop)
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)`); err != nil {
		t.Fatal(err)
	}

	if err := c.Down(ctx); err != nil {
		t.Fatalf("down: %v", err)
	}
	if err := c.Down(ctx); err != nil {
		t.Fatalf("second down: %v", err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("a connection made before Down still answers")
	}
	if err := Ping(ctx, c.URL, localProbeTimeout); err == nil {
		t.Fatal("the cluster answers while down")
	}

	if err := c.Up(ctx); err != nil {
		t.Fatalf("up: %v", err)
	}
	if err := c.Up(ctx); err != nil {
		t.Fatalf("second up: %v", err)
	}
	again, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatalf("connect after Up: %v", err)
	}
	defer again.Close(ctx)
	var v int
	if err := again.QueryRow(ctx, `SELECT v FROM kept`).Scan(&v); err != nil || v != 42 {
		t.Fatalf("after Down and Up: v = %d, %v; want the committed 42", v, err)
	}

	c.Stop()
	if err := c.Up(ctx); err == nil {
		t.Fatal("Up after Stop succeeded")
	}
	if err := c.Down(ctx); err != nil {
		t.Fatalf("Down after Stop: %v", err)
	}
}

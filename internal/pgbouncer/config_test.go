package pgbouncer

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestConfig(t *testing.T) {
	t.Parallel()
	up, err := pgconn.ParseConfig("postgres://ad%20min:it's%20a%20secret@127.0.0.1:6543/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	ini := config(up, Options{Mode: ModeTransaction, PoolSize: 2}, 40001, "/tmp/x")
	for _, want := range []string{
		// PgBouncer reads a value in single quotes with '' for a quote; spaces stay inside.
		"* = host='127.0.0.1' port=6543 user='ad min' password='it''s a secret'\n",
		"pool_mode = transaction\n",
		"default_pool_size = 2\n",
		"listen_addr = 127.0.0.1\n",
		"listen_port = 40001\n",
		"auth_type = any\n",
	} {
		if !strings.Contains(ini, want) {
			t.Errorf("pgbouncer.ini lacks %q:\n%s", want, ini)
		}
	}
	// No password, no password key: PgBouncer refuses empty values.
	up.Password = ""
	if ini := config(up, Options{Mode: ModeSession, PoolSize: 1}, 1, "/tmp/x"); strings.Contains(ini, "password") {
		t.Errorf("pgbouncer.ini has a password key without a password:\n%s", ini)
	}
	if !strings.Contains(ErrNotInstalled.Error(), "apt-get install pgbouncer") {
		t.Errorf("ErrNotInstalled = %q, want the install command", ErrNotInstalled)
	}
}

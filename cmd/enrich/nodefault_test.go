package main

import (
	"net/url"
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/internal/pgtest"
)

// TestNoDefaultDatabase: with neither DATABASE_URL nor database.url, every database command
// stops with exit 1 naming both, before it connects anywhere (it once used the local server's
// maintenance database, and `enrich migrate` would have created its tables there).
func TestNoDefaultDatabase(t *testing.T) {
	t.Parallel()
	api := map[string]string{"GREENAPI_ID_INSTANCE": "1101000001", "GREENAPI_API_TOKEN_INSTANCE": "tok"}
	for _, args := range [][]string{
		{"migrate"}, {"status"}, {"status", "--json"}, {"enqueue", "-"}, {"run", "--progress", "off", "--summary", "log"},
		{"requeue", "--status", "failed"}, {"export"},
	} {
		out, stderr, err := runCLIInput(t, "79001234567\n", api, args...)
		if exitCode(err, nil) != exitConfig || err == nil ||
			!strings.Contains(err.Error(), "DATABASE_URL") || !strings.Contains(err.Error(), "database.url") {
			t.Errorf("%v without a database: exit %d, %v\nstdout:\n%s\nstderr:\n%s", args, exitCode(err, nil), err, out, stderr)
		}
	}
	_, _, err := runCLI(t, nil, "status")
	t.Logf("enrich status without a database: %v", err)
}

// TestDatabaseLogged: a command logs the host, database and table it uses, without the password.
func TestDatabaseLogged(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(pgtest.NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "s3cret-pw") // trust auth ignores it
	_, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": u.String()}, "status", "--log-format", "json")
	if err != nil {
		t.Fatalf("status: %v\n%s", err, stderr)
	}
	var line string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, `"message":"database"`) {
			line = l
		}
	}
	t.Logf("status logs: %s", line)
	for _, want := range []string{`"host":"` + u.Hostname() + `"`, `"database":"` + strings.TrimPrefix(u.Path, "/") + `"`,
		`"table":"contacts"`, `"user":"` + u.User.Username() + `"`} {
		if !strings.Contains(line, want) {
			t.Errorf("the database line lacks %s:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "s3cret-pw") {
		t.Errorf("the password is in the log:\n%s", stderr)
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/jackc/pgx/v5"
)

// TestRefreshEndToEnd runs the real binary twice against the simulator, whose links carry an oe
// (simulator.LinkLifetime after its start). The first run stores each link's expiry; then, in the
// table, some links are made to expire within a day, some in a day and a half, and some answers
// without a link are made eight days old. status --json counts the first kind; the second run
// calls exactly the rows due for a refresh (links within refresh_before_expiry of their expiry,
// answers older than refresh_after) and no other, and stores their new links' expiries.
func TestRefreshEndToEnd(t *testing.T) {
	t.Parallel()
	const rows = 80
	start := time.Now().UTC().Truncate(time.Second)
	inst := simulator.Instance{ID: "1101000071", Token: "tok-refresh", RPS: 50}
	b := seedProc(t, rows, "7903", inst, simulator.Config{Seed: 11, Start: start})
	srv := httptest.NewServer(b.sim)
	t.Cleanup(srv.Close)
	b.config = filepath.Join(t.TempDir(), "enrich.toml")
	toml := fmt.Sprintf("[greenapi]\napi_url = %q\n\n[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = 50\n\n"+
		"[run]\nrefresh_after = \"168h\"\nrefresh_before_expiry = \"24h\"\n", srv.URL, inst.ID, inst.Token)
	if err := os.WriteFile(b.config, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	run := func(t *testing.T) (calls int, out *output) {
		t.Helper()
		before := b.sim.Stats().Instances[inst.ID].Methods["getAvatar"].Requests
		cmd, out := b.command(t, "run", "--log-format", "json")
		if err := cmd.Run(); err != nil {
			t.Fatalf("run: %v\n%s", err, out)
		}
		return b.sim.Stats().Instances[inst.ID].Methods["getAvatar"].Requests - before, out
	}
	type row struct {
		id        int64
		url       string
		expires   *time.Time
		checkedAt time.Time
		status    string
	}
	read := func(t *testing.T) []row {
		t.Helper()
		rs, err := b.pool.Query(ctx, `SELECT id, coalesce(url_avatar, ''), url_expires_at, checked_at, status FROM contacts ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) (row, error) {
			var x row
			err := r.Scan(&x.id, &x.url, &x.expires, &x.checkedAt, &x.status)
			return x, err
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	wantExpiry := start.Add(simulator.LinkLifetime)
	// checkExpiries checks that each done row's url_expires_at is its link's oe (but for the
	// rows of keep, whose expiry the test set), and returns the done rows with and without a
	// link. Failed rows (numbers the simulator refuses) stay failed: a refresh is for answers.
	checkExpiries := func(t *testing.T, rs []row, keep map[int64]bool) (links, bare []int64) {
		t.Helper()
		for _, r := range rs {
			switch {
			case r.status == "failed":
			case r.status != "done":
				t.Errorf("row %d is %s after the run", r.id, r.status)
			case keep[r.id]:
			case r.url == "" && r.expires != nil:
				t.Errorf("row %d has no link but url_expires_at %v", r.id, r.expires)
			case r.url != "" && (r.expires == nil || !r.expires.Equal(wantExpiry)):
				t.Errorf("row %d: link %s, url_expires_at %v; want %v (its oe)", r.id, r.url, r.expires, wantExpiry)
			case r.url != "":
				links = append(links, r.id)
			default:
				bare = append(bare, r.id)
			}
		}
		return links, bare
	}

	if calls, out := run(t); calls != rows {
		t.Fatalf("first run: %d getAvatar calls, want %d\n%s", calls, rows, out)
	}
	first := read(t)
	links, bare := checkExpiries(t, first, nil)
	if len(links) < 10 || len(bare) < 5 {
		t.Fatalf("%d rows with a link and %d without: the seed does not exercise both", len(links), len(bare))
	}
	soon, later, old := links[:5], links[5:10], bare[:5]
	for _, u := range []struct {
		set string
		ids []int64
	}{
		{"url_expires_at = now() + interval '12 hours'", soon},  // within 24 h: due now
		{"url_expires_at = now() + interval '36 hours'", later}, // due in 12 h: not yet
		{"checked_at = checked_at - interval '8 days'", old},    // older than 168h: due
	} {
		if _, err := b.pool.Exec(ctx, "UPDATE contacts SET "+u.set+" WHERE id = ANY($1)", u.ids); err != nil {
			t.Fatal(err)
		}
	}

	jout, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": b.dbURL}, "status", "--json")
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, stderr)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(jout), &st); err != nil {
		t.Fatal(err)
	}
	if st.LinksExpiring24h != int64(len(soon)) || st.LinksExpiring24hCapped {
		t.Errorf("links_expiring_24h %d (capped %t), want %d", st.LinksExpiring24h, st.LinksExpiring24hCapped, len(soon))
	}

	secondAt := time.Now()
	calls, out := run(t)
	if want := len(soon) + len(old); calls != want {
		t.Errorf("second run: %d getAvatar calls, want %d (the rows due for a refresh only)\n%s", calls, want, out)
	}
	if lines := logLines(out, "refresh: done rows due again are pending"); len(lines) != 1 || !strings.Contains(lines[0], `"rows":10`) {
		t.Errorf("refresh log lines %q, want one with rows 10", lines)
	}
	refreshed := map[int64]bool{}
	for _, id := range append(append([]int64{}, soon...), old...) {
		refreshed[id] = true
	}
	second := read(t)
	keep := map[int64]bool{}
	for _, id := range later {
		keep[id] = true
	}
	checkExpiries(t, second, keep)
	for i, r := range second {
		if r.status != first[i].status {
			t.Errorf("row %d was %s, is %s", r.id, first[i].status, r.status)
		}
		again := r.checkedAt.After(secondAt.Add(-time.Second)) && !r.checkedAt.Equal(first[i].checkedAt)
		if again != refreshed[r.id] {
			t.Errorf("row %d: checked at %v (first run %v), refreshed %t; want refreshed %t", r.id, r.checkedAt,
				first[i].checkedAt, again, refreshed[r.id])
		}
	}
}

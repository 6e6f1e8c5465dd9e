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
)

// TestConfirmMissingEndToEnd: against the simulator's known bug (every account without a photo
// reported missing by getAvatar, seed edition), confirm_missing turns each false "no account"
// into true through checkWhatsapp, and every row is right by the simulator's truth. With
// checkWhatsapp's quota spent after a few calls (466), the run still answers every row with
// getAvatar, and stops only confirming.
func TestConfirmMissingEndToEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		checkQuota int
	}{
		{"Confirmed", 0},
		{"QuotaSpent", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inst := simulator.Instance{ID: "1101000061", Token: "tok-confirm", RPS: 50, CheckQuota: tc.checkQuota}
			b := seedProc(t, 120, "7902", inst, simulator.Config{Seed: 7, Edition: simulator.EditionSeed, MissingRate: 1})
			srv := httptest.NewServer(b.sim)
			t.Cleanup(srv.Close)
			b.config = filepath.Join(t.TempDir(), "enrich.toml")
			toml := fmt.Sprintf("[greenapi]\napi_url = %q\nconfirm_missing = true\n\n[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = 50\n",
				srv.URL, inst.ID, inst.Token)
			if err := os.WriteFile(b.config, []byte(toml), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd, out := b.command(t, "run", "--log-format", "json")
			if err := cmd.Run(); err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			missing, wrong := 0, 0
			for _, n := range b.targets {
				tr := b.sim.Truth(n)
				if !tr.ReportedMissing {
					continue
				}
				missing++
				var exists *bool
				var source *string
				if err := b.pool.QueryRow(context.Background(), `SELECT exists_whatsapp, exists_source FROM contacts WHERE phone_number = $1`, n).
					Scan(&exists, &source); err != nil {
					t.Fatal(err)
				}
				if exists == nil || !*exists || source == nil || *source != "checkWhatsapp" {
					wrong++
				}
			}
			if missing < 10 {
				t.Fatalf("only %d of 120 numbers reported missing: the test says nothing", missing)
			}
			checks := b.sim.Stats().Instances[inst.ID].Methods["checkWhatsapp"]
			switch tc.checkQuota {
			case 0:
				if wrong != 0 {
					t.Errorf("%d of the %d accounts reported missing are not confirmed as existing (checkWhatsapp)", wrong, missing)
				}
				if checked, bad, err := verifyAgainstTruth(context.Background(), b.pool, "contacts", b.sim); err != nil || len(bad) > 0 || checked != 120 {
					t.Errorf("%d rows checked against the truth, wrong: %v, %v", checked, bad, err)
				}
			default:
				if got := missing - wrong; got != tc.checkQuota {
					t.Errorf("%d confirmed before the quota, want %d", got, tc.checkQuota)
				}
				// The quota's first 466 stops them; confirmations already under way (one per
				// worker at most) may get one too.
				if checks.Accepted <= tc.checkQuota || checks.Accepted > tc.checkQuota+16 {
					t.Errorf("checkWhatsapp got %d requests, want the %d answered, the 466 and no more than the workers' calls in flight", checks.Accepted, tc.checkQuota)
				}
				if got := b.count(t, "status = 'done'"); got+b.count(t, "status = 'failed'") != 120 {
					t.Errorf("%d rows done: every row must be answered by getAvatar", got)
				}
			}
			t.Logf("%d numbers reported missing, %d not confirmed; checkWhatsapp requests %+v\n%s", missing, wrong, checks, out)
		})
	}
}

// writeSimConfig points the run's config at a server for the simulator's instance, with extra
// [greenapi] lines.
func writeSimConfig(t *testing.T, path, url string, inst simulator.Instance, greenapiExtra string) {
	t.Helper()
	toml := fmt.Sprintf("[greenapi]\napi_url = %q\n%s\n[[greenapi.instance]]\nid = %q\ntoken = %q\nrps = 50\n",
		url, greenapiExtra, inst.ID, inst.Token)
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestExistenceEndToEnd: against the simulator in today's edition (its default: {urlAvatar,
// available}, no account answered as available true and no link), with the default
// configuration, every done personal row gets exists_whatsapp, right by the simulator's truth,
// from the avatar or from CheckWhatsapp. With CheckWhatsapp's quota spent after a few calls
// (466), the rest are left NULL with source unchecked; status, export and the run's summary count
// them; and a later run, the quota renewed, completes them.
func TestExistenceEndToEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		checkQuota int
	}{
		{"Today", 0},
		{"QuotaSpentThenCompleted", 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const rows = 200
			inst := simulator.Instance{ID: "1101000062", Token: "tok-exists", RPS: 50, CheckQuota: tc.checkQuota}
			// One start for both simulators, so links (their oe) are the same in both.
			simCfg := simulator.Config{Seed: 11, Start: time.Now()}
			b := seedProc(t, rows, "7903", inst, simCfg)
			srv := httptest.NewServer(b.sim)
			t.Cleanup(srv.Close)
			b.config = filepath.Join(t.TempDir(), "enrich.toml")
			writeSimConfig(t, b.config, srv.URL, inst, "")
			cmd, out := b.command(t, "run", "--log-format", "json", "--summary", "json")
			if err := cmd.Run(); err != nil {
				t.Fatalf("run: %v\n%s", err, out)
			}
			ctx := context.Background()
			checked, wrong, err := verifyAgainstTruth(ctx, b.pool, "contacts", b.sim)
			if err != nil || len(wrong) > 0 {
				t.Fatalf("%d rows checked against the truth, wrong: %v, %v", checked, wrong, err)
			}
			ex, err := existenceCounts(ctx, b.pool, "contacts")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("first run: %d of %d done personal rows with existence, sources %v", ex.Known, ex.Personal, ex.BySource)
			bad := b.count(t, "status = 'failed'")
			if ex.Personal+int64(bad) != rows || ex.BySource["avatar"] < 50 || ex.BySource["checkWhatsapp"] < int64(tc.checkQuota) {
				t.Fatalf("done %d + failed %d of %d; sources %v", ex.Personal, bad, rows, ex.BySource)
			}
			unknown := ex.Personal - ex.Known
			switch tc.checkQuota {
			case 0:
				if unknown != 0 || ex.BySource["checkWhatsapp"] < 40 {
					t.Fatalf("%d rows with existence unknown, %d checked; want 0 and every row without a link", unknown, ex.BySource["checkWhatsapp"])
				}
				return
			default:
				if ex.BySource["checkWhatsapp"] != int64(tc.checkQuota) || unknown < 20 || ex.BySource["unchecked"] != unknown {
					t.Fatalf("with the check quota of %d spent: sources %v, %d unknown", tc.checkQuota, ex.BySource, unknown)
				}
			}
			if !strings.Contains(out.String(), "checkWhatsapp quota spent") || !strings.Contains(out.String(), fmt.Sprintf(`"exists_unknown":%d`, unknown)) {
				t.Errorf("the run does not say the quota stopped the checks, or its summary lacks exists_unknown %d:\n%s", unknown, out)
			}
			env := map[string]string{"DATABASE_URL": b.dbURL}
			jout, stderr, err := runCLI(t, env, "status", "--json")
			var j statusJSON
			if err != nil || json.Unmarshal([]byte(jout), &j) != nil || j.ExistsUnknown != unknown || j.ExistsUnchecked != unknown {
				t.Errorf("status --json: exists_unknown %d, exists_unchecked %d (%v %s); want %d", j.ExistsUnknown, j.ExistsUnchecked, err, stderr, unknown)
			}
			if tout, _, err := runCLI(t, env, "status"); err != nil || !strings.Contains(tout, fmt.Sprintf("exists null  %d (unchecked %d)\n", unknown, unknown)) {
				t.Errorf("status: no 'exists null' line with %d (%v):\n%s", unknown, err, tout)
			}
			_, stderr, err = runCLI(t, env, "export", "--output", filepath.Join(t.TempDir(), "out.csv"))
			if err != nil || !strings.Contains(stderr, fmt.Sprintf("; %d done with existence unknown", unknown)) {
				t.Errorf("export: %v: %s; want %d with existence unknown", err, stderr, unknown)
			}

			// The quota renews (a new month): a later run takes the unchecked rows up again and
			// completes them; the rows already known are not asked again.
			renewed := inst
			renewed.CheckQuota = 0
			simCfg.Instances = []simulator.Instance{renewed}
			sim2, err := simulator.New(simCfg)
			if err != nil {
				t.Fatal(err)
			}
			srv2 := httptest.NewServer(sim2)
			t.Cleanup(srv2.Close)
			writeSimConfig(t, b.config, srv2.URL, inst, "")
			cmd, out = b.command(t, "run", "--log-format", "json")
			if err := cmd.Run(); err != nil {
				t.Fatalf("second run: %v\n%s", err, out)
			}
			if checked, wrong, err := verifyAgainstTruth(ctx, b.pool, "contacts", sim2); err != nil || len(wrong) > 0 {
				t.Fatalf("after the second run %d rows checked against the truth, wrong: %v, %v", checked, wrong, err)
			}
			ex2, err := existenceCounts(ctx, b.pool, "contacts")
			if err != nil {
				t.Fatal(err)
			}
			got := sim2.Stats().Instances[inst.ID]
			t.Logf("second run: %d of %d known, sources %v; getAvatar %d, checkWhatsapp %d calls", ex2.Known, ex2.Personal, ex2.BySource,
				got.Methods["getAvatar"].Accepted, got.Methods["checkWhatsapp"].Accepted)
			if ex2.Known != ex2.Personal || ex2.Personal != ex.Personal {
				t.Errorf("after the second run %d of %d done personal rows known, want all %d", ex2.Known, ex2.Personal, ex.Personal)
			}
			if n := int64(got.Methods["getAvatar"].Accepted); n != unknown || int64(got.Methods["checkWhatsapp"].Accepted) != unknown {
				t.Errorf("second run made %d getAvatar and %d checkWhatsapp calls, want %d each: only the unchecked rows", n,
					got.Methods["checkWhatsapp"].Accepted, unknown)
			}
		})
	}
}

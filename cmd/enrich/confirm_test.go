package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

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

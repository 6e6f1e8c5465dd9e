package simulator

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/enrich-dev/enrich/greenapi"
)

// TestPools: each instance answers on its pool's host only; on another pool's host it is
// answered 403 (whatever the token), counted in WrongHost and nowhere else, as Green API's
// wrong host does.
func TestPools(t *testing.T) {
	t.Parallel()
	const poolID, poolToken = "7103000002", "pool-token"
	b := setup(t, Config{Instances: []Instance{
		{ID: testID, Token: testToken, RPS: -1, StateRPS: -1},
		{ID: poolID, Token: poolToken, RPS: -1, StateRPS: -1, Pool: "7103"},
	}})
	if got, want := b.sim.Pools(), []string{"", "7103"}; !slices.Equal(got, want) {
		t.Fatalf("Pools() = %q, want %q", got, want)
	}
	if b.sim.Pool("") != b.sim {
		t.Errorf(`Pool("") is not the simulator itself`)
	}
	hosts := map[string]string{}
	for _, p := range b.sim.Pools() {
		srv := httptest.NewServer(b.sim.Pool(p))
		t.Cleanup(srv.Close)
		hosts[p] = srv.URL
	}
	n := find(t, b.sim, CategoryAvatar, 0)
	target, err := greenapi.ParseTarget(n)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, host, id, token string
		wantStatus            int // 0: answered
	}{
		{"default pool on its host", hosts[""], testID, testToken, 0},
		{"pool 7103 on its host, trailing slash", hosts["7103"] + "/", poolID, poolToken, 0},
		{"pool 7103 on the default host", hosts[""], poolID, poolToken, 403},
		{"default pool on 7103's host", hosts["7103"], testID, testToken, 403},
		{"wrong token on the wrong host", hosts[""], poolID, "not-the-token", 403},
		{"wrong token on the right host", hosts["7103"], poolID, "not-the-token", 401},
	}
	for _, tt := range tests {
		c, err := greenapi.New(greenapi.Config{APIURL: tt.host, IDInstance: tt.id, Token: tt.token})
		if err != nil {
			t.Fatal(err)
		}
		state, serr := c.GetStateInstance(context.Background())
		_, aerr := c.GetAvatar(context.Background(), target)
		for method, err := range map[string]error{"getStateInstance": serr, "getAvatar": aerr} {
			var e *greenapi.Error
			switch {
			case tt.wantStatus == 0 && err != nil:
				t.Errorf("%s: %s: %v, want an answer", tt.name, method, err)
			case tt.wantStatus != 0 && (!errors.As(err, &e) || e.Status != tt.wantStatus || e.Class != greenapi.ClassUnusable):
				t.Errorf("%s: %s: %v, want HTTP %d (unusable)", tt.name, method, err, tt.wantStatus)
			case tt.wantStatus == 403 && e.APIURL != tt.host:
				t.Errorf("%s: %s: the error names host %q, want %q", tt.name, method, e.APIURL, tt.host)
			}
		}
		if tt.wantStatus == 0 && state != StateAuthorized {
			t.Errorf("%s: state %q, want authorized", tt.name, state)
		}
	}
	st := b.sim.Stats()
	for id, want := range map[string]InstanceStats{
		// Each: one getStateInstance and one getAvatar on its own host; two of each on the wrong
		// host (the 7103 instance) or one (the default instance); 401s only on the right host.
		testID: {Requests: 2, Accepted: 2, WrongHost: 2},
		poolID: {Requests: 2, Accepted: 2, WrongHost: 4, Unauthorized: 2},
	} {
		got := st.Instances[id]
		if got.Requests != want.Requests || got.Accepted != want.Accepted || got.WrongHost != want.WrongHost ||
			got.Unauthorized != want.Unauthorized {
			t.Errorf("instance %s: requests %d accepted %d wrong host %d unauthorized %d, want %d %d %d %d", id,
				got.Requests, got.Accepted, got.WrongHost, got.Unauthorized, want.Requests, want.Accepted, want.WrongHost,
				want.Unauthorized)
		}
	}
	if calls := b.sim.Calls(n); calls != 2 {
		t.Errorf("%s was asked %d times on the hosts that serve its instances, want 2 (403s on the wrong host are no call)", n, calls)
	}
}

// TestPoolsNoneConfigured: without pools every instance is on the simulator's one host, as
// before pools existed, and Pools lists only the default pool.
func TestPoolsNoneConfigured(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Instances: []Instance{
		{ID: testID, Token: testToken, RPS: -1, StateRPS: -1},
		{ID: "1101000002", Token: testToken, RPS: -1, StateRPS: -1},
	}})
	if got := b.sim.Pools(); !slices.Equal(got, []string{""}) {
		t.Fatalf("Pools() = %q, want only the default pool", got)
	}
	srv := httptest.NewServer(b.sim)
	t.Cleanup(srv.Close)
	for _, id := range []string{testID, "1101000002"} {
		c, err := greenapi.New(greenapi.Config{APIURL: srv.URL, IDInstance: id, Token: testToken})
		if err != nil {
			t.Fatal(err)
		}
		if state, err := c.GetStateInstance(context.Background()); err != nil || state != StateAuthorized {
			t.Errorf("instance %s: state %q, %v; want authorized", id, state, err)
		}
	}
	// A pool nobody is configured in knows no instance.
	other := httptest.NewServer(b.sim.Pool("9903"))
	t.Cleanup(other.Close)
	c, err := greenapi.New(greenapi.Config{APIURL: other.URL, IDInstance: testID, Token: testToken})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetStateInstance(context.Background()); greenapi.ClassOf(err) != greenapi.ClassUnusable {
		t.Errorf("instance on an unconfigured pool's host: %v, want a 403", err)
	}
	if wh := b.sim.Stats().Instances[testID].WrongHost; wh != 1 {
		t.Errorf("WrongHost %d, want 1", wh)
	}
}

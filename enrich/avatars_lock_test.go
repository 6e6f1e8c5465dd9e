package enrich_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/avatars"
	"github.com/enrich-dev/enrich/greenapi"
)

// TestKeepAvatarBehindALock: with enrich_avatars locked for the whole run (a long report, a
// migration), every save gives up after its timeout (database.timeout) and the run ends by
// itself, every row answered with its link and no image: the lock holds no worker and no
// download slot until a stop.
func TestKeepAvatarBehindALock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(6)...)
	img := append([]byte{0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F', 0}, make([]byte, 64)...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(append(append([]byte{}, img...), r.URL.Path...))
	}))
	t.Cleanup(srv.Close)
	k, err := avatars.New(avatars.Config{Hosts: []string{srv.URL}, Concurrency: 1, SaveTimeout: 100 * time.Millisecond}, b.store)
	if err != nil {
		t.Fatal(err)
	}
	holder, err := b.pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(context.Background())
	if _, err := holder.Exec(context.Background(), `LOCK TABLE enrich_avatars IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		return greenapi.Avatar{ExistsWhatsapp: yes(), Available: yes(), URLAvatar: srv.URL + "/v/" + tg.String() + ".jpg"}, nil
	})
	cfg := config(api)
	cfg.Avatars = k
	// The guard stands for a stop: the run must end well before it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sum, err := runOnce(t, ctx, b.store, cfg)
	t.Logf("run behind the lock: done %d, stop %q, err %v (guard: %v)", sum.Done, sum.Stop, err, ctx.Err())
	if err != nil || ctx.Err() != nil || sum.Done != 6 {
		t.Fatalf("run with enrich_avatars locked: %+v, %v (guard %v); want all 6 rows done before any stop", sum, err, ctx.Err())
	}
	if got := b.count(t, "status = 'done' AND attempts = 0 AND url_avatar LIKE '%.jpg' AND avatar_sha256 IS NULL"); got != 6 {
		t.Errorf("%d rows done with their link and no image, want 6", got)
	}
}

package store_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/avatars"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestSaveAvatarDeadline: a lock held on enrich_avatars (a long report, a migration) does not
// hold a download until the run stops: storing the image gives up after the save timeout
// (database.timeout), the link is not kept (the row keeps its link, answered as ever), and the
// download slot is free for the next image once the lock is gone.
func TestSaveAvatarDeadline(t *testing.T) {
	t.Parallel()
	b := setup(t)
	img := append([]byte{0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F', 0}, make([]byte, 64)...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(append(append([]byte{}, img...), r.URL.Path...)) // one image per path
	}))
	t.Cleanup(srv.Close)
	k, err := avatars.New(avatars.Config{Hosts: []string{srv.URL}, Concurrency: 1, SaveTimeout: 200 * time.Millisecond}, b.store)
	if err != nil {
		t.Fatal(err)
	}

	holder, err := b.pool.Begin(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(b.ctx)
	if _, err := holder.Exec(b.ctx, `LOCK TABLE enrich_avatars IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// The run's calls context: nothing ends it but the run's stop, here the test's guard.
	calls, stop := context.WithTimeout(b.ctx, 10*time.Second)
	defer stop()
	sha, err := k.Keep(calls, srv.URL+"/v/a.jpg")
	t.Logf("Keep behind the lock: %q, %v (the run's context: %v)", sha, err, calls.Err())
	if calls.Err() != nil {
		t.Fatalf("Keep returned only when the run's context ended (%v): the lock held the download until the stop", calls.Err())
	}
	if err == nil || sha != "" || !errors.Is(err, context.DeadlineExceeded) && !isCanceled(err) {
		t.Fatalf("Keep behind a lock: %q, %v; want no image and the save's deadline", sha, err)
	}
	if err := holder.Rollback(b.ctx); err != nil {
		t.Fatal(err)
	}
	// Concurrency 1: the slot came back.
	if sha, err := k.Keep(calls, srv.URL+"/v/b.jpg"); err != nil || sha == "" {
		t.Fatalf("Keep after the lock: %q, %v", sha, err)
	}
	var n int
	if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM enrich_avatars`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("%d images kept (%v), want the one saved after the lock", n, err)
	}
}

// isCanceled says err is PostgreSQL's query_canceled (57014): the pool cancels a statement on
// the server when its context ends, and the server's answer may come first.
func isCanceled(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57014"
}

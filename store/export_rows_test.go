package store_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgbouncer"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgxpool"
)

// exportSeed is a handful of crafted rows: NULLs in every nullable column, an empty reason, a
// comma, quotes, a newline, Cyrillic and an emoji, a leading space, a link with & in it, and
// times with and without fractions of a second, one given in another zone.
const exportSeed = `
INSERT INTO contacts (id, phone_number, chat_id, status, exists_whatsapp, avatar_available, url_avatar, reason,
                      attempts, checked_at, updated_at)
OVERRIDING SYSTEM VALUE VALUES
 (1, '79001234567', NULL, 'done', true, true, 'https://pps.whatsapp.net/v/t61/x.jpg?ccb=11-4&oh=01_Q5&oe=6780A1B2', '',
  1, '2026-11-30 10:00:00.123456+00', '2026-11-30 10:00:00.123456+00'),
 (2, NULL, '120363@g.us', 'done', true, false, NULL, 'no photo, "private"',
  2, '2026-11-30 11:00:00+03', '2026-11-30 08:00:01+00'),
 (3, '79001234568', '79001234568@c.us', 'failed', NULL, NULL, NULL, E'http 400:\nline two, Привет 👋',
  5, '2026-11-29 00:00:00.5+00', '2026-11-29 00:00:00.5+00'),
 (4, '79001234569', NULL, 'pending', NULL, NULL, NULL, NULL,
  0, NULL, '2026-11-28 12:00:00+00'),
 (5, '79001234570', NULL, 'done', false, false, NULL, ' leading space',
  1, '2026-12-01 00:00:00+00', '2026-12-01 00:00:00+00')`

// exportNow is the clock of the tests of Within.
var exportNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

const exportCSVHeader = "id,phone_number,chat_id,status,exists_whatsapp,avatar_available,url_avatar,reason,attempts,checked_at,updated_at\n"

// exportCSV and exportJSONL are each seed row as Export must write it, by id.
var exportCSV = map[int]string{
	1: "1,79001234567,,done,true,true,https://pps.whatsapp.net/v/t61/x.jpg?ccb=11-4&oh=01_Q5&oe=6780A1B2,,1," +
		"2026-11-30T10:00:00.123456Z,2026-11-30T10:00:00.123456Z\n",
	2: `2,,120363@g.us,done,true,false,,"no photo, ""private""",2,2026-11-30T08:00:00Z,2026-11-30T08:00:01Z` + "\n",
	3: "3,79001234568,79001234568@c.us,failed,,,,\"http 400:\nline two, Привет 👋\",5,2026-11-29T00:00:00.5Z,2026-11-29T00:00:00.5Z\n",
	4: "4,79001234569,,pending,,,,,0,,2026-11-28T12:00:00Z\n",
	5: `5,79001234570,,done,false,false,," leading space",1,2026-12-01T00:00:00Z,2026-12-01T00:00:00Z` + "\n",
}

var exportJSONL = map[int]string{
	1: `{"id":1,"phone_number":"79001234567","chat_id":null,"status":"done","exists_whatsapp":true,"avatar_available":true,` +
		`"url_avatar":"https://pps.whatsapp.net/v/t61/x.jpg?ccb=11-4&oh=01_Q5&oe=6780A1B2","reason":"","attempts":1,` +
		`"checked_at":"2026-11-30T10:00:00.123456Z","updated_at":"2026-11-30T10:00:00.123456Z"}` + "\n",
	2: `{"id":2,"phone_number":null,"chat_id":"120363@g.us","status":"done","exists_whatsapp":true,"avatar_available":false,` +
		`"url_avatar":null,"reason":"no photo, \"private\"","attempts":2,"checked_at":"2026-11-30T08:00:00Z",` +
		`"updated_at":"2026-11-30T08:00:01Z"}` + "\n",
	3: `{"id":3,"phone_number":"79001234568","chat_id":"79001234568@c.us","status":"failed","exists_whatsapp":null,` +
		`"avatar_available":null,"url_avatar":null,"reason":"http 400:\nline two, Привет 👋","attempts":5,` +
		`"checked_at":"2026-11-29T00:00:00.5Z","updated_at":"2026-11-29T00:00:00.5Z"}` + "\n",
	4: `{"id":4,"phone_number":"79001234569","chat_id":null,"status":"pending","exists_whatsapp":null,"avatar_available":null,` +
		`"url_avatar":null,"reason":null,"attempts":0,"checked_at":null,"updated_at":"2026-11-28T12:00:00Z"}` + "\n",
	5: `{"id":5,"phone_number":"79001234570","chat_id":null,"status":"done","exists_whatsapp":false,"avatar_available":false,` +
		`"url_avatar":null,"reason":" leading space","attempts":1,"checked_at":"2026-12-01T00:00:00Z",` +
		`"updated_at":"2026-12-01T00:00:00Z"}` + "\n",
}

// expectedExport is what Export writes of the seed rows ids in format.
func expectedExport(t *testing.T, format string, ids []int) string {
	t.Helper()
	var b strings.Builder
	lines := exportJSONL
	if format == store.FormatCSV {
		b.WriteString(exportCSVHeader)
		lines = exportCSV
	}
	for _, id := range ids {
		b.WriteString(lines[id])
	}
	return b.String()
}

// TestExport (table-driven, a database each): each filter exports exactly its rows, in id order,
// and each row's every field is written exactly, in both formats.
func TestExport(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		filter store.ExportFilter
		ids    []int
	}{
		{name: "every row", ids: []int{1, 2, 3, 4, 5}},
		{name: "done", filter: store.ExportFilter{Status: store.StatusDone}, ids: []int{1, 2, 5}},
		{name: "failed", filter: store.ExportFilter{Status: store.StatusFailed}, ids: []int{3}},
		{name: "pending", filter: store.ExportFilter{Status: store.StatusPending}, ids: []int{4}},
		{name: "since a time", filter: store.ExportFilter{Since: time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)}, ids: []int{1, 2, 5}},
		{name: "since is inclusive", filter: store.ExportFilter{Since: time.Date(2026, 11, 30, 10, 0, 0, 123456000, time.UTC)}, ids: []int{1, 5}},
		{name: "since in another zone", filter: store.ExportFilter{Since: time.Date(2026, 11, 30, 13, 0, 0, 1000, time.FixedZone("MSK", 3*3600))}, ids: []int{1, 5}},
		{name: "since, done", filter: store.ExportFilter{Status: store.StatusDone, Since: time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)}, ids: []int{1, 2, 5}},
		// A row never checked counts by its updated_at.
		{name: "since, never checked", filter: store.ExportFilter{Status: store.StatusPending, Since: time.Date(2026, 11, 28, 11, 0, 0, 0, time.UTC)}, ids: []int{4}},
		{name: "since, after the update", filter: store.ExportFilter{Status: store.StatusPending, Since: time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC)}},
		{name: "within 24h", filter: store.ExportFilter{Within: 24 * time.Hour}, ids: []int{5}},
		{name: "within 36h", filter: store.ExportFilter{Within: 36 * time.Hour}, ids: []int{1, 2, 5}},
		{name: "within 36h, failed", filter: store.ExportFilter{Status: store.StatusFailed, Within: 36 * time.Hour}},
		{name: "within 84h", filter: store.ExportFilter{Within: 84 * time.Hour}, ids: []int{1, 2, 3, 4, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pool := pgtest.NewPool(t)
			s, err := store.New(pool, store.Config{Now: func() time.Time { return exportNow }})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pool.Exec(context.Background(), exportSeed); err != nil {
				t.Fatal(err)
			}
			for _, format := range []string{store.FormatCSV, store.FormatJSONL} {
				f := tc.filter
				f.Format = format
				var out bytes.Buffer
				n, err := s.Export(context.Background(), &out, f)
				if err != nil {
					t.Fatalf("%s: %v", format, err)
				}
				if n != int64(len(tc.ids)) {
					t.Errorf("%s: exported %d rows, want %d", format, n, len(tc.ids))
				}
				if want := expectedExport(t, format, tc.ids); out.String() != want {
					t.Errorf("%s: wrote\n%s\nwant\n%s", format, out.String(), want)
				}
			}
		})
	}
}

// TestExportRefuses: a bad filter is an error before the database is asked.
func TestExportRefuses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		filter store.ExportFilter
		want   string
	}{
		{store.ExportFilter{}, `format ""`},
		{store.ExportFilter{Format: "xml"}, `format "xml": use "csv" or "jsonl"`},
		{store.ExportFilter{Format: store.FormatCSV, Status: "Done"}, `status "Done"`},
		{store.ExportFilter{Format: store.FormatCSV, Within: -time.Hour}, "negative age"},
		{store.ExportFilter{Format: store.FormatCSV, Within: time.Hour, Since: exportNow}, "set one"},
	} {
		var out bytes.Buffer
		n, err := b.store.Export(b.ctx, &out, tc.filter)
		if err == nil || !strings.Contains(err.Error(), tc.want) || n != 0 || out.Len() != 0 {
			t.Errorf("Export(%+v) = %d, %v, wrote %q; want an error with %q and nothing written", tc.filter, n, err, out.String(), tc.want)
		}
	}
}

// failingWriter fails every write after the first ok bytes.
type failingWriter struct{ ok int }

var errDiskFull = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) <= w.ok {
		w.ok -= len(p)
		return len(p), nil
	}
	n := w.ok
	w.ok = 0
	return n, errDiskFull
}

// TestExportWriteError: a failing output stops the export with an *ExportWriteError wrapping the
// writer's error, so the CLI tells it from a database error; rows span several fetches.
func TestExportWriteError(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.exec(t, `INSERT INTO contacts (phone_number, status) SELECT (79000000000 + i)::text, 'done' FROM generate_series(1, $1::int) i`,
		store.ExportFetch+500)
	for _, format := range []string{store.FormatCSV, store.FormatJSONL} {
		n, err := b.store.Export(b.ctx, &failingWriter{ok: 200_000}, store.ExportFilter{Format: format})
		var we *store.ExportWriteError
		if !errors.As(err, &we) || !errors.Is(err, errDiskFull) {
			t.Errorf("%s: error %v, want an ExportWriteError wrapping %v", format, err, errDiskFull)
		}
		if n == 0 || n >= store.ExportFetch+500 {
			t.Errorf("%s: %d rows counted before the error, want some but not all", format, n)
		}
		// The connection went back to the pool usable: its transaction is over.
		var got int64
		if _, err := b.store.Export(b.ctx, &bytes.Buffer{}, store.ExportFilter{Format: format}); err != nil {
			t.Errorf("%s: export after the failed one: %v", format, err)
		}
		if err := b.pool.QueryRow(b.ctx, `SELECT count(*) FROM contacts`).Scan(&got); err != nil || got != store.ExportFetch+500 {
			t.Errorf("%s: count after: %d, %v", format, got, err)
		}
	}
}

// TestExportSnapshot: the export is one snapshot. A row inserted and a row changed once it has
// begun (at its first write to the output, during the first of four fetches) are not seen,
// though the cursor reaches them in a later fetch.
func TestExportSnapshot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const rows = 3*store.ExportFetch + 10
	b.exec(t, `INSERT INTO contacts (phone_number, status) SELECT (79000000000 + i)::text, 'done' FROM generate_series(1, $1::int) i`, rows)
	var changed bool
	w := writerFunc(func(p []byte) (int, error) {
		if !changed {
			changed = true
			b.exec(t, `UPDATE contacts SET status = 'failed', reason = 'changed' WHERE id = (SELECT max(id) FROM contacts)`)
			b.exec(t, `INSERT INTO contacts (phone_number, status) VALUES ('79999999999', 'done')`)
		}
		return len(p), nil
	})
	n, err := b.store.Export(b.ctx, w, store.ExportFilter{Format: store.FormatJSONL, Status: store.StatusDone})
	if err != nil {
		t.Fatal(err)
	}
	if !changed || n != rows {
		t.Errorf("exported %d rows (changed meanwhile: %v), want %d", n, changed, rows)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestExportPgBouncer: through PgBouncer in transaction mode with one server connection, which
// another client keeps asking for, the export's cursor (several fetches) holds in its
// transaction: the output is the direct connection's.
func TestExportPgBouncer(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	direct := newPool(t, dbURL, store.PoolOptions{})
	if _, err := direct.Exec(context.Background(), exportSeed); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Exec(context.Background(), `INSERT INTO contacts (id, phone_number, status, checked_at) OVERRIDING SYSTEM VALUE
		SELECT 100 + i, (78000000000 + i)::text, 'done', '2026-11-30 12:00:00+00' FROM generate_series(1, $1::int) i`, 2*store.ExportFetch+1); err != nil {
		t.Fatal(err)
	}
	bounced := newPool(t, pgbouncer.Start(t, dbURL, pgbouncer.Options{PoolSize: 1}), store.PoolOptions{Pooler: store.PoolerTransaction, MaxConns: 2})
	export := func(pool *pgxpool.Pool) (string, int64) {
		t.Helper()
		s, err := store.New(pool, store.Config{Now: func() time.Time { return exportNow }})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		n, err := s.Export(context.Background(), &out, store.ExportFilter{Format: store.FormatCSV, Status: store.StatusDone, Within: 36 * time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return out.String(), n
	}
	want, wantN := export(direct)
	if wantN != 3+2*store.ExportFetch+1 {
		t.Fatalf("direct export: %d rows, want %d", wantN, 3+2*store.ExportFetch+1)
	}
	// Another client of the bouncer keeps asking between the export's statements.
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := bounced.Exec(context.Background(), `SELECT count(*) FROM contacts`); err != nil {
				done <- err
				return
			}
		}
	}()
	got, n := export(bounced)
	close(stop)
	if err := <-done; err != nil {
		t.Errorf("other client: %v", err)
	}
	if n != wantN || got != want {
		t.Errorf("through PgBouncer: %d rows, want %d; output equal: %v", n, wantN, got == want)
	}
}

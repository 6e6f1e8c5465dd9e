package store

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Export formats, the values of ExportFilter.Format.
const (
	// FormatCSV is RFC 4180 CSV (encoding/csv) with a header row of the column names: fields
	// quoted only when they need it, lines ending in \n, NULL and the empty string both as an
	// empty field, booleans as true/false, times as RFC 3339 in UTC.
	FormatCSV = "csv"
	// FormatJSONL is one JSON object per line, keys in column order: NULL as null, booleans
	// and numbers as JSON's, times as RFC 3339 strings in UTC, & < > not escaped (avatar links
	// stay readable).
	FormatJSONL = "jsonl"
)

// ExportFetch is how many rows one FETCH from Export's cursor returns. Rows are encoded as they
// arrive off the socket, so it bounds round trips, not memory.
const ExportFetch = 10_000

// exportColumns are the columns Export writes, in order: the contract columns of migration 0001
// that users' tools read. Columns added by later migrations are not exported, so an export's
// shape does not change under a script when the table grows a column.
var exportColumns = [...]string{"id", "phone_number", "chat_id", "status", "exists_whatsapp", "avatar_available",
	"url_avatar", "reason", "attempts", "checked_at", "updated_at"}

// ExportColumns lists the columns Export writes, in order (a fresh slice each call): the CSV
// header, and the keys of each JSON object.
func ExportColumns() []string { return append([]string(nil), exportColumns[:]...) }

// ExportFilter selects the rows Export writes and how.
type ExportFilter struct {
	// Format is FormatCSV or FormatJSONL.
	Format string
	// Status is StatusDone, StatusFailed or StatusPending; "" exports every row.
	Status string
	// Since, when not zero, exports only rows checked at or after it: their checked_at (when the
	// API's answer or the failure was written), or updated_at for a row never checked. It is the
	// same notion of "checked" as RequeueFilter.OlderThan's.
	Since time.Time
	// Within, when positive, is Since given as an age: rows checked at most this long before the
	// start of the export's transaction, by the database's clock (or Config.Now), so that a cron
	// job's "--since 24h" does not depend on the clock of the machine it runs on. At most one of
	// Since and Within may be set.
	Within time.Duration
}

// Export's statements. The cursor's name is fixed: it lives only inside Export's transaction.
const (
	// sqlExportDeclare opens the cursor: $1 the status or NULL for any, $2 the earliest checked
	// time or NULL for any. ORDER BY id is the primary key's order, so the plan is an index scan
	// that streams from the first row (a cursor is planned for its first rows), never a sort.
	sqlExportDeclare = `
DECLARE enrich_export NO SCROLL CURSOR FOR
SELECT id, phone_number, chat_id, status, exists_whatsapp, avatar_available, url_avatar, reason, attempts,
       checked_at, updated_at, exists_source
FROM %[1]s
WHERE ($1::text IS NULL OR status = $1::text)
  AND ($2::timestamptz IS NULL OR coalesce(checked_at, updated_at) >= $2::timestamptz)
ORDER BY id`

	sqlExportFetch = `FETCH FORWARD %d FROM enrich_export`
)

// exportRow is one row as scanned, NULLs as nil pointers.
type exportRow struct {
	ID              int64      `json:"id"`
	PhoneNumber     *string    `json:"phone_number"`
	ChatID          *string    `json:"chat_id"`
	Status          string     `json:"status"`
	ExistsWhatsapp  *bool      `json:"exists_whatsapp"`
	AvatarAvailable *bool      `json:"avatar_available"`
	URLAvatar       *string    `json:"url_avatar"`
	Reason          *string    `json:"reason"`
	Attempts        int32      `json:"attempts"`
	CheckedAt       *time.Time `json:"checked_at"`
	UpdatedAt       time.Time  `json:"updated_at"`
}

// Export writes the rows f selects to w in f.Format, in id order, and returns how many it
// wrote. It is meant for tables of any size: the rows are read through a server-side cursor
// and encoded as they arrive, so memory stays flat whatever the table's size.
//
// The whole export reads one snapshot: one REPEATABLE READ, READ ONLY transaction, so a run
// writing meanwhile never makes a row appear twice or a count disagree with the file. That
// transaction holds back VACUUM on the table while it lasts (seconds per million rows). It
// works through a transaction-mode pooler, since the cursor lives inside the transaction.
//
// An error (a cancelled ctx, the database, or w) stops it; the rows written before it are
// counted in the result, and w may hold a partial last row. Errors from w are wrapped in
// an *ExportWriteError, so a caller can tell the output's failure from the database's.
func (s *Store) Export(ctx context.Context, w io.Writer, f ExportFilter) (int64, error) {
	c, err := s.ExportCounted(ctx, w, f)
	return c.Rows, err
}

// ExportCounts is what an export wrote.
type ExportCounts struct {
	// Rows is how many rows were written.
	Rows int64
	// ExistsUnknown is how many of them are done personal rows whose exists_whatsapp is NULL
	// and that a run with the checks on completes (Report.ExistsUnknown's rows): the ones a
	// reader of the file cannot tell the existence of yet.
	ExistsUnknown int64
}

// ExportCounted is Export, counting also the rows whose existence is unknown.
func (s *Store) ExportCounted(ctx context.Context, w io.Writer, f ExportFilter) (ExportCounts, error) {
	var c ExportCounts
	enc, err := newExportEncoder(f.Format, w)
	if err != nil {
		return c, err
	}
	switch f.Status {
	case "", StatusDone, StatusFailed, StatusPending:
	default:
		return c, fmt.Errorf("export: status %q: use %q, %q, %q or \"\" for every row", f.Status, StatusDone, StatusFailed, StatusPending)
	}
	if f.Within < 0 {
		return c, fmt.Errorf("export: negative age %v", f.Within)
	}
	if f.Within > 0 && !f.Since.IsZero() {
		return c, errors.New("export: both a time (Since) and an age (Within) given: set one")
	}
	var status *string
	if f.Status != "" {
		status = &f.Status
	}
	var n int64
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var since *time.Time
		switch {
		case f.Within > 0:
			if err := tx.QueryRow(ctx, sqlRequeueCutoff, s.clock(), f.Within.Microseconds()).Scan(&since); err != nil {
				return fmt.Errorf("export: cutoff: %w", err)
			}
		case !f.Since.IsZero():
			since = &f.Since
		}
		if _, err := tx.Exec(ctx, fmt.Sprintf(sqlExportDeclare, s.table.Sanitize()), status, since); err != nil {
			return fmt.Errorf("export: open cursor: %w", err)
		}
		if err := enc.header(); err != nil {
			return &ExportWriteError{Err: err}
		}
		fetch := fmt.Sprintf(sqlExportFetch, ExportFetch)
		var r exportRow
		var source *string
		dest := []any{&r.ID, &r.PhoneNumber, &r.ChatID, &r.Status, &r.ExistsWhatsapp, &r.AvatarAvailable, &r.URLAvatar,
			&r.Reason, &r.Attempts, &r.CheckedAt, &r.UpdatedAt, &source}
		for {
			rows, err := tx.Query(ctx, fetch)
			if err != nil {
				return fmt.Errorf("export: fetch after %d rows: %w", n, err)
			}
			var got int
			var werr error
			for rows.Next() {
				if err := rows.Scan(dest...); err != nil {
					rows.Close()
					return fmt.Errorf("export: read row after id %d: %w", r.ID, err)
				}
				if werr = enc.row(&r); werr != nil {
					break
				}
				got++
				n++
				if r.Status == StatusDone && r.ExistsWhatsapp == nil && (source == nil || *source != "badPhoneNumber") &&
					(r.ChatID == nil || !strings.HasSuffix(*r.ChatID, "@g.us")) {
					c.ExistsUnknown++
				}
			}
			rows.Close()
			if werr != nil {
				return &ExportWriteError{Err: fmt.Errorf("write row id %d: %w", r.ID, werr)}
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("export: fetch after %d rows: %w", n, err)
			}
			if got < ExportFetch {
				break
			}
		}
		if err := enc.flush(); err != nil {
			return &ExportWriteError{Err: err}
		}
		return nil
	})
	c.Rows = n
	return c, err
}

// ExportWriteError is Export's error when writing to its io.Writer failed (a full disk, a closed
// pipe), as opposed to reading the table.
type ExportWriteError struct{ Err error }

func (e *ExportWriteError) Error() string { return "export: " + e.Err.Error() }

func (e *ExportWriteError) Unwrap() error { return e.Err }

// exportEncoder writes rows in one format.
type exportEncoder struct {
	header func() error
	row    func(*exportRow) error
	flush  func() error
}

func newExportEncoder(format string, w io.Writer) (*exportEncoder, error) {
	switch format {
	case FormatCSV:
		cw := csv.NewWriter(w) // buffered
		rec := make([]string, len(exportColumns))
		return &exportEncoder{
			header: func() error { return cw.Write(exportColumns[:]) },
			row: func(r *exportRow) error {
				rec[0] = strconv.FormatInt(r.ID, 10)
				rec[1], rec[2] = csvText(r.PhoneNumber), csvText(r.ChatID)
				rec[3] = r.Status
				rec[4], rec[5] = csvBool(r.ExistsWhatsapp), csvBool(r.AvatarAvailable)
				rec[6], rec[7] = csvText(r.URLAvatar), csvText(r.Reason)
				rec[8] = strconv.FormatInt(int64(r.Attempts), 10)
				rec[9] = ""
				if r.CheckedAt != nil {
					rec[9] = exportTime(*r.CheckedAt)
				}
				rec[10] = exportTime(r.UpdatedAt)
				return cw.Write(rec)
			},
			flush: func() error { cw.Flush(); return cw.Error() },
		}, nil
	case FormatJSONL:
		bw := bufio.NewWriterSize(w, 64<<10)
		je := json.NewEncoder(bw)
		je.SetEscapeHTML(false)
		return &exportEncoder{
			header: func() error { return nil },
			row: func(r *exportRow) error {
				// Times in UTC: pgx scans them in the local zone, and time.Time's JSON is
				// RFC 3339 in its own zone.
				if r.CheckedAt != nil {
					t := r.CheckedAt.UTC()
					r.CheckedAt = &t
				}
				r.UpdatedAt = r.UpdatedAt.UTC()
				return je.Encode(r)
			},
			flush: bw.Flush,
		}, nil
	}
	return nil, fmt.Errorf("export: format %q: use %q or %q", format, FormatCSV, FormatJSONL)
}

// csvText is a nullable text column as a CSV field: NULL is empty.
func csvText(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// csvBool is a nullable boolean as a CSV field: true, false, or empty for NULL.
func csvBool(b *bool) string {
	if b == nil {
		return ""
	}
	return strconv.FormatBool(*b)
}

// exportTime is a time as the export writes it: RFC 3339 in UTC, with the fraction of a second
// PostgreSQL stored (microseconds at most, trailing zeros dropped).
func exportTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

package store

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// CopyChunkSize is how many contacts a caller of EnqueueCopy should hand it at once: one
// transaction each, large enough that COPY's per-transaction cost (a staging table, one INSERT)
// is small beside its rows, small enough that a chunk in memory is a few megabytes and a chunk
// lost to an error is a few seconds of work to redo.
const CopyChunkSize = 20_000

// sqlStagingCreate is the staging table of one EnqueueCopy transaction: a temporary table,
// dropped at commit, so it is private to the transaction whatever connection a pooler lends and
// leaves nothing behind. ord keeps the input's order, so the first of two forms of one target in
// the input is the one stored.
const sqlStagingCreate = `
CREATE TEMP TABLE enrich_enqueue_staging (
    ord          int NOT NULL,
    phone_number text,
    chat_id      text
) ON COMMIT DROP`

// sqlStagingInsert moves the staged rows into the contacts table, skipping any target already
// present or earlier in the chunk (through the unique indexes: phone_number, chat_id and the
// target key of migration 0006, so 79001234567 and 79001234567@c.us are one target).
const sqlStagingInsert = `
INSERT INTO %[1]s (phone_number, chat_id, next_attempt_at)
SELECT s.phone_number, s.chat_id, coalesce($1::timestamptz, now())
FROM enrich_enqueue_staging AS s
ORDER BY s.ord
ON CONFLICT DO NOTHING`

// EnqueueCopy is Enqueue for large inputs: the contacts are sent with COPY into a staging table
// and inserted from it with one statement, in one transaction, so a chunk of CopyChunkSize rows
// costs two round trips instead of the parameters of one huge statement. It returns how many
// were new; the rest were targets already in the table or earlier in cs. Every contact needs a
// phone number or a chat id; cs is checked before anything is written. An error leaves nothing
// of cs inserted, and calling it again with the same contacts is safe.
func (s *Store) EnqueueCopy(ctx context.Context, cs []NewContact) (inserted int64, err error) {
	if len(cs) == 0 {
		return 0, nil
	}
	for i, c := range cs {
		if c.PhoneNumber == "" && c.ChatID == "" {
			return 0, fmt.Errorf("enqueue: contact %d has neither a phone number nor a chat id", i)
		}
		if strings.ContainsRune(c.PhoneNumber, 0) || strings.ContainsRune(c.ChatID, 0) {
			return 0, fmt.Errorf("enqueue: contact %d contains a NUL byte", i)
		}
	}
	insert := fmt.Sprintf(sqlStagingInsert, s.table.Sanitize())
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlStagingCreate); err != nil {
			return fmt.Errorf("create staging table: %w", err)
		}
		src := pgx.CopyFromSlice(len(cs), func(i int) ([]any, error) {
			return []any{int32(i), nullable(cs[i].PhoneNumber), nullable(cs[i].ChatID)}, nil
		})
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"enrich_enqueue_staging"}, []string{"ord", "phone_number", "chat_id"}, src); err != nil {
			return fmt.Errorf("copy %d rows: %w", len(cs), err)
		}
		tag, err := tx.Exec(ctx, insert, s.clock())
		if err != nil {
			return fmt.Errorf("insert from staging: %w", err)
		}
		inserted = tag.RowsAffected()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	return inserted, nil
}

// nullable is nil (SQL NULL) for "", else s.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

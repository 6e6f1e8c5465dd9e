package store

import (
	"context"
	"errors"
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
	if err := s.CheckEnqueue(); err != nil {
		return 0, err
	}
	if len(cs) == 0 {
		return 0, nil
	}
	if err := checkContacts(cs); err != nil {
		return 0, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlStagingCreate); err != nil {
			return fmt.Errorf("create staging table: %w", err)
		}
		inserted, err = s.copyStaged(ctx, tx, cs)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	return inserted, nil
}

// checkContacts refuses a contact without a target or with a NUL byte, before anything is sent.
func checkContacts(cs []NewContact) error {
	for i, c := range cs {
		if c.PhoneNumber == "" && c.ChatID == "" {
			return fmt.Errorf("enqueue: contact %d has neither a phone number nor a chat id", i)
		}
		if strings.ContainsRune(c.PhoneNumber, 0) || strings.ContainsRune(c.ChatID, 0) {
			return fmt.Errorf("enqueue: contact %d contains a NUL byte", i)
		}
	}
	return nil
}

// copyStaged sends cs into the (empty) staging table of tx and inserts them from it.
func (s *Store) copyStaged(ctx context.Context, tx pgx.Tx, cs []NewContact) (int64, error) {
	src := pgx.CopyFromSlice(len(cs), func(i int) ([]any, error) {
		return []any{int32(i), nullable(cs[i].PhoneNumber), nullable(cs[i].ChatID)}, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"enrich_enqueue_staging"}, []string{"ord", "phone_number", "chat_id"}, src); err != nil {
		return 0, fmt.Errorf("copy %d rows: %w", len(cs), err)
	}
	tag, err := tx.Exec(ctx, fmt.Sprintf(sqlStagingInsert, s.table.Sanitize()), s.clock())
	if err != nil {
		return 0, fmt.Errorf("insert from staging: %w", err)
	}
	return tag.RowsAffected(), nil
}

// sqlStagingEmpty empties the staging table of an Import between two chunks.
const sqlStagingEmpty = `TRUNCATE enrich_enqueue_staging`

// Import is an enqueue in one transaction, committed whole or not at all: `enrich enqueue
// --dry-run` (rolled back: the counts of what would be inserted, nothing written) and
// --max-rejected (committed only when few enough lines were rejected). It holds one connection
// and its transaction for the whole input; plain enqueues commit chunk by chunk (EnqueueCopy).
type Import struct {
	s  *Store
	tx pgx.Tx
}

// BeginImport starts an Import.
func (s *Store) BeginImport(ctx context.Context) (*Import, error) {
	if err := s.CheckEnqueue(); err != nil {
		return nil, err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("enqueue: begin: %w", err)
	}
	if _, err := tx.Exec(ctx, sqlStagingCreate); err != nil {
		_ = tx.Rollback(ctx)
		return nil, fmt.Errorf("enqueue: create staging table: %w", err)
	}
	return &Import{s: s, tx: tx}, nil
}

// EnqueueCopy is Store.EnqueueCopy within the import's transaction: targets earlier in the
// import count as present.
func (im *Import) EnqueueCopy(ctx context.Context, cs []NewContact) (int64, error) {
	if len(cs) == 0 {
		return 0, nil
	}
	if err := checkContacts(cs); err != nil {
		return 0, err
	}
	n, err := im.s.copyStaged(ctx, im.tx, cs)
	if err == nil {
		_, err = im.tx.Exec(ctx, sqlStagingEmpty)
	}
	if err != nil {
		return 0, fmt.Errorf("enqueue: %w", err)
	}
	return n, nil
}

// Commit writes everything the import inserted.
func (im *Import) Commit(ctx context.Context) error {
	if err := im.tx.Commit(ctx); err != nil {
		return fmt.Errorf("enqueue: commit: %w", err)
	}
	return nil
}

// Rollback drops everything the import inserted; after Commit it does nothing.
func (im *Import) Rollback(ctx context.Context) error {
	if err := im.tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("enqueue: roll back: %w", err)
	}
	return nil
}

// nullable is nil (SQL NULL) for "", else s.
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

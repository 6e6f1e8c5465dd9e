package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// NotifyChannel is the channel on which rows becoming due are announced, with the decimal OID of
// their contacts table as the payload (TG_RELID::text in a trigger): migration 0016's trigger on
// INSERT, Requeue, and any trigger a user adds to a table of theirs that feeds enrich. It is a
// contract with those triggers: it never changes.
const NotifyChannel = "enrich_due"

// listenCloseTimeout bounds the goodbye of Listen's connection once it is done.
const listenCloseTimeout = time.Second

const (
	// sqlTableOID is the table's OID, the payload its notifications carry; NULL when there is no
	// such table.
	sqlTableOID = `SELECT to_regclass($1)::oid`
	// sqlNotifyDue announces that rows of the table named $1 became due.
	sqlNotifyDue = `SELECT pg_notify('` + NotifyChannel + `', to_regclass($1)::oid::text)`
)

// TableOID is the OID of the Store's table, as NotifyChannel's payloads name it.
func (s *Store) TableOID(ctx context.Context) (uint32, error) {
	var oid *uint32
	if err := s.pool.QueryRow(ctx, sqlTableOID, s.Table()).Scan(&oid); err != nil {
		return 0, fmt.Errorf("listen: the oid of %s: %w", s.Table(), err)
	}
	if oid == nil {
		return 0, fmt.Errorf("listen: table %s does not exist: run enrich migrate", s.Table())
	}
	return *oid, nil
}

// notifyDue tells listeners that rows of the table became due.
func (s *Store) notifyDue(ctx context.Context) error {
	if _, err := s.pool.Exec(ctx, sqlNotifyDue, s.Table()); err != nil {
		return fmt.Errorf("notify %s: %w", NotifyChannel, err)
	}
	return nil
}

// Listen holds a connection of its own (a LISTEN belongs to its session, which a pooled
// connection is not) made with the pool's configuration, listens on NotifyChannel, and calls due
// for every notification naming the Store's table, once right after it starts listening (rows may
// have become due while nobody listened), until ctx ends or the connection fails. It returns the
// failure, with the step that failed; ctx's error when ctx ended. due must not block. Behind a
// pooler in transaction mode LISTEN does not work: do not call it there.
func (s *Store) Listen(ctx context.Context, due func()) error {
	oid, err := s.TableOID(ctx)
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("listen: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listenCloseTimeout)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{NotifyChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listen: LISTEN %s: %w", NotifyChannel, err)
	}
	due()
	payload := strconv.FormatUint(uint64(oid), 10)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("listen: waiting for a notification: %w", err)
		}
		if n.Channel == NotifyChannel && n.Payload == payload {
			due()
		}
	}
}

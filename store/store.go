// Package store owns every SQL statement enrich runs against the contacts table: claiming due
// rows under a lease, writing results back fenced on the lease holder, enqueueing targets, the
// status report, and the schema (Migrate).
//
// Concurrency model: many runs (pods) share one table. A run claims rows with Claim, which leases
// them to an owner string that must be unique per run (e.g. pod name + pid + random). Results are
// written with Write (or its wrappers) and only land while the row is still leased to that owner,
// so a run that lost its lease (it was too slow, or was presumed dead and its rows re-claimed)
// can never overwrite newer work. A run killed with -9 leaves its rows leased; they become due
// again when the lease expires, with nothing to clean up.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Status values of the status column.
const (
	// StatusPending rows wait to be claimed (or are leased right now).
	StatusPending = "pending"
	// StatusDone rows were answered by the API.
	StatusDone = "done"
	// StatusFailed rows will not be tried again without a person resetting them.
	StatusFailed = "failed"
)

// budgetTable is the instances' shared budget (migrations/0003, moved by 0013 into the budget
// schema).
const budgetTable = "enrich_instances"

// refundsTable records each run's slots given back to each instance's day, so none is given
// back twice (see migrations/0012_refunds.sql); it lives beside budgetTable.
const refundsTable = "enrich_refunds"

// BudgetSchemaDefault is the schema that holds the instances' shared budget: one schema for the
// whole database, so that an instance used for contacts tables in two schemas has one budget,
// not one per schema (migrations/0013_budget_schema.sql).
const BudgetSchemaDefault = "enrich"

// budgetIdentifier names a budget table in schema (default BudgetSchemaDefault).
func budgetIdentifier(schema, name string) pgx.Identifier {
	if schema == "" {
		schema = BudgetSchemaDefault
	}
	return pgx.Identifier{schema, name}
}

// ChunkSize is how many rows one statement of Enqueue or Write carries at most, so a huge input
// becomes several statements of bounded size (memory on both sides, statement time) instead of
// one unbounded one.
const ChunkSize = 5000

// reasonsLimit is how many reasons Status reports.
const reasonsLimit = 20

// Config configures a Store. The zero value is the production configuration.
type Config struct {
	// Table is the contacts table. Default "contacts" (TableDefault). Schema-qualified names
	// ("crm.contacts") are allowed; each part is always quoted as an identifier, so it is taken
	// literally and is case-sensitive. See ParseTable.
	Table string

	// BudgetSchema is the schema of the instances' shared budget (enrich_instances,
	// enrich_refunds), the same for every contacts table of the database. Default
	// BudgetSchemaDefault ("enrich"). It must be the one Migrate was given.
	BudgetSchema string

	// Source, when set, is the user's own table enriched in place, and Table is its state table
	// (StateTable): claims read the source's phone as it is written (Source.Region), and every
	// write of an answer writes the mapped columns too (Source.WriteBack). Default nil: Table
	// is a contacts table filled by Enqueue.
	Source *Source

	// Now is the clock used for leases, schedules and checked_at. Default nil: the database's
	// now(), one clock for all pods whatever their own clocks say. Tests set a stub to move time
	// without sleeping.
	Now func() time.Time
}

// Store runs enrich's statements against one contacts table. It is safe for concurrent use; it
// holds no state besides its configuration and the prepared SQL text.
type Store struct {
	pool  *pgxpool.Pool
	table pgx.Identifier
	now   func() time.Time
	src   *source // nil: no source table
	q     queries
	runs  runQueries     // runs.go
	est   statusQueries  // status.go
	rq    requeueQueries // requeue.go
}

// queries is every statement with the table filled in, built once by New.
type queries struct {
	claim, claimAfter, renew                       string
	complete, reschedule, fail, release            string
	enqueue, check                                 string
	statusCounts, statusReasons, statusQueue       string
	budgetInsert, reserve, reserveState, throttled string
	quotaSpent, handOver, trim, keepers            string
	saveAvatar                                     string
	instances                                      string // instances.go
}

// New returns a Store for cfg.Table on pool, validating the table name so that a bad
// configuration fails at start-up rather than at the first query.
func New(pool *pgxpool.Pool, cfg Config) (*Store, error) {
	if pool == nil {
		return nil, errors.New("store: nil pool")
	}
	if cfg.Table == "" {
		cfg.Table = TableDefault
	}
	id, err := ParseTable(cfg.Table)
	if err != nil {
		return nil, err
	}
	if cfg.BudgetSchema != "" {
		if err := CheckSchema(cfg.BudgetSchema); err != nil {
			return nil, err
		}
	}
	var src *source
	if cfg.Source != nil {
		if src, err = newSource(*cfg.Source); err != nil {
			return nil, err
		}
	}
	t, budget := id.Sanitize(), budgetIdentifier(cfg.BudgetSchema, budgetTable).Sanitize()
	runs := sharedIdentifier(id, runsTable).Sanitize()
	refunds := budgetIdentifier(cfg.BudgetSchema, refundsTable).Sanitize()
	f := func(q string) string { return fmt.Sprintf(q, t, budget) }
	return &Store{
		pool:  pool,
		table: id,
		now:   cfg.Now,
		src:   src,
		q: queries{
			claim:         f(sqlClaim),
			claimAfter:    f(strings.Replace(sqlClaim, "/*after*/", sqlClaimAfter, 1)),
			renew:         f(sqlRenew),
			check:         fmt.Sprintf(sqlCheck, t, budget, runs, refunds),
			complete:      src.wrap(f(sqlComplete)),
			reschedule:    src.wrap(f(sqlReschedule)),
			fail:          src.wrap(f(sqlFail)),
			release:       f(sqlRelease),
			enqueue:       f(sqlEnqueue),
			statusCounts:  f(sqlStatusCounts),
			statusReasons: f(sqlStatusReasons),
			statusQueue:   f(sqlStatusQueue),
			budgetInsert:  f(sqlBudgetInsert),
			reserve:       fmt.Sprintf(sqlReserve, t, budget, refunds),
			reserveState:  f(sqlReserveState),
			throttled:     f(sqlThrottled),
			quotaSpent:    f(sqlQuotaSpent),
			handOver:      f(sqlHandOver),
			trim:          f(sqlTrim),
			keepers:       f(sqlKeepers),
			saveAvatar:    fmt.Sprintf(sqlSaveAvatar, sharedIdentifier(id, avatarsTable).Sanitize()),
			instances:     f(sqlInstances),
		},
		runs: newRunQueries(t, runs),
		est:  newStatusQueries(t),
		rq:   newRequeueQueries(t),
	}, nil
}

// Table is the quoted table name the Store runs against, for logs and messages.
func (s *Store) Table() string { return s.table.Sanitize() }

// clock is the $now parameter: nil (SQL NULL, meaning the database's now()) unless Config.Now
// is set.
func (s *Store) clock() *time.Time {
	if s.now == nil {
		return nil
	}
	t := s.now()
	return &t
}

// Lease names one claim of one row: the row's id and the token of the claim that took it. Every
// write-back, renewal and release names the Lease it acts for and lands only while that claim is
// the row's current one, so a run that lost a row and claimed it again cannot write through the
// older claim.
type Lease struct {
	// ID is the row's primary key.
	ID int64
	// Token is the claim's token, as passed to Claim.
	Token int64
}

// Claimed is a row leased to the caller by Claim: what the engine needs to make the call.
type Claimed struct {
	// Lease is the row's id and the claim's token, to pass back in Done, Retry, Failure,
	// Release or Renew.
	Lease
	// PhoneNumber is the phone_number column; nil when the row names a chat instead.
	PhoneNumber *string
	// ChatID is the chat_id column; nil when the row names a phone number instead.
	ChatID *string
	// Attempts is how many earlier tries of the row did not succeed (each Retry, and each
	// Failure with Attempted, adds one), for the engine's max-attempts policy.
	Attempts int
	// Due is the row's next_attempt_at before the claim moved it: where the row stood in the
	// claim order, for a Cursor.
	Due time.Time
	// Invalid, set only for a source table's row, says why its phone column is not a phone
	// number or chatId (phone.Normalize's words): the engine fails it without a call.
	Invalid error
}

// Cursor is a place in the claim order (next_attempt_at, id): ClaimAfter starts after it. The
// zero Cursor is the start.
type Cursor struct {
	Due time.Time
	ID  int64
}

// After is the cursor past every row of cs (and past c itself).
func (c Cursor) After(cs []Claimed) Cursor {
	for _, r := range cs {
		if r.Due.After(c.Due) || r.Due.Equal(c.Due) && r.ID > c.ID {
			c = Cursor{Due: r.Due, ID: r.ID}
		}
	}
	return c
}

// Claim leases up to n due rows to owner for lease under the claim token token and returns them,
// most overdue first in the table's order but in no guaranteed order in the slice. It is one
// statement in its own transaction, committed when it returns: the rows are then the caller's
// until the lease ends (see Renew to extend it).
//
// A due row is pending, has next_attempt_at <= now, and is not leased (or its lease expired).
// Leased rows get next_attempt_at = locked_until = now + lease, so a run that dies leaves rows
// that become due again by themselves. Concurrent claimers never get the same row.
//
// token tells this claim from the owner's others: the owner must use a new token for every
// claim (a counter is enough, since owner is unique per run). If ctx ends while the statement
// runs, the pool's cancel request (see NewPoolConfig) makes PostgreSQL abandon it; should the
// claim have committed anyway, its rows come back when the lease expires.
func (s *Store) Claim(ctx context.Context, owner string, token int64, n int, lease time.Duration) ([]Claimed, error) {
	return s.ClaimAfter(ctx, owner, token, n, lease, Cursor{})
}

// ClaimAfter is Claim starting after cursor in the claim order, so that a run that claims batch
// after batch does not walk again, each time, over the index entries its own earlier claims left
// behind: while a long transaction holds vacuum back, those pile up ahead of the due rows and a
// claim from the start gets slower with every row done. A row due before the cursor that a claim
// from it cannot see (it was locked by another run then, or inserted with an old due time) is
// taken by the next claim from the start: the caller claims from the start whenever a claim
// after the cursor comes back short.
func (s *Store) ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after Cursor) ([]Claimed, error) {
	if owner == "" {
		return nil, errors.New("claim batch: empty owner: give each run a unique owner")
	}
	if n <= 0 {
		return nil, nil
	}
	if lease <= 0 {
		return nil, fmt.Errorf("claim batch: lease %v: must be positive", lease)
	}
	q, args := s.q.claim, []any{s.clock(), n, owner, lease.Microseconds(), token}
	if after != (Cursor{}) {
		q, args = s.q.claimAfter, append(args, after.Due, after.ID)
	}
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("claim batch: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Claimed, error) {
		c := Claimed{Lease: Lease{Token: token}}
		err := r.Scan(&c.ID, &c.PhoneNumber, &c.ChatID, &c.Attempts, &c.Due)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("claim batch: %w", err)
	}
	if s.src != nil {
		for i := range out {
			s.src.target(&out[i])
		}
	}
	return out, nil
}

// Renew extends the lease of rows the owner still holds to now + lease and returns the ids it
// renewed. A row missing from the result is no longer the caller's under that Lease (it was
// written back, or its lease expired and another claim took it): the caller must not call the
// API for it. Renewing costs one statement of at most ChunkSize rows per chunk.
func (s *Store) Renew(ctx context.Context, owner string, leases []Lease, lease time.Duration) ([]int64, error) {
	if owner == "" {
		return nil, errors.New("renew leases: empty owner")
	}
	if lease <= 0 {
		return nil, fmt.Errorf("renew leases: lease %v: must be positive", lease)
	}
	renewed := make([]int64, 0, len(leases))
	for c := range chunks(len(leases)) {
		ids, tokens := leaseArrays(leases[c.lo:c.hi])
		rows, err := s.pool.Query(ctx, s.q.renew, s.clock(), owner, ids, tokens, lease.Microseconds())
		if err != nil {
			return renewed, fmt.Errorf("renew leases: %w", err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return renewed, fmt.Errorf("renew leases: %w", err)
		}
		renewed = append(renewed, got...)
	}
	return renewed, nil
}

// leaseArrays splits leases into parallel id and token arrays for unnest.
func leaseArrays(ls []Lease) (ids, tokens []int64) {
	ids, tokens = make([]int64, len(ls)), make([]int64, len(ls))
	for i, l := range ls {
		ids[i], tokens[i] = l.ID, l.Token
	}
	return ids, tokens
}

// Done is a row the API answered. It becomes status 'done' with these values, an empty reason
// and checked_at = now, and is unlocked; attempts is unchanged.
type Done struct {
	// Lease is the claim of the row, as Claim returned it.
	Lease
	// ExistsWhatsapp is whether the number has WhatsApp; nil stores NULL (unknown), which is
	// not the same as false.
	ExistsWhatsapp *bool
	// AvatarAvailable is whether an avatar can be fetched; nil stores NULL (unknown).
	AvatarAvailable *bool
	// URLAvatar is stored as given: "" means checked and no URL (NULL means never checked).
	URLAvatar string
	// ExistsSource is where ExistsWhatsapp came from ("getAvatar", "avatar", "checkWhatsapp"),
	// or, with ExistsWhatsapp nil, why it is unknown ("unchecked", "badPhoneNumber"); "" stores
	// NULL. See migrations/0014 and enrich's Source* constants.
	ExistsSource string
	// URLExpiresAt is when URLAvatar stops working (greenapi.LinkExpiry), stored in
	// url_expires_at so that Refresh makes the row due again before then; nil stores NULL (no
	// link, or no expiry in it: the row is refreshed by age alone).
	URLExpiresAt *time.Time
	// AvatarSHA256 names the kept image of URLAvatar in enrich_avatars (SaveAvatar), hex; ""
	// when none was kept: the row then keeps the image it had, unless URLAvatar is "" (no
	// avatar any more), which clears it.
	AvatarSHA256 string
}

// Retry is a row whose call should be tried again later (a transient failure). It stays
// pending with attempts+1, reason, next_attempt_at = now + Delay, and is unlocked.
type Retry struct {
	// Lease is the claim of the row, as Claim returned it.
	Lease
	// Reason says why, for the status report; it replaces the previous reason.
	Reason string
	// Delay is how long until the row is due again; 0 means due at once.
	Delay time.Duration
}

// Failure is a row that will not be tried again. It becomes status 'failed' with reason and
// checked_at = now, and is unlocked.
type Failure struct {
	// Lease is the claim of the row, as Claim returned it.
	Lease
	// Reason says why, for the status report and for people.
	Reason string
	// Attempted is true when an API call was spent on the row (attempts grows by one), false
	// when it failed local validation before any call.
	Attempted bool
}

// Batch is the results of one flush: every list may be empty.
type Batch struct {
	// Done rows the API answered.
	Done []Done
	// Retry rows to try again later.
	Retry []Retry
	// Failed rows to give up on.
	Failed []Failure
	// Released rows to give back untouched (claimed but not called, e.g. on stop): unlocked and
	// due at once, attempts, status and reason unchanged.
	Released []Lease
}

// Len is the number of rows in b, so callers can decide when to flush.
func (b Batch) Len() int { return len(b.Done) + len(b.Retry) + len(b.Failed) + len(b.Released) }

// Written is how many rows Write actually changed per kind. A row counts only if it was still
// leased to the owner under the given Lease, so a shortfall means lost leases (another claim took
// the rows), not errors.
type Written struct {
	// Done, Retried, Failed and Released count the rows changed by each part of the Batch.
	Done, Retried, Failed, Released int64
}

// Total is the sum of the counts.
func (w Written) Total() int64 { return w.Done + w.Retried + w.Failed + w.Released }

// Write stores b in one round trip and one transaction: a pgx.Batch of up to four UPDATE
// statements (one per non-empty kind, split every ChunkSize rows), sent as one pipeline with a
// single Sync, which PostgreSQL runs as one implicit transaction: all of them land or, on any
// error, none do. Each statement is fenced on locked_by = owner and lease_token = the Lease's
// token: rows no longer leased to owner under that claim are skipped and not counted. Statements run in the order Done, Retry, Failed, Released; an id
// listed twice lands once (the first unlocks it, so the later fence fails).
//
// Write is safe to retry after an error: nothing was written, and the rows are still leased to
// owner unless the lease expired meanwhile. (When the connection broke after the commit, the
// retry finds the rows already written and counts them as lost; the rows themselves are right.) A deadlock (SQLSTATE 40P01) is possible only when two
// runs write the same rows, i.e. one of them has lost its lease; retrying is right then too.
func (s *Store) Write(ctx context.Context, owner string, b Batch) (Written, error) {
	var w Written
	if owner == "" {
		return w, errors.New("write batch: empty owner")
	}
	if b.Len() == 0 {
		return w, nil
	}
	now := s.clock()
	var pb pgx.Batch
	// counters[i] is where the rows affected by the i-th queued statement are added.
	var counters []*int64

	for c := range chunks(len(b.Done)) {
		part := b.Done[c.lo:c.hi]
		ids, tokens := make([]int64, len(part)), make([]int64, len(part))
		exists := make([]*bool, len(part))
		avatar := make([]*bool, len(part))
		urls, sources := make([]string, len(part)), make([]string, len(part))
		expires, shas := make([]*time.Time, len(part)), make([]string, len(part))
		for i, d := range part {
			expires[i], shas[i] = d.URLExpiresAt, d.AvatarSHA256
			ids[i], tokens[i], exists[i], avatar[i], urls[i] = d.ID, d.Token, d.ExistsWhatsapp, d.AvatarAvailable, d.URLAvatar
			sources[i] = d.ExistsSource
		}
		pb.Queue(s.q.complete, now, owner, ids, tokens, exists, avatar, urls, sources, expires, shas)
		counters = append(counters, &w.Done)
	}
	for c := range chunks(len(b.Retry)) {
		part := b.Retry[c.lo:c.hi]
		ids, tokens := make([]int64, len(part)), make([]int64, len(part))
		reasons := make([]string, len(part))
		delays := make([]int64, len(part))
		for i, r := range part {
			if r.Delay < 0 {
				return w, fmt.Errorf("write batch: retry of row %d: negative delay %v", r.ID, r.Delay)
			}
			ids[i], tokens[i], reasons[i], delays[i] = r.ID, r.Token, r.Reason, r.Delay.Microseconds()
		}
		pb.Queue(s.q.reschedule, now, owner, ids, tokens, reasons, delays)
		counters = append(counters, &w.Retried)
	}
	for c := range chunks(len(b.Failed)) {
		part := b.Failed[c.lo:c.hi]
		ids, tokens := make([]int64, len(part)), make([]int64, len(part))
		reasons := make([]string, len(part))
		attempted := make([]bool, len(part))
		for i, f := range part {
			ids[i], tokens[i], reasons[i], attempted[i] = f.ID, f.Token, f.Reason, f.Attempted
		}
		pb.Queue(s.q.fail, now, owner, ids, tokens, reasons, attempted)
		counters = append(counters, &w.Failed)
	}
	for c := range chunks(len(b.Released)) {
		ids, tokens := leaseArrays(b.Released[c.lo:c.hi])
		pb.Queue(s.q.release, now, owner, ids, tokens)
		counters = append(counters, &w.Released)
	}

	br := s.pool.SendBatch(ctx, &pb)
	for _, n := range counters {
		tag, err := br.Exec()
		if err != nil {
			_ = br.Close()
			return Written{}, fmt.Errorf("write batch: %w", err)
		}
		*n += tag.RowsAffected()
	}
	if err := br.Close(); err != nil {
		return Written{}, fmt.Errorf("write batch: %w", err)
	}
	return w, nil
}

// Complete writes done rows; see Write and Done. It returns how many rows changed.
func (s *Store) Complete(ctx context.Context, owner string, ds []Done) (int64, error) {
	w, err := s.Write(ctx, owner, Batch{Done: ds})
	return w.Done, err
}

// Reschedule writes rows to retry later; see Write and Retry. It returns how many rows changed.
func (s *Store) Reschedule(ctx context.Context, owner string, rs []Retry) (int64, error) {
	w, err := s.Write(ctx, owner, Batch{Retry: rs})
	return w.Retried, err
}

// Fail writes failed rows; see Write and Failure. It returns how many rows changed.
func (s *Store) Fail(ctx context.Context, owner string, fs []Failure) (int64, error) {
	w, err := s.Write(ctx, owner, Batch{Failed: fs})
	return w.Failed, err
}

// Release gives claimed rows back untouched, due at once; see Write and Batch.Released. It
// returns how many rows changed.
func (s *Store) Release(ctx context.Context, owner string, leases []Lease) (int64, error) {
	w, err := s.Write(ctx, owner, Batch{Released: leases})
	return w.Released, err
}

// NewContact is a target to enqueue. Exactly the non-empty fields are stored; "" means NULL.
type NewContact struct {
	// PhoneNumber is stored in phone_number.
	PhoneNumber string
	// ChatID is stored in chat_id.
	ChatID string
}

// Enqueue inserts contacts as pending rows due now and returns how many were new. A contact whose
// phone number or chat id is already in the table, or earlier in cs, is skipped. Every contact
// needs a phone number or a chat id; cs is checked before anything is written.
//
// Each ChunkSize contacts are one statement committed on its own, so an error part-way leaves the
// earlier chunks inserted; calling Enqueue again with the same input is safe and inserts the rest.
func (s *Store) Enqueue(ctx context.Context, cs []NewContact) (inserted int64, err error) {
	if err := s.CheckEnqueue(); err != nil {
		return 0, err
	}
	for i, c := range cs {
		if c.PhoneNumber == "" && c.ChatID == "" {
			return 0, fmt.Errorf("enqueue: contact %d has neither a phone number nor a chat id", i)
		}
		if strings.ContainsRune(c.PhoneNumber, 0) || strings.ContainsRune(c.ChatID, 0) {
			return 0, fmt.Errorf("enqueue: contact %d contains a NUL byte", i)
		}
	}
	for c := range chunks(len(cs)) {
		part := cs[c.lo:c.hi]
		phones := make([]string, len(part))
		chats := make([]string, len(part))
		for i, nc := range part {
			phones[i], chats[i] = nc.PhoneNumber, nc.ChatID
		}
		tag, err := s.pool.Exec(ctx, s.q.enqueue, s.clock(), phones, chats)
		if err != nil {
			return inserted, fmt.Errorf("enqueue: rows %d-%d: %w", c.lo, c.hi-1, err)
		}
		inserted += tag.RowsAffected()
	}
	return inserted, nil
}

// Check makes sure the table exists and has every column this version of enrich uses, so that a
// run stops with a clear remedy before it spends a single API call on rows it could not write.
func (s *Store) Check(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, s.q.check)
	if err == nil {
		rows.Close()
		err = rows.Err()
	}
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		var old bool
		if err := s.pool.QueryRow(ctx, sqlCheckExistsSource, s.Table()).Scan(&old); err != nil {
			return fmt.Errorf("check table %s: read its exists_source check: %w", s.Table(), err)
		}
		if old {
			return fmt.Errorf("check table %s: its exists_source check predates migration 0014 and would refuse this "+
				"version's answers ('avatar', 'unchecked', 'badPhoneNumber'): run `enrich migrate` to upgrade it", s.Table())
		}
		if s.src != nil {
			if err := s.checkSource(ctx); err != nil {
				return fmt.Errorf("check table %s: %w", s.Table(), err)
			}
		}
		return nil
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table
		return fmt.Errorf("check table %s: it does not exist: run `enrich migrate` with the same database.url and database.table: %w",
			s.Table(), err)
	case errors.As(err, &pgErr) && pgErr.Code == "42703": // undefined_column
		return fmt.Errorf("check table %s: it lacks columns this version of enrich needs: run `enrich migrate` to upgrade it: %w",
			s.Table(), err)
	}
	return fmt.Errorf("check table %s: %w", s.Table(), err)
}

// ReasonCount is how many rows of a status carry a reason.
type ReasonCount struct {
	// Status is the rows' status: a pending row's reason is why it waits, a failed row's why
	// it was given up.
	Status string
	// Reason is the reason column as written by Reschedule or Fail.
	Reason string
	// Count is how many rows have this status and reason.
	Count int64
}

// Report is the state of the table for `enrich status`.
type Report struct {
	// ByStatus counts rows per status; pending, done and failed are always present.
	ByStatus map[string]int64
	// Reasons are the 20 commonest non-empty reasons, most frequent first.
	Reasons []ReasonCount
	// Due is pending rows a Claim would take now: next_attempt_at <= now, not leased.
	Due int64
	// Leased is rows whose lease has not expired (being worked on, or held by a dead run).
	Leased int64
	// Scheduled is pending rows waiting for a later next_attempt_at, not leased.
	Scheduled int64
	// OldestDue is the earliest next_attempt_at among due rows; nil when none is due.
	OldestDue *time.Time
	// ExistsUnknown is done personal rows whose exists_whatsapp is NULL that a run with the
	// checks on (greenapi.confirm_missing) completes: every such row but those CheckWhatsapp
	// refused (exists_source 'badPhoneNumber'). Groups are not counted: existence is not
	// checked for them.
	ExistsUnknown int64
	// Unchecked is those of ExistsUnknown a run left 'unchecked' (CheckWhatsapp's quota spent,
	// the check failed, or the checks off); the others were answered before existence was
	// checked.
	Unchecked int64
}

// Status reports the table's state from one consistent snapshot (a read-only repeatable-read
// transaction). It scans the whole table: use Due for a cheap progress figure.
func (s *Store) Status(ctx context.Context) (Report, error) {
	r := Report{ByStatus: map[string]int64{StatusPending: 0, StatusDone: 0, StatusFailed: 0}}
	now := s.clock()
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, s.q.statusCounts)
		if err != nil {
			return fmt.Errorf("count by status: %w", err)
		}
		var status string
		var n int64
		if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error {
			r.ByStatus[status] = n
			return nil
		}); err != nil {
			return fmt.Errorf("count by status: %w", err)
		}

		rows, err = tx.Query(ctx, s.q.statusReasons, reasonsLimit)
		if err != nil {
			return fmt.Errorf("count reasons: %w", err)
		}
		r.Reasons, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ReasonCount])
		if err != nil {
			return fmt.Errorf("count reasons: %w", err)
		}

		if err := tx.QueryRow(ctx, s.q.statusQueue, now).Scan(&r.Due, &r.Leased, &r.Scheduled, &r.OldestDue); err != nil {
			return fmt.Errorf("count queue: %w", err)
		}
		if err := tx.QueryRow(ctx, s.est.existsUnknown, nil).Scan(&r.ExistsUnknown, &r.Unchecked); err != nil {
			return fmt.Errorf("count rows whose existence is unknown: %w", err)
		}
		return nil
	})
	if err != nil {
		return Report{}, fmt.Errorf("status: %w", err)
	}
	return r, nil
}

// Due counts rows a Claim would take now, as DueUpTo with StatusExactBelow: exact up to 100,000,
// an estimate past it, so that every run's start (its ETA) reads a bounded number of rows
// whatever the table's size.
func (s *Store) Due(ctx context.Context) (int64, error) {
	n, _, err := s.DueUpTo(ctx, StatusExactBelow)
	return n, err
}

// DueUpTo counts rows a Claim would take now, exactly up to limit, walking the due index in
// claim order (as Overview does) and stopping after limit+1 rows. Past limit, estimated is true
// and n is the pending rows PostgreSQL's statistics estimate (as Overview's ByStatus), never
// less than limit; limit itself when the table has no statistics.
func (s *Store) DueUpTo(ctx context.Context, limit int64) (n int64, estimated bool, err error) {
	if limit <= 0 {
		limit = StatusExactBelow
	}
	if err := s.pool.QueryRow(ctx, s.est.dueCapped, s.clock(), limit+1).Scan(&n); err != nil {
		return 0, false, fmt.Errorf("count due rows up to %d: %w", limit+1, err)
	}
	if n <= limit {
		return n, false, nil
	}
	var st tableStats
	err = s.pool.QueryRow(ctx, s.est.stats, s.Table()).Scan(&st.reltuples, &st.relpages, &st.pages, &st.analyzedAt,
		&st.statistics, &st.statusVals, &st.statusFreq, &st.reasonVals, &st.reasonFreq)
	if err != nil {
		return 0, false, fmt.Errorf("count due rows: read statistics: %w", err)
	}
	n = limit
	if rows := st.rows(); rows > 0 && st.statistics {
		n = max(limit, estimateStatuses(rows, st.statusVals, st.statusFreq)[StatusPending])
	}
	return n, true, nil
}

// ExplainClaim returns PostgreSQL's plan for a Claim of n rows, without running it (EXPLAIN
// without ANALYZE executes nothing), so people and tests can check that claims walk the partial
// due index instead of scanning the table.
func (s *Store) ExplainClaim(ctx context.Context, n int) (string, error) {
	if n <= 0 {
		n = 1
	}
	rows, err := s.pool.Query(ctx, "EXPLAIN "+s.q.claim, s.clock(), n, "explain", time.Minute.Microseconds(), int64(0))
	if err != nil {
		return "", fmt.Errorf("explain claim: %w", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("explain claim: %w", err)
	}
	return strings.Join(lines, "\n"), nil
}

// span is a half-open range [lo, hi) of a slice.
type span struct{ lo, hi int }

// chunks yields ranges of at most ChunkSize covering [0, n).
func chunks(n int) func(yield func(span) bool) {
	return func(yield func(span) bool) {
		for lo := 0; lo < n; lo += ChunkSize {
			if !yield(span{lo, min(lo+ChunkSize, n)}) {
				return
			}
		}
	}
}

package enrich

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// dbBackoff spaces the retries of a failing database call: quick enough that a failover of a
// few seconds costs little, slow enough that a database in trouble is not hammered.
var dbBackoff = Backoff{Base: 250 * time.Millisecond, Max: 5 * time.Second}

// retryableDB reports whether a failed database call may succeed if tried again: the connection
// broke or could not be made, the call ran out of its own deadline (a lock held for a while), or
// PostgreSQL said the failure was transient (serialization, deadlock, shutdown, too many
// connections). A statement PostgreSQL rejected for any other reason (a missing table, a
// permission) fails the same way every time. A cancelled context is the caller's stop, not a
// failure.
func retryableDB(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		// Not an answer from PostgreSQL: a dial, a read or a write on the connection failed, or
		// the call's own deadline passed.
		return true
	}
	switch pgErr.Code[:2] {
	case "08", // connection exception
		"53", // insufficient resources: too many connections, out of memory, disk full
		"57": // operator intervention: admin or crash shutdown, cannot connect now, query canceled
		return true
	}
	switch pgErr.Code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"55P03": // lock_not_available
		return true
	}
	return false
}

// dbRetry follows one kind of database call (claims, writes) through a run of failures, so that
// it is retried with backoff for RetryFor and no longer. It is used by one goroutine.
type dbRetry struct {
	// since is when the current run of failures began; zero while the calls succeed.
	since time.Time
	n     int
}

// failed records a failure at now and says how long to wait before the next try, or false when
// the error is not worth retrying or the failures have lasted retryFor.
func (d *dbRetry) failed(err error, now time.Time, retryFor time.Duration, rnd func() float64) (time.Duration, bool) {
	if !retryableDB(err) {
		return 0, false
	}
	if d.since.IsZero() {
		d.since = now
	}
	if now.Sub(d.since) >= retryFor {
		return 0, false
	}
	wait := dbBackoff.Full(d.n, rnd)
	d.n++
	return wait, true
}

// databaseFailed records err, a failure of the kind of database call d follows, and says how long
// to wait before the next try and whether it is the first of a run of failures (to warn once);
// once the database has stayed away for RetryFor (or the error is not worth retrying) it stops
// the run and returns the ErrDatabase it stopped it with. The claimer, the lease renewer and each
// instance's budget use it; the writer keeps its answers and says how many it could not write.
func (r *Runner) databaseFailed(d *dbRetry, err error) (wait time.Duration, first bool, stop error) {
	wait, retry := d.failed(err, r.cfg.Now(), r.cfg.RetryFor, r.cfg.Rand)
	if !retry {
		stop = fmt.Errorf("%w: %w", ErrDatabase, err)
		r.cancelStop(stop)
		return 0, false, stop
	}
	return wait, d.n == 1, nil
}

// ok records a success and reports how long the database had been failing (0 if it was not).
func (d *dbRetry) ok(now time.Time) time.Duration {
	if d.since.IsZero() {
		return 0
	}
	down := now.Sub(d.since)
	*d = dbRetry{}
	return down
}

package store

// The statements the Store runs. Each is a named constant shaped like a .sql file; New fills in
// %[1]s, the quoted (maybe schema-qualified) table, once.
//
// Time: every statement takes the clock as a nullable timestamptz parameter and uses
// coalesce($n::timestamptz, now()): production passes NULL, so PostgreSQL's clock is the only one
// that matters across pods; tests pass a stub to move time without sleeping. updated_at is always
// the database's real now(): it records when the row was written, for people, not for the queue.
//
// Durations travel as bigint microseconds and become intervals in SQL, so no interval encoding
// question arises.

// sqlClaim leases up to $2 due rows to owner $3 for $4 microseconds under claim token $5.
//
// The CTE walks the partial due index (next_attempt_at, id) WHERE status = 'pending' in order and
// stops after $2 rows; SKIP LOCKED lets concurrent claimers pass each other's rows, and the
// re-check PostgreSQL does on locking drops rows another claimer just took. The UPDATE moves
// next_attempt_at to the end of the lease together with locked_until, so leased rows leave the
// due prefix of the index (claims stay O(batch) however many rows are leased) and become due
// again exactly when the lease expires. attempts is not changed: a claim is not an API call.
const sqlClaim = `
WITH due AS (
    SELECT id, next_attempt_at
    FROM %[1]s
    WHERE status = 'pending'
      AND next_attempt_at <= coalesce($1::timestamptz, now()) /*after*/
      AND (locked_until IS NULL OR locked_until <= coalesce($1::timestamptz, now()))
    ORDER BY next_attempt_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE %[1]s AS t
SET locked_by       = $3,
    lease_token     = $5::bigint,
    locked_until    = coalesce($1::timestamptz, now()) + $4::bigint * interval '1 microsecond',
    next_attempt_at = coalesce($1::timestamptz, now()) + $4::bigint * interval '1 microsecond',
    updated_at      = now()
FROM due
WHERE t.id = due.id
RETURNING t.id, t.phone_number, t.chat_id, t.attempts, due.next_attempt_at`

// sqlClaimAfter is the condition sqlClaim takes, in place of /*after*/, for ClaimAfter: only rows
// after the cursor ($6, $7) in the claim order. A row comparison, so the index scan starts at
// the cursor.
const sqlClaimAfter = `AND (next_attempt_at, id) > ($6::timestamptz, $7::bigint)`

// sqlRenew extends owner $2's leases named by ($3 ids, $4 tokens) by $5 microseconds from now and
// returns the ids it renewed. next_attempt_at moves with locked_until, as in sqlClaim. updated_at is
// left alone: a renewal changes nothing a person reads.
const sqlRenew = `
UPDATE %[1]s AS t
SET locked_until    = coalesce($1::timestamptz, now()) + $5::bigint * interval '1 microsecond',
    next_attempt_at = coalesce($1::timestamptz, now()) + $5::bigint * interval '1 microsecond'
FROM unnest($3::bigint[], $4::bigint[], array_fill($2::text, ARRAY[cardinality($3::bigint[])])) AS u(id, token, owner)
WHERE t.id = u.id
  AND t.locked_by = u.owner
  AND t.lease_token = u.token
RETURNING t.id`

// The four write-back statements share a shape: parallel arrays unnested into rows, joined on id,
// and fenced on the claim (locked_by = owner and lease_token = the claim's token), so a run whose
// lease expired and whose rows were claimed again, by another run or by itself, changes nothing
// through the old claim. Each unlocks the row.
//
// The owner comes in as a column of the unnested rows (array_fill), not as a condition on the
// table: statistics taken while no row was leased say locked_by = $2 matches about one row, and
// with that the planner scans the table for the owner's rows and rescans the arrays for each, a
// thousand times a thousand comparisons per write (seconds, past the database timeout, at 200,000
// rows and batches of 1,000). As a join condition it leaves the plan to the id: one index lookup
// per row. sqlRenew has the same shape for the same reason. TestWritePlan checks every one.

// sqlComplete marks rows done. $1 now, $2 owner, $3.. arrays. reason is emptied: the last
// retry's reason no longer applies. attempts is left alone: it counts tries that did not succeed
// (Retry, and Failure with Attempted), which is what the engine's max-attempts policy reads.
// url_expires_at ($9, NULL for no link or no oe) is the link's expiry, which Refresh reads.
// avatar_sha256 ($10) names the kept image: a new one replaces it, none keeps the old one (the
// download failed; the image is still that avatar's), and an answer with no avatar clears it.
const sqlComplete = `
UPDATE %[1]s AS t
SET status           = 'done',
    exists_whatsapp  = u.exists_whatsapp,
    avatar_available = u.avatar_available,
    url_avatar       = u.url_avatar,
    exists_source    = nullif(u.exists_source, ''),
    avatar_sha256    = CASE WHEN u.avatar_sha256 <> '' THEN u.avatar_sha256
                            WHEN u.url_avatar = '' THEN NULL
                            ELSE t.avatar_sha256 END,
    url_expires_at   = u.url_expires_at,
    reason           = '',
    checked_at       = coalesce($1::timestamptz, now()),
    locked_by        = NULL,
    locked_until     = NULL,
    lease_token      = NULL,
    updated_at       = now()
FROM unnest($3::bigint[], $4::bigint[], $5::boolean[], $6::boolean[], $7::text[], $8::text[],
            $9::timestamptz[], $10::text[], array_fill($2::text, ARRAY[cardinality($3::bigint[])]))
    AS u(id, token, exists_whatsapp, avatar_available, url_avatar, exists_source, url_expires_at, avatar_sha256, owner)
WHERE t.id = u.id
  AND t.locked_by = u.owner
  AND t.lease_token = u.token`

// sqlReschedule keeps rows pending and due again after their delay ($6, microseconds).
const sqlReschedule = `
UPDATE %[1]s AS t
SET attempts        = t.attempts + 1,
    next_attempt_at = coalesce($1::timestamptz, now()) + u.delay_us * interval '1 microsecond',
    reason          = u.reason,
    locked_by       = NULL,
    locked_until    = NULL,
    lease_token     = NULL,
    updated_at      = now()
FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::bigint[], array_fill($2::text, ARRAY[cardinality($3::bigint[])]))
    AS u(id, token, reason, delay_us, owner)
WHERE t.id = u.id
  AND t.locked_by = u.owner
  AND t.lease_token = u.token`

// sqlFail marks rows failed for good; attempts grows only when an API call was spent ($6).
const sqlFail = `
UPDATE %[1]s AS t
SET status       = 'failed',
    reason       = u.reason,
    attempts     = t.attempts + CASE WHEN u.attempted THEN 1 ELSE 0 END,
    checked_at   = coalesce($1::timestamptz, now()),
    locked_by    = NULL,
    locked_until = NULL,
    lease_token  = NULL,
    updated_at   = now()
FROM unnest($3::bigint[], $4::bigint[], $5::text[], $6::boolean[], array_fill($2::text, ARRAY[cardinality($3::bigint[])]))
    AS u(id, token, reason, attempted, owner)
WHERE t.id = u.id
  AND t.locked_by = u.owner
  AND t.lease_token = u.token`

// sqlRelease gives rows back untouched (a stop before their call): unlocked and due now.
const sqlRelease = `
UPDATE %[1]s AS t
SET next_attempt_at = coalesce($1::timestamptz, now()),
    locked_by       = NULL,
    locked_until    = NULL,
    lease_token     = NULL,
    updated_at      = now()
FROM unnest($3::bigint[], $4::bigint[], array_fill($2::text, ARRAY[cardinality($3::bigint[])])) AS u(id, token, owner)
WHERE t.id = u.id
  AND t.locked_by = u.owner
  AND t.lease_token = u.token`

// sqlEnqueue inserts new targets ("" means NULL), due now, skipping those already present (in the
// table or earlier in the same input) through the unique partial indexes.
const sqlEnqueue = `
INSERT INTO %[1]s (phone_number, chat_id, next_attempt_at)
SELECT nullif(u.phone_number, ''), nullif(u.chat_id, ''), coalesce($1::timestamptz, now())
FROM unnest($2::text[], $3::text[]) AS u(phone_number, chat_id)
ON CONFLICT DO NOTHING`

// sqlCheckExistsSource says whether table $1 still has the exists_source check of migration 0008,
// which refuses the sources of 0014 ('avatar', 'unchecked', 'badPhoneNumber'): a write of this
// version's answers would fail on it.
const sqlCheckExistsSource = `
SELECT EXISTS (
    SELECT FROM pg_constraint
    WHERE conrelid = $1::text::regclass AND contype = 'c'
      AND pg_get_constraintdef(oid) LIKE '%exists_source%'
      AND pg_get_constraintdef(oid) NOT LIKE '%unchecked%')`

// sqlCheck reads no row but names every column enrich uses, of the contacts table, of the
// instances' budget (%[2]s), of the runs table (%[3]s) and of the refunds (%[4]s), so a missing table or one from an older
// migration fails it with 42P01 or 42703.
const sqlCheck = `
SELECT t.id, t.phone_number, t.chat_id, t.status, t.exists_whatsapp, t.avatar_available, t.url_avatar, t.reason,
       t.attempts, t.next_attempt_at, t.checked_at, t.locked_by, t.locked_until, t.lease_token, t.created_at,
       t.updated_at, t.exists_source, t.url_expires_at, t.avatar_sha256, b.instance_id, b.tat, b.tat_owner, b.state_tat, b.answered_at, b.rate, b.cut_at, b.raised_at,
       b.not_before, b.day, b.used, b.quota_day, b.headroom, b.wanted_by, b.wanted_at, b.wanted_kept,
       b.tat_table, b.tat_kept, b.wanted_table, r.id, r.table_name, r.owner, r.host, r.version, r.started_at,
       r.seen_at, r.finished_at, r.outcome, r.stop, r.exit_code, r.done, r.failed, r.rescheduled, r.released,
       r.claimed, r.rate_limited, r.calls, r.error, f.instance_id, f.owner, f.refunded, f.prev, f.seen_at
FROM %[1]s AS t, (SELECT * FROM %[2]s LIMIT 0) AS b, (SELECT * FROM %[3]s LIMIT 0) AS r,
     (SELECT * FROM %[4]s LIMIT 0) AS f
LIMIT 0`

// sqlStatusCounts splits the table by status.
const sqlStatusCounts = `
SELECT status, count(*)
FROM %[1]s
GROUP BY status`

// sqlStatusReasons lists the commonest non-empty reasons per status.
const sqlStatusReasons = `
SELECT status, reason, count(*) AS n
FROM %[1]s
WHERE reason <> ''
GROUP BY status, reason
ORDER BY n DESC, status, reason
LIMIT $1`

// sqlStatusQueue splits pending work by when it can run. One scan of the table: it is for a
// person's status command, not for a loop.
const sqlStatusQueue = `
WITH c AS (SELECT coalesce($1::timestamptz, now()) AS now)
SELECT
    count(*) FILTER (WHERE t.status = 'pending' AND t.next_attempt_at <= c.now
                       AND (t.locked_until IS NULL OR t.locked_until <= c.now)),
    count(*) FILTER (WHERE t.locked_until > c.now),
    count(*) FILTER (WHERE t.status = 'pending' AND t.next_attempt_at > c.now
                       AND (t.locked_until IS NULL OR t.locked_until <= c.now)),
    min(t.next_attempt_at) FILTER (WHERE t.status = 'pending' AND t.next_attempt_at <= c.now
                       AND (t.locked_until IS NULL OR t.locked_until <= c.now))
FROM %[1]s AS t, c`

// The budget statements run against %[2]s, the instances' shared budget table (one per schema;
// see migrations/0003_instances.sql). $1 is the clock, $2 the instance, as elsewhere.

// sqlBudgetInsert makes an instance's row on its first use, its schedule starting now.
const sqlBudgetInsert = `
INSERT INTO %[2]s (instance_id, rate, tat, cut_at, raised_at, not_before)
VALUES ($2, $3, coalesce($1::timestamptz, now()), 'epoch', 'epoch', 'epoch')
ON CONFLICT (instance_id) DO NOTHING`

// sqlReserve hands out a block of $4 slots under the row lock: the rate first climbs back
// toward $3 (by $11 of it every $12 µs, once $10 µs have passed since the last cut), then the
// block starts at the next free slot ($14 µs later when the last block was another run's than
// $13; never in the past, never before a Retry-After pause ends) and moves it on by the block's
// length. Slots are 1/rate apart, widened by the instance's headroom: what the last cut left
// (sqlThrottled), narrowed by $16 every $17 µs since, never below $9. $15 says the caller had a
// real answer since its last request. A daily cap ($6 > 0) grants at most what is left of
// the day ($7 time zone, $8 µs into the day); $5 unsent slots of the caller's last block are
// given back to the day's count first, once: the caller ($13) says it gave $18 back before, and
// %[3]s records its total, so a request asked again after a lost reply gives back only what
// the record has not counted (ref). With $19 > 0, a run other than the one whose block came
// last gets no slots while that run has booked more than $19 µs ahead (busy): it gives way, the
// start says when the other's bookings end, and the refusal of a run ($13 not empty: not a read
// before a run, nor $22: a run standing by) is recorded (wanted_by, wanted_at, wanted_kept, $20:
// how many instances the caller keeps, and wanted_table, $21: the table it works on) for the run
// that keeps the instance to see. A grant records who took it, with $20 and $21 (tat_owner,
// tat_kept, tat_table): a refused run learns who keeps the instance.
//
// The clock is read after the row lock (lk, then t: clock_timestamp() of the locked row), not
// now(), the transaction's start: a reservation that waited for another's lock would otherwise
// date its grant, and the caller's offset from the database's clock, before the wait, and place
// its slots early, over the other process's block. A day on which the instance answered 466 grants none.
// The day only moves forward: when the clocks go back over a day start that falls in the
// repeated hour (Europe/Berlin at 02:30 on the last Sunday of October), the local time says the
// day before for a while, and then the day again; the stored day stays, and so does its count,
// which resets only on a later day.
const sqlReserve = `
WITH ref AS (
    INSERT INTO %[3]s AS r (instance_id, owner, refunded, seen_at)
    SELECT $2, coalesce($13::text, ''), $18::bigint + $5::bigint, coalesce($1::timestamptz, now())
    WHERE $5::bigint > 0
    ON CONFLICT (instance_id, owner) DO UPDATE
    SET refunded = greatest(r.refunded, excluded.refunded),
        prev     = r.refunded,
        seen_at  = excluded.seen_at
    RETURNING least($5::bigint, r.refunded - r.prev) AS fresh
), pruned AS (
    DELETE FROM %[3]s AS r
    WHERE $5::bigint > 0 AND r.instance_id = $2 AND r.owner <> coalesce($13::text, '')
      AND r.seen_at < coalesce($1::timestamptz, now()) - interval '7 days'
), lk AS (
    SELECT b.*
    FROM %[2]s AS b
    WHERE b.instance_id = $2
    FOR UPDATE OF b
), t AS (
    SELECT coalesce($1::timestamptz, clock_timestamp()) AS now
    FROM lk
), c AS (
    SELECT t.now, ((t.now AT TIME ZONE $7::text) - $8::bigint * interval '1 microsecond')::date AS today
    FROM t
), cur AS (
    SELECT b.instance_id, b.not_before, b.quota_day, c.now, greatest(b.day, c.today) AS today,
           CASE WHEN b.tat_owner IS DISTINCT FROM $13::text
                THEN b.tat + $14::bigint * interval '1 microsecond' ELSE b.tat END AS tat,
           CASE WHEN $15::boolean THEN c.now ELSE b.answered_at END AS answered_at,
           CASE WHEN b.rate >= $3::float8 THEN $3::float8
                WHEN c.now - b.cut_at < $10::bigint * interval '1 microsecond' THEN b.rate
                ELSE least($3::float8, b.rate + $3::float8 * $11::float8 * floor(
                     extract(epoch FROM c.now - greatest(b.raised_at, b.cut_at + $10::bigint * interval '1 microsecond'))
                     * 1e6 / $12::bigint))
           END AS rate,
           CASE WHEN b.day >= c.today THEN b.used - least(coalesce((SELECT fresh FROM ref), 0), b.used) ELSE 0 END AS used0,
           CASE WHEN b.headroom <= $9::float8 THEN $9::float8
                ELSE greatest($9::float8, b.headroom - $16::float8 * floor(extract(epoch FROM c.now - b.cut_at) * 1e6 / $17::bigint))
           END AS headroom,
           b.raised_at,
           coalesce($19::bigint > 0 AND b.tat_owner <> $13::text
               AND b.tat + $14::bigint * interval '1 microsecond' > c.now + $19::bigint * interval '1 microsecond', false) AS busy
    FROM lk AS b, c
), g AS (
    SELECT cur.*,
           ceil(1e6 * (1 + cur.headroom) / cur.rate)::bigint AS iv_us,
           greatest(cur.tat, cur.now, cur.not_before) AS start,
           CASE WHEN cur.quota_day = cur.today OR cur.busy THEN 0
                WHEN $6::bigint > 0 THEN greatest(0, least($4::bigint, $6::bigint - cur.used0))
                ELSE $4::bigint
           END::int AS granted,
           cur.busy AND $13::text <> '' AND NOT $22::boolean AS wants
    FROM cur
)
UPDATE %[2]s AS b
SET rate       = g.rate,
    raised_at  = CASE WHEN g.rate > b.rate THEN g.now ELSE b.raised_at END,
    tat        = CASE WHEN g.granted > 0 THEN g.start + g.granted * g.iv_us * interval '1 microsecond' ELSE b.tat END,
    tat_owner  = CASE WHEN g.granted > 0 THEN $13::text ELSE b.tat_owner END,
    tat_table  = CASE WHEN g.granted > 0 THEN nullif($21::text, '') ELSE b.tat_table END,
    tat_kept   = CASE WHEN g.granted > 0 THEN $20::int ELSE b.tat_kept END,
    answered_at = g.answered_at,
    wanted_by  = CASE WHEN g.wants THEN $13::text ELSE b.wanted_by END,
    wanted_at  = CASE WHEN g.wants THEN g.now ELSE b.wanted_at END,
    wanted_kept = CASE WHEN g.wants THEN $20::int ELSE b.wanted_kept END,
    wanted_table = CASE WHEN g.wants THEN nullif($21::text, '') ELSE b.wanted_table END,
    day        = g.today,
    used       = g.used0 + g.granted,
    updated_at = g.now
FROM g
WHERE b.instance_id = g.instance_id
RETURNING g.start, g.now, g.iv_us, g.granted, g.rate, g.headroom, g.used0 + g.granted, g.quota_day IS NOT DISTINCT FROM g.today,
          g.answered_at, g.busy, b.wanted_by, b.wanted_at, b.wanted_kept, b.wanted_table, b.tat_owner, b.tat_table, b.tat_kept`

// sqlKeepers reads who keeps each instance of $2 that has a row, and each instance a run on
// table $3 took the last block of: the run whose block came last, its table, where its bookings
// end, and the budget's clock. It locks and writes nothing.
const sqlKeepers = `
SELECT instance_id, coalesce(tat_owner, ''), coalesce(tat_table, ''), tat, coalesce($1::timestamptz, clock_timestamp())
FROM %[2]s
WHERE instance_id = ANY($2::text[]) OR tat_table = nullif($3::text, '')
ORDER BY instance_id`

// sqlHandOver makes the instance's schedule $4's, the run that wanted it, if it is still $3's: the
// blocks $3 booked stand, and $4's first block starts $5 µs after them, as another run's would.
// Everyone else gives way to $4 while those blocks last, as they did to $3. $4's table and count
// are known from its first block.
const sqlHandOver = `
UPDATE %[2]s AS b
SET tat_owner  = $4::text,
    tat_table  = NULL,
    tat_kept   = 0,
    tat        = b.tat + $5::bigint * interval '1 microsecond',
    updated_at = coalesce($1::timestamptz, now())
WHERE b.instance_id = $2 AND b.tat_owner = $3::text`

// sqlTrim gives back the slots $3 booked on the instance $2 after $4, and never a slot already
// past: the next block starts there instead. Only while $3's bookings are the last and still end
// at $5 (tat_owner, tat), so that no other run's block moves, nor a block $3 was granted after
// it decided to trim. The clock is read after the row lock, as in sqlReserve.
const sqlTrim = `
UPDATE %[2]s AS b
SET tat        = greatest($4::timestamptz, coalesce($1::timestamptz, clock_timestamp())),
    updated_at = coalesce($1::timestamptz, now())
WHERE b.instance_id = $2 AND b.tat_owner = $3::text AND b.tat = $5::timestamptz
  AND b.tat > greatest($4::timestamptz, coalesce($1::timestamptz, clock_timestamp()))`

// sqlReserveState hands out the next slot of a method that takes one request at a time, one per
// $4 microseconds widened by $3, and returns it with the clock: the instance's GetStateInstance
// (every second), and on the row of the instance's CheckWhatsapp (ReserveCheck) its 10 a second.
// The clock is read after the row lock, as in sqlReserve.
const sqlReserveState = `
WITH lk AS (
    SELECT b.state_tat
    FROM %[2]s AS b
    WHERE b.instance_id = $2
    FOR UPDATE OF b
), c AS (
    SELECT lk.state_tat, coalesce($1::timestamptz, clock_timestamp()) AS now
    FROM lk
), old AS (
    SELECT greatest(c.state_tat, c.now) AS slot, c.now
    FROM c
)
UPDATE %[2]s AS b
SET state_tat = old.slot + (1 + $3::float8) * $4::float8 * interval '1 microsecond'
FROM old
WHERE b.instance_id = $2
RETURNING old.slot, old.now`

// sqlThrottled cuts the instance's rate to $5 of it (not below $4) for a 429 to a request sent at
// $3 (the database's clock), unless the rate was already cut after that request left: one cut per
// round of requests at the old rate. The same cut widens the headroom, as eased since the last
// cut (never below $7, a step of $8 every $9 µs, as in sqlReserve), by a step, to $10 at most. A
// Retry-After ($6 µs, 0 when none) pauses the instance.
const sqlThrottled = `
UPDATE %[2]s AS b
SET headroom   = CASE WHEN b.cut_at > $3::timestamptz THEN b.headroom
                      WHEN b.headroom <= $7::float8 THEN least($10::float8, $7::float8 + $8::float8)
                      ELSE least($10::float8, $8::float8 + greatest($7::float8, b.headroom - $8::float8 * floor(
                           extract(epoch FROM coalesce($1::timestamptz, now()) - b.cut_at) * 1e6 / $9::bigint)))
                 END,
    rate       = CASE WHEN b.cut_at <= $3::timestamptz THEN greatest($4::float8, b.rate * $5::float8) ELSE b.rate END,
    raised_at  = CASE WHEN b.cut_at <= $3::timestamptz THEN coalesce($1::timestamptz, now()) ELSE b.raised_at END,
    cut_at     = CASE WHEN b.cut_at <= $3::timestamptz THEN coalesce($1::timestamptz, now()) ELSE b.cut_at END,
    not_before = greatest(b.not_before, coalesce($1::timestamptz, now()) + $6::bigint * interval '1 microsecond'),
    updated_at = coalesce($1::timestamptz, now())
WHERE b.instance_id = $2`

// sqlQuotaSpent records the day ($3 time zone, $4 µs into the day) on which the instance answered
// 466: the budget's day (sqlReserve) when the clocks went back behind it.
const sqlQuotaSpent = `
UPDATE %[2]s AS b
SET quota_day  = greatest(b.day, ((coalesce($1::timestamptz, now()) AT TIME ZONE $3::text) - $4::bigint * interval '1 microsecond')::date),
    updated_at = coalesce($1::timestamptz, now())
WHERE b.instance_id = $2`

-- enrich:no-transaction
-- The refresh indexes of 0007, built CONCURRENTLY (so outside a transaction; see store.Migrate):
-- the runs keep reading and writing the table while they build. On a table migrated before,
-- 0007 built them and this file finds them (IF NOT EXISTS); a build that failed half-way left an
-- INVALID index, which store.Migrate drops and builds again.
--
-- store.Refresh moves done rows due for a refresh back to pending in bounded chunks, each chunk
-- walking these two partial indexes from their oldest end, so it reads O(chunk) entries however
-- many rows are done. The policy is not stored in the row (no refresh_at column): a changed
-- refresh_after or refresh_before_expiry applies to every row at the next run, with no rewrite
-- of the table, and the cut-offs are parameters of the scan (checked_at <= now - after,
-- url_expires_at <= now + before). Only done rows are indexed: a refreshed row leaves both
-- indexes when it turns pending, so rows waiting for their new answer never pile up ahead of
-- the next chunk's scan. The expiry index also counts `enrich status`'s links expiring soon.
CREATE INDEX CONCURRENTLY IF NOT EXISTS {{name:refresh_age_idx}} ON {{table}} (checked_at, id) WHERE status = 'done';
CREATE INDEX CONCURRENTLY IF NOT EXISTS {{name:refresh_expiry_idx}} ON {{table}} (url_expires_at, id)
    WHERE status = 'done' AND url_expires_at IS NOT NULL;

-- enrich:no-transaction
-- The check of 0014 validated (SHARE UPDATE EXCLUSIVE: the runs go on reading and writing), and
-- the index of the rows whose existence a later run completes, built CONCURRENTLY (see
-- store.Migrate). Both statements can run again: a validated check validates again at once, and
-- the index is found (IF NOT EXISTS), or dropped and built again when a build left it INVALID.
ALTER TABLE {{table}} VALIDATE CONSTRAINT {{name:exists_source_check}};

-- Rows whose existence a later run completes: done personal rows with exists_whatsapp NULL,
-- except those CheckWhatsapp refused. That is the rows marked 'unchecked', and rows answered
-- before 0014 by today's edition (exists_source NULL). A done row is not in the claim index
-- (0001 indexes pending rows only), so a run with the checks on first moves these back to
-- pending, as store.Refresh does for rows due for a refresh, walking this partial index in
-- chunks (store.RefreshPolicy.ExistsUnknown): O(chunk) per statement however many rows are done,
-- and the claim and its index are unchanged (the moved rows join the claim index as pending rows,
-- due now). A row leaves this index when it turns pending and comes back only if its new answer
-- is unchecked again, so rows waiting for a check never pile up ahead of a chunk's scan. Its
-- size is also `enrich status`'s count of rows whose existence is unknown (exists null).
CREATE INDEX CONCURRENTLY IF NOT EXISTS {{name:exists_unknown_idx}} ON {{table}} (id)
    WHERE status = 'done' AND exists_whatsapp IS NULL
      AND exists_source IS DISTINCT FROM 'badPhoneNumber'
      AND (chat_id IS NULL OR right(chat_id, 5) <> '@g.us');

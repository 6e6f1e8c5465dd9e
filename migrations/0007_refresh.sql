-- Refresh: done rows become due again, after refresh_after (by age) and refresh_before_expiry
-- ahead of their avatar link's expiry (the oe of a pps.whatsapp.net link, parsed by
-- greenapi.LinkExpiry and written by store.Write with the answer). NULL when the row has no link
-- or its link has no oe; rows done before this migration have NULL too, and are refreshed by
-- age only until their next answer.
ALTER TABLE {{table}} ADD COLUMN url_expires_at timestamptz;

-- store.Refresh moves done rows due for a refresh back to pending in bounded chunks, each chunk
-- walking these two partial indexes from their oldest end, so it reads O(chunk) entries however
-- many rows are done. The policy is not stored in the row (no refresh_at column): a changed
-- refresh_after or refresh_before_expiry applies to every row at the next run, with no rewrite
-- of the table, and the cut-offs are parameters of the scan (checked_at <= now - after,
-- url_expires_at <= now + before). Only done rows are indexed: a refreshed row leaves both
-- indexes when it turns pending, so rows waiting for their new answer never pile up ahead of
-- the next chunk's scan. The expiry index also counts `enrich status`'s links expiring soon.
CREATE INDEX {{name:refresh_age_idx}} ON {{table}} (checked_at, id) WHERE status = 'done';
CREATE INDEX {{name:refresh_expiry_idx}} ON {{table}} (url_expires_at, id)
    WHERE status = 'done' AND url_expires_at IS NOT NULL;

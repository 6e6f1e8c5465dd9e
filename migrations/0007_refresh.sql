-- Refresh: done rows become due again, after refresh_after (by age) and refresh_before_expiry
-- ahead of their avatar link's expiry (the oe of a pps.whatsapp.net link, parsed by
-- greenapi.LinkExpiry and written by store.Write with the answer). NULL when the row has no link
-- or its link has no oe; rows done before this migration have NULL too, and are refreshed by
-- age only until their next answer.
ALTER TABLE {{table}} ADD COLUMN url_expires_at timestamptz;

-- The two partial indexes of done rows that store.Refresh walks were built here, in this file's
-- transaction, holding writes to the table for minutes at tens of millions of done rows. They
-- are built by 0011_refresh_indexes.sql now, CONCURRENTLY: a table migrated before keeps the
-- indexes it has, and 0011 finds them.

-- Fence writes on the claim, not only on the run: a run whose lease on a row ran out and that
-- claimed the row again holds two claims of it, and only the newer one may write. Each claim
-- sets lease_token (a number unique within the run, so unique with locked_by); every write-back,
-- renewal and release is fenced on locked_by and lease_token together. NULL when not leased, and
-- on rows leased by a version of enrich before this column existed.
ALTER TABLE {{table}} ADD COLUMN lease_token bigint;

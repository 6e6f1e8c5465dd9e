-- Runs on one table call the same rows, so it does not matter which of them keeps an instance
-- (migration 0017), only that they do not pass it back and forth: they gather their instances
-- in the run that keeps most (enrich/keep.go). tat_table is the table the run that took the last
-- block (tat_owner) works on and tat_kept how many instances it kept then; wanted_table is the
-- table of the last run refused (wanted_by). NULL: not known (a run that did not say, an older
-- binary; after a hand-over, until the new keeper's first block). Columns without a default, or
-- with a constant one, rewrite nothing.
ALTER TABLE {{budget:enrich_instances}}
    ADD COLUMN IF NOT EXISTS tat_table text,
    ADD COLUMN IF NOT EXISTS tat_kept integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS wanted_table text;

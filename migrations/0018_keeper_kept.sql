-- The run whose block of an instance came last (tat_owner) records with each block how many
-- instances it keeps then (kept_by_owner), and every grant tells it: a run refused the instance
-- that could not be handed it (store.HandOver: the keeper must keep at least two more than the
-- run that wants it) asks again only every few seconds, not at every block the keeper books.
-- Six pods on 50 instances asked about 250 times a second, for nothing, before. Adding a column
-- with a constant default rewrites nothing.
ALTER TABLE {{budget:enrich_instances}}
    ADD COLUMN IF NOT EXISTS kept_by_owner integer NOT NULL DEFAULT 0;

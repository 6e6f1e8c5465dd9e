-- Runs that share an instance keep it one at a time: a run is given no slots while another run
-- has booked the instance ahead (store.BudgetPolicy.Yield), and the refusal is recorded here, so
-- that the run keeping the instance learns that another wants it and, when it keeps at least two
-- instances more than that run, hands this one over (store.HandOver). wanted_by is the last run
-- refused, wanted_at when ('epoch': never), wanted_kept how many instances it kept then. Adding
-- a column with a constant default rewrites nothing.
ALTER TABLE {{budget:enrich_instances}}
    ADD COLUMN IF NOT EXISTS wanted_by text,
    ADD COLUMN IF NOT EXISTS wanted_at timestamptz NOT NULL DEFAULT 'epoch',
    ADD COLUMN IF NOT EXISTS wanted_kept integer NOT NULL DEFAULT 0;

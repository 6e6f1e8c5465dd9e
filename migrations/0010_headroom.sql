-- The headroom of an instance's schedule, learned from its 429s: every cut of the rate widens
-- it by a step, and it narrows back a step at a time while no 429 comes (store.BudgetPolicy).
-- The value is as the last cut (cut_at) left it; 0 is the policy's least headroom. Requests
-- arrive with the jitter of the path to the server, and a server that enforces a minimum gap
-- between arrivals answers 429 to one that comes early, so the headroom that path needs is the
-- instance's, shared by every process. The table is shared by every contacts table of the
-- schema, so the column is added if missing.
ALTER TABLE {{shared:enrich_instances}} ADD COLUMN IF NOT EXISTS headroom double precision NOT NULL DEFAULT 0;

-- Slots given back to an instance's day, per run: a run gives back the slots of its block it
-- never sent (store.Reserve's Refund) with its next reservation. If that reservation commits but
-- its reply is lost, the run asks again with the same slots, and they would be given back twice,
-- handing out more than the daily cap. So each run's total given back to each instance is
-- recorded here (refunded, with prev its value before the last request), and a request gives
-- back only what its total adds to the recorded one. Rows of runs not seen for a week are
-- deleted by the reservations of the instance. One table per schema, shared by its contacts
-- tables, like enrich_instances.
CREATE TABLE IF NOT EXISTS {{shared:enrich_refunds}} (
    instance_id text NOT NULL,
    owner       text NOT NULL,
    refunded    bigint NOT NULL,
    prev        bigint NOT NULL DEFAULT 0,
    seen_at     timestamptz NOT NULL,
    PRIMARY KEY (instance_id, owner)
);

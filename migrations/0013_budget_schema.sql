-- One budget per instance per database, whatever the schema. Until 0012 the instances' shared
-- budget (enrich_instances, enrich_refunds) lived beside each contacts table, in its schema: an
-- instance used for crm.contacts and for sales.contacts had two budgets, each spending the whole
-- rate and the whole daily cap. From here on it lives in one schema for the database
-- (database.budget_schema, default "enrich"), created here if missing, and this file moves what
-- the old tables of this contacts table's schema hold into it, merged with what is there
-- already: the later day and the larger count of it, the slower rate, the wider headroom, the
-- later schedule, pause and answer. Runs of an older version go on using the old tables until
-- they end; once none runs, the old tables can be dropped.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = {{budget_schema}}) THEN
        EXECUTE format('CREATE SCHEMA %I', {{budget_schema}});
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS {{budget:enrich_instances}} (LIKE {{shared:enrich_instances}} INCLUDING ALL);
CREATE TABLE IF NOT EXISTS {{budget:enrich_refunds}} (LIKE {{shared:enrich_refunds}} INCLUDING ALL);

INSERT INTO {{budget:enrich_instances}} AS b
SELECT * FROM {{shared:enrich_instances}}
ON CONFLICT (instance_id) DO UPDATE SET
    tat         = greatest(b.tat, excluded.tat),
    tat_owner   = CASE WHEN excluded.tat > b.tat THEN excluded.tat_owner ELSE b.tat_owner END,
    state_tat   = greatest(b.state_tat, excluded.state_tat),
    answered_at = greatest(b.answered_at, excluded.answered_at),
    rate        = least(b.rate, excluded.rate),
    cut_at      = greatest(b.cut_at, excluded.cut_at),
    raised_at   = greatest(b.raised_at, excluded.raised_at),
    not_before  = greatest(b.not_before, excluded.not_before),
    used        = CASE
                      WHEN excluded.day IS NOT DISTINCT FROM b.day THEN greatest(b.used, excluded.used)
                      WHEN b.day IS NULL OR excluded.day > b.day THEN excluded.used
                      ELSE b.used
                  END,
    day         = greatest(b.day, excluded.day),
    quota_day   = greatest(b.quota_day, excluded.quota_day),
    headroom    = greatest(b.headroom, excluded.headroom),
    updated_at  = greatest(b.updated_at, excluded.updated_at);

INSERT INTO {{budget:enrich_refunds}} AS b
SELECT * FROM {{shared:enrich_refunds}}
ON CONFLICT (instance_id, owner) DO UPDATE SET
    refunded = greatest(b.refunded, excluded.refunded),
    prev     = greatest(b.prev, excluded.prev),
    seen_at  = greatest(b.seen_at, excluded.seen_at);

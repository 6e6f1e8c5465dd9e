-- One row per `enrich run`, so `enrich status` can show the last runs: when each started and
-- finished, how it ended, what it did, and which process (owner, host) it was. A run writes its
-- row when it starts, moves seen_at every 30 s while it works (a heartbeat), and fills in
-- finished_at, outcome and the counts when it ends. A run killed with -9 never finishes its row:
-- status shows a row whose finished_at is NULL and whose seen_at is a few heartbeats old as lost.
--
-- One table per schema, shared by every contacts table of the schema and told apart by
-- table_name (the bare table name, as in enrich_schema_migrations), rather than one table per
-- contacts table: a table of its own would need a name derived from the contacts table's and
-- placed in its schema, which no placeholder gives ({{name:...}} is unqualified and is meant for
-- indexes, which follow their table's schema by themselves); beside enrich_schema_migrations and
-- enrich_instances it is one more small table of enrich's, not one per contacts table; and one
-- query shows every run of the schema, whatever table it worked on.
--
-- Kept small by store.FinishRun: each run that finishes deletes all but the last 1000 runs of
-- its contacts table (by id, i.e. by start), a bound whatever the schedule, at most a few
-- hundred kilobytes per contacts table.
--
-- The counts are columns, not a jsonb, so an operator can sum or chart them in plain SQL. error
-- is the run's error as it was logged; it never carries a token or a password.
--
-- Shared by every contacts table of the schema, so it is created if missing.
CREATE TABLE IF NOT EXISTS {{shared:enrich_runs}} (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    table_name   text NOT NULL,
    owner        text NOT NULL,
    host         text NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    seen_at      timestamptz NOT NULL,
    finished_at  timestamptz,
    outcome      text,
    stop         text,
    exit_code    int,
    done         bigint NOT NULL DEFAULT 0,
    failed       bigint NOT NULL DEFAULT 0,
    rescheduled  bigint NOT NULL DEFAULT 0,
    released     bigint NOT NULL DEFAULT 0,
    claimed      bigint NOT NULL DEFAULT 0,
    rate_limited bigint NOT NULL DEFAULT 0,
    calls        bigint NOT NULL DEFAULT 0,
    error        text,
    CHECK ((finished_at IS NULL) = (outcome IS NULL))
);

-- The last runs of a table, and the cut of FinishRun, walk this index backwards.
CREATE INDEX IF NOT EXISTS enrich_runs_table_id_idx ON {{shared:enrich_runs}} (table_name, id);

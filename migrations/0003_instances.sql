-- One row per Green API instance, shared by every run, process and pod that spends it: the
-- instance's budget. Green API counts requests per instance, not per process, so two runs on one
-- instance must together keep to its rate.
--
-- The budget is a shared schedule (GCRA, "virtual scheduling"): tat is the instance's next free
-- send slot. A process reserves a short block of slots with one UPDATE ... RETURNING that moves
-- tat forward, so any number of processes together never exceed the rate, and a process killed
-- with -9 loses only the block it held. The rate adapts for everyone at once: a 429 seen by any
-- process cuts it (cut_at), and it climbs back (raised_at) after a quiet period; a Retry-After
-- pauses the whole instance (not_before).
--
-- tat_owner is the run that took the last block: a block going to another run starts a small
-- guard after the previous one, so a request the previous run sent a little late cannot arrive
-- too close to the next run's first. state_tat is the same schedule for GetStateInstance (1 request
-- per second per instance, shared by every run's pre-flight check and probes); answered_at is
-- the last time any run had a real answer from the instance, so a run starting beside a busy one
-- needs no state check.
--
-- The daily cap counts slots handed out on a day (day, used), and quota_day records a day on
-- which the instance answered 466 (its plan's quota is spent), so later runs that day skip it
-- without a call.
--
-- Shared by every contacts table of the schema, so it is created if missing.
CREATE TABLE IF NOT EXISTS {{shared:enrich_instances}} (
    instance_id text PRIMARY KEY,
    tat         timestamptz NOT NULL DEFAULT now(),
    tat_owner   text,
    state_tat   timestamptz NOT NULL DEFAULT 'epoch',
    answered_at timestamptz NOT NULL DEFAULT 'epoch',
    rate        double precision NOT NULL CHECK (rate > 0),
    cut_at      timestamptz NOT NULL DEFAULT '-infinity',
    raised_at   timestamptz NOT NULL DEFAULT '-infinity',
    not_before  timestamptz NOT NULL DEFAULT '-infinity',
    day         date,
    used        bigint NOT NULL DEFAULT 0,
    quota_day   date,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

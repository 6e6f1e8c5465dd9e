-- The contacts table: one row per phone number or chat id to enrich with WhatsApp data.
-- Users' tools read these column names: they are a contract, change them only by a new migration
-- that keeps the old names working.
--
-- A row's life: inserted with only phone_number or chat_id, it is 'pending' and due at once
-- (next_attempt_at defaults to now()). A run claims it (locked_by/locked_until set, and
-- next_attempt_at moved to the end of the lease), calls the API, and writes it back as 'done',
-- 'failed', or 'pending' again with a later next_attempt_at.
CREATE TABLE {{table}} (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    phone_number     text,
    chat_id          text,
    status           text NOT NULL DEFAULT 'pending',
    exists_whatsapp  boolean,
    avatar_available boolean,
    url_avatar       text,
    reason           text,
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    checked_at       timestamptz,
    locked_by        text,
    locked_until     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (phone_number IS NOT NULL OR chat_id IS NOT NULL),
    CHECK (status IN ('pending', 'done', 'failed'))
);

-- One row per target: Enqueue relies on these for ON CONFLICT DO NOTHING.
CREATE UNIQUE INDEX {{name:phone_number_key}} ON {{table}} (phone_number) WHERE phone_number IS NOT NULL;
CREATE UNIQUE INDEX {{name:chat_id_key}} ON {{table}} (chat_id) WHERE chat_id IS NOT NULL;

-- Keeps "claim the n most overdue rows" O(n) at 10M rows: only pending rows are indexed, in claim
-- order. Leased rows have next_attempt_at = end of lease, so they sit past the due prefix and come
-- back exactly when the lease expires; done and failed rows leave the index.
CREATE INDEX {{name:due_idx}} ON {{table}} (next_attempt_at, id) WHERE status = 'pending';

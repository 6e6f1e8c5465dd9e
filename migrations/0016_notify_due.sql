-- Follow mode (`enrich run --follow`) wakes on new due rows through LISTEN/NOTIFY. The
-- convention, which user triggers on other tables may follow too: channel enrich_due, payload
-- the decimal OID of the contacts table whose rows became due (TG_RELID::text in a trigger). A
-- listener resolves its own table's OID (to_regclass) and ignores every other payload.
--
-- The function is one per schema, shared by every contacts table there (it reads the table from
-- TG_RELID), so CREATE OR REPLACE keeps this file idempotent for the next table of the schema.
CREATE OR REPLACE FUNCTION {{shared:enrich_notify_due}}() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('enrich_due', TG_RELID::text);
    RETURN NULL;
END
$$;

-- One notification per INSERT statement (enqueue's COPY-like inserts, a user's INSERT ...
-- SELECT), not per row: PostgreSQL folds identical notifications of a transaction into one,
-- and a statement-level trigger costs one call whatever the rows. It fires at commit time for the
-- listener: a NOTIFY is delivered only when its transaction commits, after the rows are visible.
CREATE TRIGGER {{name:notify_due}} AFTER INSERT ON {{table}}
    FOR EACH STATEMENT EXECUTE FUNCTION {{shared:enrich_notify_due}}();

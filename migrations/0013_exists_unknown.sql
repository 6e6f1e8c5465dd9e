-- Existence for every answered personal row. Today's GetAvatar answers {urlAvatar, available}
-- only: a link, an inlined base64Avatar or available false mean the account exists
-- ('avatar': inferred from the avatar); {"urlAvatar":"","available":true} is an account without
-- a photo or no account at all, and takes a CheckWhatsapp call ('checkWhatsapp'), as the seed
-- edition's existsWhatsapp false already did. Two more values say why a row's exists_whatsapp is
-- still NULL: 'unchecked' (CheckWhatsapp was not asked: its quota on the instance was spent
-- (466), the check failed, or greenapi.confirm_missing is false) and 'badPhoneNumber'
-- (CheckWhatsapp refused the number, "bad phone number, valid 11 or 12 digits": permanent for
-- that number, so never asked again).
--
-- The CHECK of 0008 was declared inline, so PostgreSQL named it; it is found by its column and
-- replaced by a named one that takes the new values.
DO $$
DECLARE c text;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = '{{table}}'::regclass AND contype = 'c'
               AND pg_get_constraintdef(oid) LIKE '%exists_source%'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', '{{table}}'::regclass, c);
    END LOOP;
END $$;

ALTER TABLE {{table}} ADD CONSTRAINT {{name:exists_source_check}}
    CHECK (exists_source IN ('getAvatar', 'avatar', 'checkWhatsapp', 'unchecked', 'badPhoneNumber'));

-- Rows whose existence a later run completes: done personal rows with exists_whatsapp NULL,
-- except those CheckWhatsapp refused. That is the rows marked 'unchecked', and rows answered
-- before this migration by today's edition (exists_source NULL). A done row is not in the claim
-- index (migrations/0001 indexes pending rows only), so a run with the checks on first moves
-- these back to pending, as store.Refresh does for rows due for a refresh, walking this partial
-- index in chunks: O(chunk) per statement however many rows are done, and the claim index and
-- the claim are unchanged (the moved rows join it as pending rows, due now). A row leaves this
-- index when it turns pending, and comes back only if its new answer is unchecked again, so
-- rows waiting for a check never pile up ahead of a chunk's scan. Its size is also `enrich
-- status`'s count of rows whose existence is unknown.
CREATE INDEX {{name:exists_unknown_idx}} ON {{table}} (id)
    WHERE status = 'done' AND exists_whatsapp IS NULL
      AND exists_source IS DISTINCT FROM 'badPhoneNumber'
      AND (chat_id IS NULL OR right(chat_id, 5) <> '@g.us');

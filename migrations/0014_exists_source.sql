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
-- replaced by a named one that takes the new values. The new one is added NOT VALID, which
-- takes the table's lock only for an instant (no scan of the rows: every existing value passes
-- the old, narrower check anyway); 0015 validates it without holding the runs' writes back.
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
    CHECK (exists_source IN ('getAvatar', 'avatar', 'checkWhatsapp', 'unchecked', 'badPhoneNumber')) NOT VALID;

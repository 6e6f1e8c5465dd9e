-- Where exists_whatsapp came from: 'getAvatar' (its answer) or 'checkWhatsapp' (GetAvatar said
-- false and, with greenapi.confirm_missing, CheckWhatsapp confirmed or corrected it: Green API
-- reports some accounts without a photo as missing). NULL on rows not answered since this
-- column exists, and on rows whose answer carried no existsWhatsapp (the current edition).
ALTER TABLE {{table}} ADD COLUMN exists_source text
    CHECK (exists_source IN ('getAvatar', 'checkWhatsapp'));

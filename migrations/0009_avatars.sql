-- Kept avatars ([avatars] download = true): avatar links expire days after GetAvatar hands them
-- out, so each new avatar is fetched once and its bytes kept here, once per content, keyed by
-- their SHA-256 (hex): the same image behind many numbers (a default picture, one photo on many
-- business numbers) is stored once. One table per schema, shared by its contacts tables, like
-- enrich_instances. A row's avatar_sha256 names its image; join on it to read the bytes.
CREATE TABLE IF NOT EXISTS {{shared:enrich_avatars}} (
    sha256       text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type text NOT NULL,
    size         int NOT NULL,
    data         bytea NOT NULL,
    first_seen   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE {{table}} ADD COLUMN avatar_sha256 text;

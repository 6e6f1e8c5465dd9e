-- One row per target. A run calls a row's chat_id when it has one, else its phone_number (see
-- enrich's targetOf), and a personal chatId is its phone number's digits then @c.us: so the
-- phone 79001234567 and the chatId 79001234567@c.us are one target, which the unique indexes of
-- 0001 (one on each column) let in twice, and which was then called twice. The target key is
-- the called chat_id without @c.us (a group chatId as it is; it holds an '@' and so never equals
-- a phone number), else the phone_number. Built as a unique index on that expression, not as a
-- new column: the columns users read stay exactly those of 0001 (the contract), nothing is
-- rewritten, and Enqueue's ON CONFLICT DO NOTHING (no conflict target) skips a second form of a
-- target through this index as it skips an exact repeat through the others.
--
-- A table filled before this migration may hold both forms of a number, and the index cannot be
-- built over them, so they are merged first, deterministically: of the two rows of one target
-- the one with the most progress is kept (a 'done' row first, then the later checked_at, then
-- the older row, by id), it takes the other row's form of the number in the column it has empty
-- (so a lookup by either phone_number or chat_id still finds the target), and the other row is
-- deleted. A target has at most two rows (one with chat_id = digits@c.us, one with that
-- phone_number and no chat_id: each column is unique), so each merge is one pair. The table is
-- locked against writes first so that no new pair appears between the merge and the index;
-- a run writing back a deleted row writes nothing (its write is fenced on the row), and the kept
-- row carries the target's result.
LOCK TABLE {{table}} IN SHARE ROW EXCLUSIVE MODE;

CREATE TEMP TABLE enrich_target_merge ON COMMIT DROP AS
SELECT keep_id, drop_id, drop_phone, drop_chat
FROM (
    SELECT first_value(id) OVER w AS keep_id, id AS drop_id, phone_number AS drop_phone, chat_id AS drop_chat,
           row_number() OVER w AS n
    FROM {{table}}
    WHERE (CASE WHEN chat_id IS NULL THEN phone_number
                WHEN right(chat_id, 5) = '@c.us' THEN left(chat_id, -5)
                ELSE chat_id END) IN (
        SELECT CASE WHEN chat_id IS NULL THEN phone_number
                    WHEN right(chat_id, 5) = '@c.us' THEN left(chat_id, -5)
                    ELSE chat_id END AS target
        FROM {{table}}
        GROUP BY 1
        HAVING count(*) > 1)
    WINDOW w AS (PARTITION BY CASE WHEN chat_id IS NULL THEN phone_number
                                   WHEN right(chat_id, 5) = '@c.us' THEN left(chat_id, -5)
                                   ELSE chat_id END
                 ORDER BY status = 'done' DESC, checked_at DESC NULLS LAST, id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
) AS ranked
WHERE n > 1;

DELETE FROM {{table}} AS t USING enrich_target_merge AS m WHERE t.id = m.drop_id;

UPDATE {{table}} AS t
SET phone_number = coalesce(t.phone_number, m.drop_phone),
    chat_id = coalesce(t.chat_id, m.drop_chat),
    updated_at = now()
FROM enrich_target_merge AS m
WHERE t.id = m.keep_id;

CREATE UNIQUE INDEX {{name:target_key}} ON {{table}} ((
    CASE WHEN chat_id IS NULL THEN phone_number
         WHEN right(chat_id, 5) = '@c.us' THEN left(chat_id, -5)
         ELSE chat_id END));

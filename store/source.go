package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/phone"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Source is the user's own table, enriched in place: a CRM's customers table, say, whose rows
// are the numbers to look up and whose columns may receive the answers. enrich never adds, drops
// or alters a column of it. Its state (leases, attempts, schedule, answers) lives in a table of
// its own beside it, the state table, one row per source row with a phone, keyed by the source's
// key; triggers that LinkSource puts on the source keep that table in step with every insert,
// phone change and delete, so the work a run finds is always incremental.
type Source struct {
	// Table is the source table, "table" or "schema.table" (see ParseTable). A view (or a
	// materialized view, or a foreign table) may be one too, but cannot carry triggers: its
	// state is brought in step by SyncSource, one scan of it at each run's start.
	Table string
	// Key is a column of Table that is unique on its own (a primary key or a unique index on it
	// alone) and not null: the state's rows are keyed by it, and results are written back
	// through it. A view's key is not checked ahead: SyncSource refuses one that repeats.
	Key string
	// Phone is the column holding each row's phone number or chatId, in any form `enrich
	// enqueue` reads (Region says how national numbers read). A NULL or blank phone is no work.
	Phone string
	// Region is how national numbers in Phone are read (phone.Normalize); "" takes them as
	// international digits.
	Region string
	// WriteBack names the source's columns that receive the answers; "" writes nothing there.
	WriteBack WriteBack
}

// WriteBack maps enrich's result columns onto columns of the source table. Each is written in
// the same statement as the state's row, fenced on the same claim, so the source never shows an
// answer the state does not hold.
type WriteBack struct {
	// ExistsWhatsapp receives exists_whatsapp: a boolean column.
	ExistsWhatsapp string
	// AvatarAvailable receives avatar_available: a boolean column.
	AvatarAvailable string
	// URLAvatar receives url_avatar: a text or varchar column without a length limit, since
	// a link cut short is worse than none.
	URLAvatar string
	// Reason receives reason: a text column, or a varchar of at least ReasonMaxChars; it
	// receives the reason's first ReasonMaxChars characters.
	Reason string
	// CheckedAt receives checked_at: a timestamptz, timestamp or date column.
	CheckedAt string
	// ExistsSource receives exists_source: a text column, or a varchar of at least 32.
	ExistsSource string
}

// ReasonMaxChars is how much of a reason the source receives: a reason may quote the row's own
// input, of any length, and a value too long for its column would fail the whole batch.
const ReasonMaxChars = 1000

// sourceLinkVersion changes when the triggers' SQL does, so that `enrich migrate` links again.
const sourceLinkVersion = 1

// mapped is one write-back column: the state column it copies, how, and the types it takes.
type mapped struct {
	key    string // the state column, and the config key source.write_back.<key>
	source string // the source's column
	kind   string // "bool", "text", "time"
	// value is the written value, of the state's row w.
	value string
	// minChars is the least varchar(n) of a text column; -1: only an unlimited one.
	minChars int
}

// columns lists the mapped columns, in a fixed order.
func (w WriteBack) columns() []mapped {
	all := []mapped{
		{"exists_whatsapp", w.ExistsWhatsapp, "bool", "w.exists_whatsapp", 0},
		{"avatar_available", w.AvatarAvailable, "bool", "w.avatar_available", 0},
		{"url_avatar", w.URLAvatar, "text", "w.url_avatar", -1},
		{"reason", w.Reason, "text", fmt.Sprintf("left(w.reason, %d)", ReasonMaxChars), ReasonMaxChars},
		{"checked_at", w.CheckedAt, "time", "w.checked_at", 0},
		{"exists_source", w.ExistsSource, "text", "w.exists_source", 32},
	}
	out := all[:0]
	for _, m := range all {
		if m.source != "" {
			out = append(out, m)
		}
	}
	return out
}

// StateTable is the state table enrich keeps beside source ("crm.customers" gives
// "crm.customers_enrich"), unless the configuration names one.
func StateTable(source string) (string, error) {
	id, err := ParseTable(source)
	if err != nil {
		return "", err
	}
	name := indexName(id, "enrich")
	if len(id) == 2 {
		return id[0] + "." + name, nil
	}
	return name, nil
}

// Check validates the names of src, so that a bad configuration fails at start-up; the errors
// name the configuration key.
func (src Source) Check() error {
	if _, err := ParseTable(src.Table); err != nil {
		return fmt.Errorf("source.table: %w", err)
	}
	seen := map[string]string{}
	for _, c := range []struct{ key, name string }{{"source.key", src.Key}, {"source.phone", src.Phone}} {
		if err := checkColumnName(c.key, c.name); err != nil {
			return err
		}
		seen[c.name] = c.key
	}
	for _, m := range src.WriteBack.columns() {
		key := "source.write_back." + m.key
		if err := checkColumnName(key, m.source); err != nil {
			return err
		}
		if other, ok := seen[m.source]; ok {
			return fmt.Errorf("%s = %q: the column is %s too: each result needs a column of its own, "+
				"and the key and phone columns are never written", key, m.source, other)
		}
		seen[m.source] = key
	}
	if _, err := phone.CheckRegion(src.Region); err != nil {
		return fmt.Errorf("input.region, which reads source.phone: %w", err)
	}
	return nil
}

func checkColumnName(key, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%s is empty: name a column of source.table", key)
	case len(name) > maxIdentifierBytes || !isIdentifier(name):
		return fmt.Errorf("%s = %q is not a plain column name: use letters, digits and underscores, not starting with a digit", key, name)
	}
	return nil
}

// SourceError is a source configuration the database refutes: a column that is not there or
// not of a fitting type, a view, a key that is not unique. It is the configuration's fault,
// not the database's: the CLI exits 1 naming the key, and retrying would change nothing.
type SourceError struct{ msg string }

func (e *SourceError) Error() string { return e.msg }

func sourceErrorf(format string, args ...any) error {
	return &SourceError{msg: fmt.Sprintf(format, args...)}
}

// source is a Source resolved for a Store: quoted names and the write-back statement's parts.
type source struct {
	Source
	table pgx.Identifier
	// writeBack is the UPDATE of the source around a state statement (%s), "" when nothing is
	// mapped.
	writeBack string
}

func newSource(src Source) (*source, error) {
	if err := src.Check(); err != nil {
		return nil, err
	}
	id, _ := ParseTable(src.Table)
	s := &source{Source: src, table: id}
	s.Region, _ = phone.CheckRegion(src.Region)
	cols := src.WriteBack.columns()
	if len(cols) == 0 {
		return s, nil
	}
	var set, ret []string
	for _, m := range cols {
		set = append(set, fmt.Sprintf("%s = %s", pgx.Identifier{m.source}.Sanitize(), m.value))
		ret = append(ret, "t."+m.key)
	}
	// The state statement's RETURNING names the written row; the UPDATE's count is the state's,
	// since each state row has exactly one source row (the key is unique, and the triggers
	// delete the state row with its source row).
	s.writeBack = "WITH w AS (%s\nRETURNING t.source_key, " + strings.Join(ret, ", ") + ")\n" +
		"UPDATE " + id.Sanitize() + " AS s\nSET " + strings.Join(set, ",\n    ") +
		"\nFROM w\nWHERE s." + pgx.Identifier{src.Key}.Sanitize() + " = w.source_key"
	return s, nil
}

// wrap makes a state write statement write the mapped columns too; unchanged with none mapped.
func (s *source) wrap(stmt string) string {
	if s == nil || s.writeBack == "" {
		return stmt
	}
	return fmt.Sprintf(s.writeBack, stmt)
}

// target reads the claimed row's phone column as the source holds it, the way enqueue reads
// its input: a row that is not a phone number or chatId keeps the refusal in Invalid, for the
// engine to fail without a call.
func (s *source) target(c *Claimed) {
	if c.PhoneNumber == nil {
		return
	}
	t, _, err := phone.Normalize(*c.PhoneNumber, s.Region)
	if err != nil {
		c.Invalid = err
		return
	}
	v := t.String()
	if t.Kind() == greenapi.KindPhone {
		c.PhoneNumber, c.ChatID = &v, nil
	} else {
		c.PhoneNumber, c.ChatID = nil, &v
	}
}

// LinkState says whether a source's triggers are there and current.
type LinkState struct {
	// Current is true when the triggers and the state's source_key are those this version puts.
	Current bool
	// SQL is what LinkSource would run; "" when Current.
	SQL string
}

// The statements that read the catalogs for a link. $1 is a quoted, maybe qualified table.
const (
	// sqlSourceTable says what the table is and its schema: relkind r (table), p (partitioned),
	// v (view), m (materialized view), f (foreign table); no row when it does not exist.
	sqlSourceTable = `
SELECT n.nspname, c.relname, c.relkind::text
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass($1::text)`

	// sqlSourceColumn describes column $2 of table $1: its type as written, its length limit
	// (-1 for none), whether it is NOT NULL, generated or an identity, whether it alone is the
	// key of a unique index without a predicate, whether this role may update it, and whether
	// it can be updated at all (a view's column may not be).
	sqlSourceColumn = `
SELECT format_type(a.atttypid, a.atttypmod), t.typname::text,
       CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 THEN a.atttypmod - 4 ELSE -1 END,
       a.attnotnull, a.attgenerated <> '',
       EXISTS (SELECT FROM pg_index AS i
               WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indpred IS NULL
                 AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum),
       has_column_privilege(a.attrelid, a.attnum, 'UPDATE'), pg_column_is_updatable(a.attrelid, a.attnum, false)
FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid
WHERE a.attrelid = to_regclass($1::text) AND a.attname = $2::text AND a.attnum > 0 AND NOT a.attisdropped`

	// sqlLinkComment is the comment of state table $1's source_key: what it is linked to, ""
	// when nothing (or no source_key).
	sqlLinkComment = `
SELECT coalesce(col_description(a.attrelid, a.attnum), '')
FROM (SELECT 1) AS one
LEFT JOIN pg_attribute AS a ON a.attrelid = to_regclass($1::text) AND a.attname = 'source_key' AND NOT a.attisdropped`

	// sqlLinkTriggers lists the triggers that call the sync function $1: each one's table (as a
	// statement names it), its name, quoted, and whether it is on table $2 under a name of $3.
	sqlLinkTriggers = `
SELECT tgrelid::regclass::text, quote_ident(tgname), tgrelid = to_regclass($2::text) AND tgname = ANY($3::text[])
FROM pg_trigger
WHERE tgfoid = to_regprocedure($1::text) AND NOT tgisinternal`

	// sqlStateUniques lists the state table's unique indexes other than its primary key and the
	// source key's: the phone and target indexes of a contacts table, which two customers
	// sharing a number would break.
	sqlStateUniques = `
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.indrelid = to_regclass($1::text) AND i.indisunique AND NOT i.indisprimary AND c.relname <> $2::text
ORDER BY c.relname`

	// sqlStateKeyType is the type of the state table's source_key, "" when it has none.
	sqlStateKeyType = `
SELECT coalesce((SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a
                 WHERE a.attrelid = to_regclass($1::text) AND a.attname = 'source_key' AND NOT a.attisdropped), '')`
)

// column is what sqlSourceColumn says of a column; nil when there is none.
type column struct {
	typ, typname       string
	maxChars           int
	notNull, generated bool
	uniqueAlone        bool
	mayUpdate          bool // this role's privilege
	updatable          bool // the column's: false for a view's computed one
}

func readColumn(ctx context.Context, q querier, table, name string) (*column, error) {
	var c column
	err := q.QueryRow(ctx, sqlSourceColumn, table, name).Scan(&c.typ, &c.typname, &c.maxChars, &c.notNull,
		&c.generated, &c.uniqueAlone, &c.mayUpdate, &c.updatable)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// querier is what both a pool and a transaction offer.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// link is a source resolved against the database: every name qualified, so the triggers' SQL,
// which runs with a fixed search_path, finds them.
type link struct {
	source, state pgx.Identifier // qualified
	src           Source
	keyType       string
	fn            pgx.Identifier // the sync function
	triggers      [4]string      // the triggers on the source: update, insert, delete, truncate
	keyIndex      string         // the state's unique index on source_key (bare name)
	view          bool           // a view (or a materialized view, a foreign table): no triggers, SyncSource
	stateMissing  bool           // the state table is not there yet (migrate --dry-run before the first migrate)
	comment       string         // source_key's comment: what the link is, to tell a current one
}

// resolveLink checks the source table and its key and phone columns, and names everything the
// link puts. state is the state table, which must exist (migrate first).
func resolveLink(ctx context.Context, q querier, state string, src Source) (*link, error) {
	if err := src.Check(); err != nil {
		return nil, err
	}
	srcID, _ := ParseTable(src.Table)
	stateID, err := ParseTable(state)
	if err != nil {
		return nil, fmt.Errorf("state table: %w", err)
	}
	var schema, name, kind string
	err = q.QueryRow(ctx, sqlSourceTable, srcID.Sanitize()).Scan(&schema, &name, &kind)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, sourceErrorf("source.table %s does not exist (or this role cannot see it): check the name and the schema", srcID.Sanitize())
	}
	if err != nil {
		return nil, fmt.Errorf("read source.table %s: %w", srcID.Sanitize(), err)
	}
	l := &link{source: pgx.Identifier{schema, name}, src: src}
	switch kind {
	case "r", "p":
	case "v", "m", "f":
		l.view = true
	default:
		return nil, sourceErrorf("source.table %s is not a table or a view (relkind %s): name the table the rows live in",
			srcID.Sanitize(), kind)
	}
	key, err := readColumn(ctx, q, l.source.Sanitize(), src.Key)
	if err != nil {
		return nil, fmt.Errorf("read source.key: %w", err)
	}
	switch {
	case key == nil:
		return nil, sourceErrorf("source.key = %q: %s has no such column", src.Key, l.source.Sanitize())
	case !l.view && (!key.uniqueAlone || !key.notNull):
		return nil, sourceErrorf("source.key = %q: %s has no primary key or unique index on %q alone, NOT NULL: "+
			"results are written back through the key, so it must name one row: name such a column", src.Key, l.source.Sanitize(), src.Key)
	}
	l.keyType = key.typ
	ph, err := readColumn(ctx, q, l.source.Sanitize(), src.Phone)
	if err != nil {
		return nil, fmt.Errorf("read source.phone: %w", err)
	}
	if ph == nil {
		return nil, sourceErrorf("source.phone = %q: %s has no such column", src.Phone, l.source.Sanitize())
	}
	// The state table: qualified with the schema it resolves to now, or would be created in.
	err = q.QueryRow(ctx, sqlSourceTable, stateID.Sanitize()).Scan(&schema, &name, &kind)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		l.stateMissing = true
		schema, name = "", bareName(stateID)
		if len(stateID) == 2 {
			schema = stateID[0]
		} else if err := q.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
			return nil, fmt.Errorf("read the current schema: %w", err)
		}
	case err != nil:
		return nil, fmt.Errorf("read state table %s: %w", stateID.Sanitize(), err)
	}
	l.state = pgx.Identifier{schema, name}
	l.fn = pgx.Identifier{schema, indexName(stateID, "sync")}
	for i, what := range []string{"update", "insert", "delete", "truncate"} {
		l.triggers[i] = indexName(stateID, what)
	}
	l.keyIndex = indexName(stateID, "source_key")
	how := "triggers"
	if l.view {
		how = "synced by each run"
	}
	l.comment = fmt.Sprintf("enrich source link %d: %s key %s phone %s, %s", sourceLinkVersion,
		l.source.Sanitize(), pgx.Identifier{src.Key}.Sanitize(), pgx.Identifier{src.Phone}.Sanitize(), how)
	return l, nil
}

// state reads whether the link is current and, if not, the SQL that makes it so.
func (l *link) plan(ctx context.Context, q querier) (LinkState, error) {
	var comment string
	if err := q.QueryRow(ctx, sqlLinkComment, l.state.Sanitize()).Scan(&comment); err != nil {
		return LinkState{}, fmt.Errorf("read the link's record: %w", err)
	}
	// The triggers that call the function: the current ones, and any other (an older version's,
	// or on a table that was the source before), which the link drops.
	rows, err := q.Query(ctx, sqlLinkTriggers, l.fn.Sanitize()+"()", l.source.Sanitize(), l.triggers[:])
	if err != nil {
		return LinkState{}, fmt.Errorf("read the link's triggers: %w", err)
	}
	current := 0
	var stale []string
	var table, name string
	var ours bool
	if _, err := pgx.ForEachRow(rows, []any{&table, &name, &ours}, func() error {
		if ours {
			current++
		} else {
			stale = append(stale, fmt.Sprintf("DROP TRIGGER %s ON %s;", name, table))
		}
		return nil
	}); err != nil {
		return LinkState{}, fmt.Errorf("read the link's triggers: %w", err)
	}
	var keyType string
	if err := q.QueryRow(ctx, sqlStateKeyType, l.state.Sanitize()).Scan(&keyType); err != nil {
		return LinkState{}, fmt.Errorf("read the state's source_key: %w", err)
	}
	if keyType != "" && keyType != l.keyType {
		return LinkState{}, sourceErrorf("source.key = %q is %s, but the state table %s is keyed by %s: "+
			"it was linked to another key; drop the state table (its answers go with it) or name another with database.table",
			l.src.Key, l.keyType, l.state.Sanitize(), keyType)
	}
	want := len(l.triggers)
	if l.view {
		want = 0
	}
	if comment == l.comment && current == want && len(stale) == 0 && keyType != "" {
		return LinkState{Current: true}, nil
	}
	rows, err = q.Query(ctx, sqlStateUniques, l.state.Sanitize(), l.keyIndex)
	if err != nil {
		return LinkState{}, fmt.Errorf("read the state's indexes: %w", err)
	}
	uniques, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return LinkState{}, fmt.Errorf("read the state's indexes: %w", err)
	}
	if l.stateMissing {
		uniques = []string{"-- the unique indexes the migrations made on phone_number, chat_id and the target " +
			"(two rows of the source may share a number): DROP INDEX"}
	}
	return LinkState{SQL: strings.Join(append(stale, l.sql(uniques)), "\n")}, nil
}

// sql is the link: the state's source_key and its index (the phone's unique indexes dropped:
// two customers may share a number), the sync function and its triggers on the source, and
// the state filled from the source as it is, all in the caller's transaction. The triggers
// take SHARE ROW EXCLUSIVE on the source, so no write slips between them and the fill.
func (l *link) sql(dropUniques []string) string {
	state, src := l.state.Sanitize(), l.source.Sanitize()
	key, ph := pgx.Identifier{l.src.Key}.Sanitize(), pgx.Identifier{l.src.Phone}.Sanitize()
	var b strings.Builder
	fmt.Fprintf(&b, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS source_key %s;\n", state, l.keyType)
	for _, u := range dropUniques {
		if strings.HasPrefix(u, "--") {
			b.WriteString(u + "\n")
			continue
		}
		fmt.Fprintf(&b, "DROP INDEX %s;\n", u)
	}
	fmt.Fprintf(&b, "CREATE UNIQUE INDEX IF NOT EXISTS %s ON %s (source_key);\n", pgx.Identifier{l.keyIndex}.Sanitize(), state)
	r := strings.NewReplacer("{state}", state, "{fn}", l.fn.Sanitize(), "{src}", src, "{key}", key, "{phone}", ph,
		"{update}", pgx.Identifier{l.triggers[0]}.Sanitize(), "{insert}", pgx.Identifier{l.triggers[1]}.Sanitize(),
		"{delete}", pgx.Identifier{l.triggers[2]}.Sanitize(), "{truncate}", pgx.Identifier{l.triggers[3]}.Sanitize(),
		"{reset}", sqlStateReset, "{state_literal}", strings.ReplaceAll(state, "'", "''"))
	if !l.view {
		b.WriteString(r.Replace(sqlLinkSync))
	}
	b.WriteString(fill(l.source, l.state, l.src))
	fmt.Fprintf(&b, "COMMENT ON COLUMN %s.source_key IS '%s';\n", state, strings.ReplaceAll(l.comment, "'", "''"))
	return b.String()
}

// fill is the statements that bring state in step with source src as it is now: the rows
// whose source row is gone (or has no phone) deleted, new ones inserted, changed phones reset.
func fill(source, state pgx.Identifier, src Source) string {
	return strings.NewReplacer("{state}", state.Sanitize(), "{src}", source.Sanitize(), "{key}", pgx.Identifier{src.Key}.Sanitize(),
		"{phone}", pgx.Identifier{src.Phone}.Sanitize(), "{reset}", sqlStateReset).Replace(sqlSourceFill)
}

// sqlStateReset is what a new or changed phone does to the state's row: pending and due now,
// its old answer and attempts gone (they were the old number's), its lease dropped so that a
// call in flight for the old number writes nothing.
const sqlStateReset = `status = 'pending', next_attempt_at = now(), attempts = 0, reason = '',
        exists_whatsapp = NULL, avatar_available = NULL, url_avatar = NULL, exists_source = NULL,
        url_expires_at = NULL, avatar_sha256 = NULL, checked_at = NULL,
        locked_by = NULL, locked_until = NULL, lease_token = NULL, updated_at = now()`

// sqlLinkSync is the sync function and its triggers. The function runs as its owner
// (the role that ran migrate, which owns the state table) with a fixed search_path, so the
// application writing the source needs no right on the state table. Inserts and deletes are
// taken a statement at a time, from its transition table (a bulk load of a million customers is
// one INSERT into the state, not a million); a phone or key changes row by row (UPDATE OF those
// columns: a statement trigger would have to fire on every UPDATE of the table, the
// write-backs' included). A row that became due wakes followers: NOTIFY enrich_due with the
// state table's OID.
const sqlLinkSync = `CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $enrich$
DECLARE
    n bigint := 0;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM {state};
        RETURN NULL;
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM {state} AS t USING enrich_old AS o WHERE t.source_key = o.{key};
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO {state} AS t (source_key, phone_number)
        SELECT i.{key}, btrim(i.{phone}::text) FROM enrich_new AS i WHERE nullif(btrim(i.{phone}::text), '') IS NOT NULL
        ON CONFLICT (source_key) DO UPDATE
        SET phone_number = excluded.phone_number,
            {reset}
        WHERE t.phone_number IS DISTINCT FROM excluded.phone_number;
    ELSE
        IF OLD.{key} IS DISTINCT FROM NEW.{key} OR nullif(btrim(NEW.{phone}::text), '') IS NULL THEN
            DELETE FROM {state} WHERE source_key = OLD.{key};
        END IF;
        IF nullif(btrim(NEW.{phone}::text), '') IS NULL THEN
            RETURN NULL;
        END IF;
        INSERT INTO {state} AS t (source_key, phone_number)
        VALUES (NEW.{key}, btrim(NEW.{phone}::text))
        ON CONFLICT (source_key) DO UPDATE
        SET phone_number = excluded.phone_number,
            {reset}
        WHERE t.phone_number IS DISTINCT FROM excluded.phone_number;
    END IF;
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        PERFORM pg_notify('enrich_due', '{state_literal}'::regclass::oid::text);
    END IF;
    RETURN NULL;
END
$enrich$;
DROP TRIGGER IF EXISTS {update} ON {src};
CREATE TRIGGER {update} AFTER UPDATE OF {key}, {phone} ON {src}
    FOR EACH ROW EXECUTE FUNCTION {fn}();
DROP TRIGGER IF EXISTS {insert} ON {src};
CREATE TRIGGER {insert} AFTER INSERT ON {src} REFERENCING NEW TABLE AS enrich_new
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
DROP TRIGGER IF EXISTS {delete} ON {src};
CREATE TRIGGER {delete} AFTER DELETE ON {src} REFERENCING OLD TABLE AS enrich_old
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
DROP TRIGGER IF EXISTS {truncate} ON {src};
CREATE TRIGGER {truncate} AFTER TRUNCATE ON {src}
    FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
`

// sqlSourceFill brings the state in step with the source as it is: LinkSource runs it once,
// SyncSource at each run's start for a view (after keyOnce).
const sqlSourceFill = `DELETE FROM {state} AS t
WHERE NOT EXISTS (SELECT FROM {src} AS s WHERE s.{key} = t.source_key AND nullif(btrim(s.{phone}::text), '') IS NOT NULL);
INSERT INTO {state} AS t (source_key, phone_number)
SELECT s.{key}, btrim(s.{phone}::text) FROM {src} AS s WHERE s.{key} IS NOT NULL AND nullif(btrim(s.{phone}::text), '') IS NOT NULL
ON CONFLICT (source_key) DO UPDATE
SET phone_number = excluded.phone_number,
    {reset}
WHERE t.phone_number IS DISTINCT FROM excluded.phone_number;
`

// SourceLink says whether src's link to state (the state table, migrated) is current and, if
// not, the SQL LinkSource would run: migrate --dry-run prints it.
func SourceLink(ctx context.Context, pool *pgxpool.Pool, state string, src Source) (LinkState, error) {
	l, err := resolveLink(ctx, pool, state, src)
	if err != nil {
		return LinkState{}, fmt.Errorf("link source: %w", err)
	}
	st, err := l.plan(ctx, pool)
	if err != nil {
		return LinkState{}, fmt.Errorf("link source: %w", err)
	}
	return st, nil
}

// LinkSource puts the triggers that keep state (the state table, migrated by MigrateWith) in
// step with src, and fills it from src's rows as they are, in one transaction under the
// migration lock with o's lock_timeout; it reports whether it changed anything. It is what
// `enrich migrate` does after the migrations when a source is configured, and nothing when
// the link is current, so running it every night costs two catalog reads, not a scan. Linking
// the first time scans the source once and holds its writes while it fills the state.
func LinkSource(ctx context.Context, pool *pgxpool.Pool, state string, src Source, o MigrateOptions) (bool, error) {
	if o.LockTimeout <= 0 {
		o.LockTimeout = MigrateLockTimeoutDefault
	}
	changed := false
	err := pgx.BeginTxFunc(ctx, pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlMigrateLock, migrateLockKey()); err != nil {
			return fmt.Errorf("take advisory lock %q: %w", migrateLockName, err)
		}
		if _, err := tx.Exec(ctx, sqlMigrateLockTimeout, strconv.FormatInt(o.LockTimeout.Milliseconds(), 10)); err != nil {
			return fmt.Errorf("set lock_timeout: %w", err)
		}
		l, err := resolveLink(ctx, tx, state, src)
		if err != nil {
			return err
		}
		st, err := l.plan(ctx, tx)
		if err != nil || st.Current {
			return err
		}
		if l.view {
			if err := keyOnce(ctx, tx, l.source, src.Key); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, st.SQL); err != nil {
			if isPermissionDenied(err) {
				return fmt.Errorf("apply: %w: putting triggers on %s takes its owner or the TRIGGER privilege "+
					"(GRANT TRIGGER ON %s TO <this role>)", err, l.source.Sanitize(), l.source.Sanitize())
			}
			return fmt.Errorf("apply: %w", err)
		}
		changed = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("link source %s: %w", src.Table, err)
	}
	return changed, nil
}

// checkSource is the start-up check of a source: linked by this version, and every mapped
// column there, writable and of a type that takes its values. The errors name the key and
// the remedy.
func (s *Store) checkSource(ctx context.Context) error {
	l, err := resolveLink(ctx, s.pool, strings.Join(s.table, "."), s.src.Source)
	if err != nil {
		return err
	}
	st, err := l.plan(ctx, s.pool)
	if err != nil {
		return err
	}
	if !st.Current {
		return sourceErrorf("source.table %s is not linked to %s as configured (key %q, phone %q): run `enrich migrate` "+
			"(enrich migrate --dry-run prints what it would do)", l.source.Sanitize(), l.state.Sanitize(), s.src.Key, s.src.Phone)
	}
	for _, m := range s.src.WriteBack.columns() {
		key := "source.write_back." + m.key
		c, err := readColumn(ctx, s.pool, l.source.Sanitize(), m.source)
		if err != nil {
			return fmt.Errorf("read %s: %w", key, err)
		}
		if err := fits(key, m, c, l.source.Sanitize()); err != nil {
			return err
		}
	}
	return nil
}

// fits says whether column c of table can take the mapped values.
func fits(key string, m mapped, c *column, table string) error {
	switch {
	case c == nil:
		return sourceErrorf("%s = %q: %s has no such column: add it, or remove the key", key, m.source, table)
	case c.generated:
		return sourceErrorf("%s = %q: the column is generated and cannot be written: name another", key, m.source)
	case !c.updatable:
		return sourceErrorf("%s = %q: the column cannot be updated (a view's computed column, or a view PostgreSQL "+
			"cannot update): name a plain column of the view's table, or make the view updatable", key, m.source)
	case !c.mayUpdate:
		return sourceErrorf("%s = %q: this role may not update the column: GRANT UPDATE (%s) ON %s TO <this role>",
			key, m.source, pgx.Identifier{m.source}.Sanitize(), table)
	}
	ok := false
	want := ""
	switch m.kind {
	case "bool":
		ok, want = c.typname == "bool", "boolean"
	case "text":
		ok, want = c.typname == "text" || c.typname == "varchar", "text or varchar"
		if ok && c.maxChars >= 0 && (m.minChars < 0 || c.maxChars < m.minChars) {
			need := "make it text"
			if m.minChars > 0 {
				need += fmt.Sprintf(" or varchar(%d) or longer", m.minChars)
			}
			return sourceErrorf("%s = %q is %s: too short for the values it would take (a value too long would fail "+
				"the whole batch): %s", key, m.source, c.typ, need)
		}
	case "time":
		ok, want = c.typname == "timestamptz" || c.typname == "timestamp" || c.typname == "date", "timestamptz, timestamp or date"
	}
	if !ok {
		return sourceErrorf("%s = %q is %s: it takes %s: change the column's type or name another", key, m.source, c.typ, want)
	}
	return nil
}

// SourceTable is the source table the Store's table is the state of, as configured; "" for a
// contacts table. Status shows it, so the state's counts are read as the source's.
func (s *Store) SourceTable() string {
	if s.src == nil {
		return ""
	}
	return s.src.Table
}

// CheckEnqueue refuses enqueueing into a source table's state: its rows come from the source,
// and a row enqueued there would have no source row to write to.
func (s *Store) CheckEnqueue() error {
	if s.src == nil {
		return nil
	}
	return sourceErrorf("enqueue: %s is the state of source.table %s, whose rows become due by themselves: "+
		"insert the numbers into %s instead", s.Table(), s.src.table.Sanitize(), s.src.table.Sanitize())
}

// keyOnce refuses a view that holds a key twice: the fill would keep whichever phone came
// last, and a write-back would give both rows one answer.
func keyOnce(ctx context.Context, q querier, view pgx.Identifier, key string) error {
	var twice string
	err := q.QueryRow(ctx, fmt.Sprintf(sqlKeyTwice, pgx.Identifier{key}.Sanitize(), view.Sanitize())).Scan(&twice)
	switch {
	case err == nil:
		return sourceErrorf("source.key = %q is not unique in %s: the view holds %s twice, and results are "+
			"written back through the key: name a key the view holds once per row", key, view.Sanitize(), twice)
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	}
	return fmt.Errorf("check source.key is unique: %w", err)
}

// sqlKeyTwice finds a key (%[1]s) that view %[2]s holds more than once.
const sqlKeyTwice = `SELECT %[1]s::text FROM %[2]s WHERE %[1]s IS NOT NULL GROUP BY %[1]s HAVING count(*) > 1 LIMIT 1`

// sqlSyncLock serializes the syncs of one state table ($1, its quoted name), so that two runs
// starting together do not upsert the same rows against each other.
const sqlSyncLock = `SELECT pg_advisory_xact_lock(hashtextextended('enrich.sync ' || $1::text, 0))`

// SyncSource brings the state in step with a source that is a view (or a materialized view, a
// foreign table), which cannot carry the triggers that keep a table's state in step: one scan
// of the view, in one transaction, deleting the rows gone, inserting the new ones, resetting
// those whose phone changed. A run calls it before its first claim; it returns how many state
// rows it changed, and does nothing (0) for a table or without a source. A key the view holds
// twice fails it with a *SourceError.
func (s *Store) SyncSource(ctx context.Context) (int64, error) {
	if s.src == nil {
		return 0, nil
	}
	var schema, name, kind string
	if err := s.pool.QueryRow(ctx, sqlSourceTable, s.src.table.Sanitize()).Scan(&schema, &name, &kind); err != nil {
		return 0, fmt.Errorf("sync source %s: %w", s.src.table.Sanitize(), err)
	}
	if kind == "r" || kind == "p" {
		return 0, nil
	}
	var n int64
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.ReadCommitted}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, sqlSyncLock, s.Table()); err != nil {
			return err
		}
		if err := keyOnce(ctx, tx, s.src.table, s.src.Key); err != nil {
			return err
		}
		for _, stmt := range splitStatements(fill(s.src.table, s.table, s.src.Source)) {
			tag, err := tx.Exec(ctx, stmt)
			if err != nil {
				return err
			}
			n += tag.RowsAffected()
		}
		return nil
	})
	var se *SourceError
	if errors.As(err, &se) {
		return 0, err
	}
	if err != nil {
		return 0, fmt.Errorf("sync source %s: %w", s.src.table.Sanitize(), err)
	}
	return n, nil
}

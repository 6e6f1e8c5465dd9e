package store

import (
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// TableDefault is the table Config.Table and Migrate use when given "".
const TableDefault = "contacts"

// maxIdentifierBytes is PostgreSQL's identifier limit (NAMEDATALEN-1). Longer names are silently
// truncated by the server, which would make the table we track differ from the one we create.
const maxIdentifierBytes = 63

// ParseTable turns a user's table name into a pgx.Identifier, because the name comes from
// configuration and is pasted into SQL: it must never be able to inject SQL, and a name that
// is not a plain identifier is far more likely a mistake (a pasted statement, a stray quote)
// than a table anyone wants.
//
// The name is "table" or "schema.table"; each part must be a plain identifier,
// [A-Za-z_][A-Za-z0-9_]*, of at most 63 bytes (PostgreSQL's limit). It is still always quoted,
// so it is case-sensitive: "Contacts" and "contacts" are two tables.
func ParseTable(name string) (pgx.Identifier, error) {
	if name == "" {
		return nil, errors.New(`store: empty table name: use "contacts" or "schema.contacts"`)
	}
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf(`store: table name %q has %d dot-separated parts: use "table" or "schema.table"`, name, len(parts))
	}
	for _, p := range parts {
		switch {
		case p == "":
			return nil, fmt.Errorf(`store: table name %q has an empty part: use "table" or "schema.table"`, name)
		case len(p) > maxIdentifierBytes:
			return nil, fmt.Errorf("store: table name %q: part %q is longer than PostgreSQL's %d bytes: shorten it", name, p, maxIdentifierBytes)
		case !isIdentifier(p):
			return nil, fmt.Errorf("store: table name %q is not a plain identifier: use letters, digits and underscores, "+
				`not starting with a digit, optionally schema-qualified ("contacts", "crm.contacts")`, name)
		}
	}
	return pgx.Identifier(parts), nil
}

// isIdentifier reports whether s matches [A-Za-z_][A-Za-z0-9_]*.
func isIdentifier(s string) bool {
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b == '_', 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z':
		case '0' <= b && b <= '9' && i > 0:
		default:
			return false
		}
	}
	return s != ""
}

// bareName is the table name without its schema: the key migrations are recorded under and the
// stem of index names.
func bareName(id pgx.Identifier) string { return id[len(id)-1] }

// indexName derives an index name from the table name, because the table name is the user's and
// two tables in one schema must not fight over index names. PostgreSQL would truncate a name
// past 63 bytes and could make two of them equal, so a long stem is cut and marked with a hash
// of the whole table name instead.
func indexName(id pgx.Identifier, suffix string) string {
	stem := bareName(id)
	if len(stem)+1+len(suffix) <= maxIdentifierBytes {
		return stem + "_" + suffix
	}
	h := fnv.New32a()
	h.Write([]byte(stem))
	tag := fmt.Sprintf("%08x", h.Sum32())
	keep := maxIdentifierBytes - len(suffix) - len(tag) - 2
	if keep < 0 {
		keep = 0
	}
	// Cut on a rune boundary so the name stays valid UTF-8.
	for keep > 0 && keep < len(stem) && !isRuneStart(stem[keep]) {
		keep--
	}
	return stem[:keep] + "_" + tag + "_" + suffix
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// CheckSchema validates a schema name (database.budget_schema) the way ParseTable validates a
// table's parts, so a bad one fails at start-up.
func CheckSchema(name string) error {
	switch {
	case len(name) > maxIdentifierBytes:
		return fmt.Errorf("store: budget schema %q is longer than PostgreSQL's %d bytes: shorten it", name, maxIdentifierBytes)
	case !isIdentifier(name):
		return fmt.Errorf("store: budget schema %q is not a plain identifier: use letters, digits and underscores, not starting with a digit", name)
	}
	return nil
}

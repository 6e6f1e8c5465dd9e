// Package migrations holds the SQL that creates and evolves the contacts table, embedded in the
// binary so that `enrich migrate` needs no files beside it.
//
// The files are applied in name order by store.Migrate, each in its own transaction, and recorded
// in enrich_schema_migrations. A file is named NNNN_what.sql; NNNN is its version and never
// changes once released: add a new file instead of editing an old one. Version 0018 is taken:
// 0018_keeper_kept.sql (a column kept_by_owner in the instances' budget) was on main for an
// hour on 2026-12-03 and reverted; a database migrated then records it, so the next file is 0019.
//
// The table name is chosen by the user, so the SQL cannot name it. The files use placeholders
// that store.Migrate replaces with quoted identifiers before running them:
//
//	{{table}}        the table, quoted and maybe schema-qualified: "crm"."contacts"
//	{{name:SUFFIX}}  an index name derived from the bare table name: "contacts_SUFFIX"
//	                 (unqualified: PostgreSQL puts an index in its table's schema)
//	{{shared:NAME}}  a table every contacts table of the schema shares: "crm"."NAME" for
//	                 crm.contacts, "NAME" (the search_path's first schema) for contacts; such a
//	                 file must be idempotent (CREATE ... IF NOT EXISTS), since each contacts
//	                 table of the schema runs it
//
// Any other {{...}} is an error, so a typo fails the migration instead of reaching PostgreSQL.
//
// A file whose first line is "-- enrich:no-transaction" runs outside a transaction, one
// statement at a time (each ends with a semicolon at the end of a line), for CREATE INDEX
// CONCURRENTLY, which the runs' reads and writes do not wait for. Its statements must be
// idempotent (CREATE INDEX CONCURRENTLY IF NOT EXISTS): it may be cut half-way and run again, or
// run by two pods at once. Build large indexes this way; a transactional file's CREATE INDEX
// holds every write to the table until it ends.
package migrations

import "embed"

// FS holds every migration file. It is read by store.Migrate; tools may list it to show what a
// database is missing.
//
//go:embed *.sql
var FS embed.FS

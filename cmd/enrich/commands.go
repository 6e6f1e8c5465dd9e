package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgxpool"
)

// tableFlag is the --table flag every database command takes.
func tableFlag(f *flags) {
	key(f, "table", "contacts table, schema-qualified if needed (database.table)",
		func(c *Config) *string { return &c.Database.Table })
}

// openStore parses the flags, connects, and opens the store: the start of every database
// command that needs nothing between the two.
func openStore(ctx context.Context, f *flags, args []string, needAPI bool) (*pgxpool.Pool, *store.Store, []string, error) {
	rest, err := f.parse(args, needAPI)
	if err != nil {
		return nil, nil, nil, err
	}
	pool, st, err := f.a.connectStore(ctx)
	return pool, st, rest, err
}

// connectStore connects and opens the store, once the configuration is parsed and valid.
func (a *app) connectStore(ctx context.Context) (*pgxpool.Pool, *store.Store, error) {
	pool, err := a.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	st, err := store.New(pool, store.Config{Table: a.cfg.Database.Table, BudgetSchema: a.cfg.Database.BudgetSchema,
		Source: a.cfg.source()})
	if err != nil {
		pool.Close()
		return nil, nil, configErrorf("database.table: %s", plainError(err))
	}
	return pool, st, nil
}

func cmdMigrate(ctx context.Context, a *app, args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return cmdMigrateStatus(ctx, a, args[1:])
	}
	f := newFlags(a, "migrate", "migrate [status] [flags]\n\n"+
		"Brings the table up to the newest migration (safe from many pods at once); with [source], then links\n"+
		"your table to it: triggers that keep the state in step, and the state filled once. No column of yours changes.\n"+
		"  enrich migrate status [--json]   lists each migration file, applied (when) or pending, and changes nothing")
	tableFlag(f)
	dryRun := f.Bool("dry-run", false, "print the SQL of the pending migrations, as they would run on the table, and change nothing")
	pool, st, _, err := openStore(ctx, f, args, false)
	if err != nil {
		return err
	}
	defer pool.Close()
	if *dryRun {
		states, err := store.Migrations(ctx, pool, a.cfg.Database.Table, a.cfg.migrateOptions())
		if err != nil {
			return dbErr("migrate --dry-run", err)
		}
		pending := 0
		for _, m := range states {
			if m.Applied {
				continue
			}
			pending++
			how := "in one transaction, under the migration lock, with lock_timeout"
			if m.Concurrent {
				how = "outside a transaction (CREATE INDEX CONCURRENTLY), then recorded under the migration lock"
			}
			fmt.Fprintf(a.io.out, "-- %s: would run %s\n%s\n\n", m.Name, how, strings.TrimSpace(m.SQL))
		}
		if src := a.cfg.source(); src != nil {
			link, err := store.SourceLink(ctx, pool, a.cfg.Database.Table, *src)
			if err != nil {
				return dbErr("migrate --dry-run", err)
			}
			if !link.Current {
				pending++
				fmt.Fprintf(a.io.out, "-- link source.table %s to %s: would run in one transaction, under the migration lock, "+
					"with lock_timeout; it holds the source's writes while it fills the state\n%s\n", src.Table, st.Table(),
					strings.TrimSpace(link.SQL))
			}
		}
		if pending == 0 {
			fmt.Fprintf(a.io.out, "%s is up to date: nothing would run\n", st.Table())
		} else {
			fmt.Fprintf(a.io.out, "-- dry run: %d migration(s) pending for %s, nothing was changed\n", pending, st.Table())
		}
		return nil
	}
	applied, err := store.MigrateWith(ctx, pool, a.cfg.Database.Table, a.cfg.migrateOptions())
	if err != nil {
		return dbErr("migrate", err)
	}
	if src := a.cfg.source(); src != nil {
		linked, err := store.LinkSource(ctx, pool, a.cfg.Database.Table, *src, a.cfg.migrateOptions())
		if err != nil {
			return dbErr("migrate", err)
		}
		if linked {
			applied = append(applied, "the source link of "+src.Table)
		}
	}
	if len(applied) == 0 {
		fmt.Fprintf(a.io.out, "%s is up to date\n", st.Table())
		return nil
	}
	for _, m := range applied {
		fmt.Fprintf(a.io.out, "applied %s to %s\n", m, st.Table())
	}
	return nil
}

// cmdMigrateStatus prints each migration file and whether the table has it: what an upgrade
// would apply, without taking a lock.
func cmdMigrateStatus(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "migrate status", "migrate status [flags]")
	tableFlag(f)
	asJSON := f.Bool("json", false, "print one JSON object: the table, and each file with version, name, applied, applied_at")
	pool, st, _, err := openStore(ctx, f, args, false)
	if err != nil {
		return err
	}
	defer pool.Close()
	states, err := store.Migrations(ctx, pool, a.cfg.Database.Table, a.cfg.migrateOptions())
	if err != nil {
		return dbErr("migrate status", err)
	}
	pending := 0
	for i := range states {
		states[i].SQL = "" // the status is a list; the SQL is --dry-run's
		if !states[i].Applied {
			pending++
		}
	}
	if *asJSON {
		enc := json.NewEncoder(a.io.out)
		return enc.Encode(struct {
			Table      string                 `json:"table"`
			Pending    int                    `json:"pending"`
			Migrations []store.MigrationState `json:"migrations"`
		}{st.Table(), pending, states})
	}
	w := tabwriter.NewWriter(a.io.out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "migration\tstate\tapplied at\n")
	for _, m := range states {
		state, at := "pending", ""
		if m.Applied {
			state, at = "applied", m.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", m.Name, state, at)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if pending > 0 {
		fmt.Fprintf(a.io.out, "%s: %d migration(s) pending: run enrich migrate (enrich migrate --dry-run prints their SQL)\n", st.Table(), pending)
	} else {
		fmt.Fprintf(a.io.out, "%s is up to date\n", st.Table())
	}
	return nil
}

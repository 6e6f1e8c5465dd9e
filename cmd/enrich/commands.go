package main

import (
	"context"
	"fmt"

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
	st, err := store.New(pool, store.Config{Table: a.cfg.Database.Table})
	if err != nil {
		pool.Close()
		return nil, nil, configErrorf("database.table: %v", err)
	}
	return pool, st, nil
}

func cmdMigrate(ctx context.Context, a *app, args []string) error {
	f := newFlags(a, "migrate", "migrate [flags]")
	tableFlag(f)
	pool, st, _, err := openStore(ctx, f, args, false)
	if err != nil {
		return err
	}
	defer pool.Close()
	applied, err := store.Migrate(ctx, pool, a.cfg.Database.Table)
	if err != nil {
		return dbErr("migrate", err)
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

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/migrations"
)

func connect(ctx context.Context, url string) (*pgx.Conn, error) {
	if url == "" {
		return nil, fmt.Errorf("%w: --database-url (RIPPLE_DATABASE_URL) is required", errUsage)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	return conn, nil
}

func runMigrate(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "migrate", "--database-url URL")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of the primary")
	if _, err := parseFlags(env, fs, args); err != nil {
		return err
	}
	conn, err := connect(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := migrations.Migrate(ctx, conn); err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, "ripple: migrations applied")
	return nil
}

func runEnable(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "enable", "TABLE --root-key COLUMN --database-url URL")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of the primary")
	rootKey := fs.String("root-key", "", "column holding the organisation (root key) of each row")
	pos, err := parseFlags(env, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *rootKey == "" {
		fs.Usage()
		return errUsage
	}
	conn, err := connect(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := migrations.Migrate(ctx, conn); err != nil {
		return err
	}
	if _, err := migrations.Enable(ctx, conn, pos[0], *rootKey); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "ripple: %s is syncable (root key %s)\n", pos[0], *rootKey)
	return nil
}

func runDisable(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "disable", "TABLE --database-url URL")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of the primary")
	pos, err := parseFlags(env, fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	conn, err := connect(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := migrations.Disable(ctx, conn, pos[0]); err != nil {
		if errors.Is(err, migrations.ErrNotEnabled) {
			return fmt.Errorf("%s is not a sync table: %w", pos[0], err)
		}
		return err
	}
	fmt.Fprintf(env.stdout, "ripple: %s no longer syncs\n", pos[0])
	return nil
}

func runPrune(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "prune", "--database-url URL [--retention 720h] [--mutation-retention 720h]")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of the primary")
	retention := fs.Duration("retention", migrations.DefaultRetention, "keep tombstones this long")
	mutRetention := fs.Duration("mutation-retention", migrations.DefaultMutationRetention, "keep the records of processed mutations this long")
	if _, err := parseFlags(env, fs, args); err != nil {
		return err
	}
	conn, err := connect(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	res, err := migrations.Prune(ctx, conn, *retention)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "ripple: pruned %+v (retention %s)\n", res, retention.Round(time.Second))
	n, err := migrations.PruneMutations(ctx, conn, *mutRetention)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "ripple: pruned %d mutation records (retention %s)\n", n, mutRetention.Round(time.Second))
	return nil
}

package migrations

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// demoTables lists the demo schema's sync tables (root key DemoRootKey), in
// the order DemoSchema enables them.
var demoTables = []string{"organisations", "todo_lists", "todo_items"}

// DemoRootKey is the root key column of every demo table.
const DemoRootKey = "org_id"

// DemoTables returns the names of the demo schema's sync tables.
func DemoTables() []string { return append([]string(nil), demoTables...) }

const demoDDL = `
CREATE TABLE IF NOT EXISTS public.organisations (
    org_id     text PRIMARY KEY,
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS public.todo_lists (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id     text NOT NULL REFERENCES public.organisations (org_id) ON DELETE CASCADE,
    title      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS public.todo_items (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id     text NOT NULL REFERENCES public.organisations (org_id) ON DELETE CASCADE,
    list_id    uuid NOT NULL REFERENCES public.todo_lists (id) ON DELETE CASCADE,
    title      text NOT NULL,
    done       boolean NOT NULL DEFAULT false,
    position   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS todo_items_list_id ON public.todo_items (list_id);
`

const demoSeed = `
INSERT INTO public.organisations (org_id, name) VALUES ('acme', 'Acme Corp'), ('globex', 'Globex');
WITH l AS (
    INSERT INTO public.todo_lists (org_id, title) VALUES
        ('acme', 'Launch'), ('acme', 'Groceries'), ('globex', 'Roadmap')
    RETURNING id, org_id, title
)
INSERT INTO public.todo_items (org_id, list_id, title, done, position)
SELECT l.org_id, l.id, v.title, v.done, v.position
FROM l JOIN (VALUES
    ('Launch', 'Write the announcement', false, 1),
    ('Launch', 'Ship it', false, 2),
    ('Groceries', 'Milk', true, 1),
    ('Groceries', 'Bread', false, 2),
    ('Roadmap', 'Plan Q3', false, 1)
) AS v(list, title, done, position) ON v.list = l.title;
`

// DemoSchema creates the demo schema used by "ripple dev" on its own
// throwaway cluster: organisations, todo_lists and todo_items in schema
// public, all rooted at org_id, enables them for sync and, when
// organisations is empty, inserts a few rows for the organisations "acme"
// and "globex". It applies Migrate first, runs in one transaction and is
// idempotent. Never run it against a user's database.
func DemoSchema(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := migrateTx(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, demoDDL); err != nil {
			return fmt.Errorf("migrations: create demo tables: %w", err)
		}
		for _, t := range demoTables {
			if _, err := enableTx(ctx, tx, t, DemoRootKey); err != nil {
				return fmt.Errorf("migrations: enable demo table: %w", err)
			}
		}
		var empty bool
		if err := tx.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM public.organisations)").Scan(&empty); err != nil {
			return fmt.Errorf("migrations: demo seed: %w", err)
		}
		if empty {
			if _, err := tx.Exec(ctx, demoSeed); err != nil {
				return fmt.Errorf("migrations: demo seed: %w", err)
			}
		}
		return nil
	})
}

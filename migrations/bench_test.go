package migrations_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/testenv"
)

// BenchmarkTriggers measures what enabling costs ordinary writes: each
// operation inserts, updates (moving rows to another organisation, so every
// row leaves a tombstone when enabled) and deletes 1,000 rows, on a plain
// table and on an enabled one. Rows per second = 1000 * 1e9 / ns/op.
func BenchmarkTriggers(b *testing.B) {
	for _, mode := range []string{"plain", "enabled"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, testenv.SharedPostgres(b).CreateDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, "CREATE TABLE todos (id bigint PRIMARY KEY, org_id text NOT NULL, title text)"); err != nil {
				b.Fatal(err)
			}
			if mode == "enabled" {
				if _, err := migrations.Enable(ctx, conn, "todos", "org_id"); err != nil {
					b.Fatal(err)
				}
			}
			stmts := []string{
				"INSERT INTO todos SELECT g, 'acme', 'title ' || g FROM generate_series(1, 1000) g",
				"UPDATE todos SET org_id = 'globex'",
				"DELETE FROM todos",
			}
			for b.Loop() {
				for _, s := range stmts {
					if _, err := conn.Exec(ctx, s); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.StopTimer()
			if mode == "enabled" {
				if _, err := migrations.Prune(ctx, conn, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

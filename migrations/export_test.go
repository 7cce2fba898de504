package migrations

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// MigrateTo is Migrate applying the migrations up to version last only, so
// that tests can build a database of an earlier version and upgrade it.
func MigrateTo(ctx context.Context, conn *pgx.Conn, last int) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return migrateTxTo(ctx, tx, last)
	})
}

package migrations

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/schema"
)

// columnInfo is one user column of a table as Enable inspects it.
type columnInfo struct {
	name     string
	typeOID  uint32
	typeName string // format_type, e.g. "character varying(20)"
	dateTime bool   // of the date/time category (also a domain over one)
}

// loadColumns returns the table's live user columns in attribute order.
func loadColumns(ctx context.Context, q execer, relOID uint32) ([]columnInfo, error) {
	rows, err := q.Query(ctx, `
SELECT a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), t.typcategory = 'D'
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`, relOID)
	if err != nil {
		return nil, fmt.Errorf("migrations: read columns: %w", err)
	}
	cols, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (columnInfo, error) {
		var c columnInfo
		err := r.Scan(&c.name, &c.typeOID, &c.typeName, &c.dateTime)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("migrations: read columns: %w", err)
	}
	return cols, nil
}

// checkType returns an error naming the column and its type when the value
// codec (schema.Types) cannot encode it.
func (c columnInfo) checkType(types *schema.Types) error {
	if err := types.Supported(c.typeOID); err != nil {
		return fmt.Errorf("%w: column %q has type %s", ErrUnsupportedType, c.name, c.typeName)
	}
	return nil
}

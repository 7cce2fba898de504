package migrations

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// builtinSupported lists the built-in type OIDs the value codec encodes
// (issue 2): text-like, integers, numeric, floats, bool, uuid, json, bytea,
// date/time types and interval. Enums and one-dimensional arrays of any of
// these are supported too.
var builtinSupported = map[uint32]string{
	16:   "bool",
	17:   "bytea",
	20:   "int8",
	21:   "int2",
	23:   "int4",
	25:   "text",
	114:  "json",
	700:  "float4",
	701:  "float8",
	1042: "bpchar",
	1043: "varchar",
	1082: "date",
	1083: "time",
	1114: "timestamp",
	1184: "timestamptz",
	1186: "interval",
	1700: "numeric",
	2950: "uuid",
	3802: "jsonb",
}

// columnInfo is one user column of a table as Enable inspects it.
type columnInfo struct {
	name     string
	typeOID  uint32
	typeName string // format_type, e.g. "character varying(20)"
	typType  string // pg_type.typtype: b, e, d, c, r, m, p
	elemOID  uint32 // element type of an array type, else 0
	elemType string // typtype of the element type
}

// loadColumns returns the table's live user columns in attribute order.
func loadColumns(ctx context.Context, q execer, relOID uint32) ([]columnInfo, error) {
	rows, err := q.Query(ctx, `
SELECT a.attname, a.atttypid, format_type(a.atttypid, a.atttypmod), t.typtype::text,
       CASE WHEN t.typcategory = 'A' THEN t.typelem ELSE 0 END,
       coalesce(e.typtype::text, '')
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type e ON t.typcategory = 'A' AND e.oid = t.typelem
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`, relOID)
	if err != nil {
		return nil, fmt.Errorf("migrations: read columns: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (columnInfo, error) {
		var c columnInfo
		err := r.Scan(&c.name, &c.typeOID, &c.typeName, &c.typType, &c.elemOID, &c.elemType)
		return c, err
	})
}

// supported reports whether the value codec can encode the column's type.
// It returns an error naming the column and its type otherwise.
func (c columnInfo) supported() error {
	if c.typeSupported(c.typeOID, c.typType) {
		return nil
	}
	if c.elemOID != 0 && c.typeSupported(c.elemOID, c.elemType) {
		return nil
	}
	return fmt.Errorf("column %q has type %s: %w", c.name, c.typeName, ErrUnsupportedType)
}

func (columnInfo) typeSupported(oid uint32, typType string) bool {
	if typType == "e" {
		return true
	}
	_, ok := builtinSupported[oid]
	return ok
}

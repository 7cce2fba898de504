package schema

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
)

// Querier runs a query. *pgx.Conn, *pgxpool.Pool and pgx.Tx satisfy it.
//
// Values given to the codec must be in text format: a catch-up query asks
// for it with pgx.QueryResultFormats{pgx.TextFormatCode} as the first
// argument (or pgconn's ExecParams with text result formats) and passes
// rows.RawValues() to RowEncoder.AppendRow, with columns built from
// rows.FieldDescriptions() (Name, DataTypeOID). The connection must use
// SessionSettings (ApplySessionSettings).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// kind is how the codec encodes a value of one type.
type kind uint8

const (
	kindUnsupported kind = iota
	kindString           // JSON string of the text form
	kindInt              // JSON number: int2, int4, oid
	kindFloat            // JSON number, NaN and ±Infinity as strings
	kindBool             // t / f -> true / false
	kindJSON             // the text embedded as JSON
	kindArray            // JSON array of elements of typeInfo.elem
)

// typeInfo says how one type OID encodes.
type typeInfo struct {
	name string
	kind kind
	elem kind // element kind when kind == kindArray
}

// typeMap maps type OIDs to their encoding. It is never modified once built.
type typeMap map[uint32]typeInfo

// Built-in type OIDs the codec knows without asking a database. They are fixed
// in every PostgreSQL release (pg_type.dat).
const (
	oidBool        = 16
	oidBytea       = 17
	oidChar        = 18
	oidName        = 19
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidText        = 25
	oidOID         = 26
	oidXID         = 28
	oidJSON        = 114
	oidCIDR        = 650
	oidFloat4      = 700
	oidFloat8      = 701
	oidMacaddr8    = 774
	oidMacaddr     = 829
	oidInet        = 869
	oidBPChar      = 1042
	oidVarchar     = 1043
	oidDate        = 1082
	oidTime        = 1083
	oidTimestamp   = 1114
	oidTimestamptz = 1184
	oidInterval    = 1186
	oidTimetz      = 1266
	oidNumeric     = 1700
	oidUUID        = 2950
	oidPgLSN       = 3220
	oidJSONB       = 3802
	oidXID8        = 5069
)

// builtin is one built-in scalar type and its array type.
type builtin struct {
	oid, arrayOID uint32
	name          string
	kind          kind
}

// builtins lists the built-in types the codec supports.
func builtins() []builtin {
	return []builtin{
		{oidBool, 1000, "bool", kindBool},
		{oidBytea, 1001, "bytea", kindString},
		{oidChar, 1002, "char", kindString},
		{oidName, 1003, "name", kindString},
		{oidInt8, 1016, "int8", kindString},
		{oidInt2, 1005, "int2", kindInt},
		{oidInt4, 1007, "int4", kindInt},
		{oidText, 1009, "text", kindString},
		{oidOID, 1028, "oid", kindInt},
		{oidXID, 1011, "xid", kindString},
		{oidJSON, 199, "json", kindJSON},
		{oidCIDR, 651, "cidr", kindString},
		{oidFloat4, 1021, "float4", kindFloat},
		{oidFloat8, 1022, "float8", kindFloat},
		{oidMacaddr8, 775, "macaddr8", kindString},
		{oidMacaddr, 1040, "macaddr", kindString},
		{oidInet, 1041, "inet", kindString},
		{oidBPChar, 1014, "bpchar", kindString},
		{oidVarchar, 1015, "varchar", kindString},
		{oidDate, 1182, "date", kindString},
		{oidTime, 1183, "time", kindString},
		{oidTimestamp, 1115, "timestamp", kindString},
		{oidTimestamptz, 1185, "timestamptz", kindString},
		{oidInterval, 1187, "interval", kindString},
		{oidTimetz, 1270, "timetz", kindString},
		{oidNumeric, 1231, "numeric", kindString},
		{oidUUID, 2951, "uuid", kindString},
		{oidPgLSN, 3221, "pg_lsn", kindString},
		{oidJSONB, 3807, "jsonb", kindJSON},
		{oidXID8, 271, "xid8", kindString},
	}
}

func builtinMap() typeMap {
	b := builtins()
	m := make(typeMap, 2*len(b))
	for _, t := range b {
		m[t.oid] = typeInfo{name: t.name, kind: t.kind}
		m[t.arrayOID] = typeInfo{name: "_" + t.name, kind: kindArray, elem: t.kind}
	}
	return m
}

// Types resolves type OIDs to their JSON encoding: the built-in types, plus
// (after LoadTypes or Refresh) the enums, domains and array types of one
// database.
//
// A Types is safe for concurrent use. Its type map is immutable; Refresh
// builds a new one and swaps it in atomically, so readers see either the old
// or the new map, never a mix. A RowEncoder resolves its columns when it is
// built and is not affected by later refreshes.
type Types struct {
	m atomic.Pointer[typeMap]
}

// BuiltinTypes returns a Types that knows only the built-in types; it needs no
// database.
func BuiltinTypes() *Types {
	t := &Types{}
	m := builtinMap()
	t.m.Store(&m)
	return t
}

// LoadTypes returns the built-in types plus the enums, domains and array types
// defined in the database q is connected to.
func LoadTypes(ctx context.Context, q Querier) (*Types, error) {
	t := BuiltinTypes()
	if err := t.Refresh(ctx, q); err != nil {
		return nil, err
	}
	return t, nil
}

// loadTypesSQL reads every type; resolution happens in Go.
const loadTypesSQL = `SELECT t.oid, t.typname::text, n.nspname::text, t.typtype::text, t.typbasetype,
	t.typelem, t.typcategory::text, t.typdelim::text
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace`

type pgTypeRow struct {
	oid, base, elem           uint32
	name, typtype, cat, delim string
}

// Refresh reloads the database's types (call it when a column has a type OID
// the Types does not know). It swaps in the new map atomically; on error the
// current map stays in place.
func (t *Types) Refresh(ctx context.Context, q Querier) error {
	rows, err := q.Query(ctx, loadTypesSQL)
	if err != nil {
		return fmt.Errorf("schema: load types: %w", err)
	}
	all := make(map[uint32]pgTypeRow, 1024)
	for rows.Next() {
		var r pgTypeRow
		var nsp string
		if err := rows.Scan(&r.oid, &r.name, &nsp, &r.typtype, &r.base, &r.elem, &r.cat, &r.delim); err != nil {
			rows.Close()
			return fmt.Errorf("schema: load types: %w", err)
		}
		if nsp != "pg_catalog" && nsp != "public" {
			r.name = nsp + "." + r.name
		}
		all[r.oid] = r
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("schema: load types: %w", err)
	}
	m := resolveTypes(all)
	t.m.Store(&m)
	return nil
}

// resolveTypes builds a type map from the rows of pg_type. Built-in types keep
// their fixed encoding; enums encode as strings, domains as their base type,
// arrays as arrays of their element's encoding.
func resolveTypes(all map[uint32]pgTypeRow) typeMap {
	m := builtinMap()
	var resolve func(oid uint32, depth int) typeInfo
	resolve = func(oid uint32, depth int) typeInfo {
		if ti, ok := m[oid]; ok {
			return ti
		}
		r, ok := all[oid]
		if !ok || depth > 32 {
			return typeInfo{name: fmt.Sprintf("oid %d", oid)}
		}
		ti := typeInfo{name: r.name}
		switch {
		case r.typtype == "e":
			ti.kind = kindString
		case r.typtype == "d":
			base := resolve(r.base, depth+1)
			ti.kind, ti.elem = base.kind, base.elem
		case r.typtype == "b" && r.cat == "A" && r.elem != 0:
			e := resolve(r.elem, depth+1)
			// array_out separates elements with the element type's
			// typdelim; the parser handles ',' only (box uses ';').
			if e.kind != kindUnsupported && e.kind != kindArray && all[r.elem].delim == "," {
				ti.kind, ti.elem = kindArray, e.kind
			}
		case r.typtype == "b" && (r.name == "citext" || strings.HasSuffix(r.name, ".citext")):
			ti.kind = kindString
		}
		m[oid] = ti
		return ti
	}
	for oid := range all {
		resolve(oid, 0)
	}
	return m
}

func (t *Types) lookup(oid uint32) (typeInfo, error) {
	ti, ok := (*t.m.Load())[oid]
	if !ok {
		return ti, fmt.Errorf("%w: unknown type oid %d", ErrUnsupportedType, oid)
	}
	if ti.kind == kindUnsupported {
		return ti, fmt.Errorf("%w: %s (oid %d)", ErrUnsupportedType, ti.name, oid)
	}
	return ti, nil
}

// Supported returns nil if values of type oid can be encoded, or an error
// wrapping ErrUnsupportedType that names the type.
func (t *Types) Supported(oid uint32) error {
	_, err := t.lookup(oid)
	return err
}

// Name returns the type's name as Postgres spells it ("int4", "_text", a
// schema-qualified name outside public), or "" for an unknown OID.
func (t *Types) Name(oid uint32) string {
	return (*t.m.Load())[oid].name
}

// AppendValue appends the JSON encoding of one Postgres text-format value of
// type oid to dst. A nil text is SQL NULL and encodes as null. On error dst is
// returned unchanged (same length) together with an error wrapping
// ErrUnsupportedType or ErrBadValue.
func (t *Types) AppendValue(dst []byte, oid uint32, text []byte) ([]byte, error) {
	ti, err := t.lookup(oid)
	if err != nil {
		return dst, err
	}
	if text == nil {
		return append(dst, "null"...), nil
	}
	n := len(dst)
	out, err := appendValue(dst, ti.kind, ti.elem, text)
	if err != nil {
		return dst[:n], fmt.Errorf("%s: %w", ti.name, err)
	}
	return out, nil
}

// RowEncoder encodes rows of a fixed list of columns to JSON objects. It is
// immutable and safe for concurrent use.
type RowEncoder struct {
	cols  []Column
	keys  [][]byte // `,"name":` for every column
	kinds []kind
	elems []kind
	names []string // type names, for errors
}

// RowEncoder returns an encoder for rows with columns cols (in that order).
// The error wraps ErrUnsupportedType and names the first column whose type
// cannot be encoded.
func (t *Types) RowEncoder(cols []Column) (*RowEncoder, error) {
	e := &RowEncoder{
		cols:  append([]Column(nil), cols...),
		keys:  make([][]byte, len(cols)),
		kinds: make([]kind, len(cols)),
		elems: make([]kind, len(cols)),
		names: make([]string, len(cols)),
	}
	for i, c := range cols {
		ti, err := t.lookup(c.TypeOID)
		if err != nil {
			return nil, fmt.Errorf("column %q: %w", c.Name, err)
		}
		k := append([]byte{','}, appendJSONString(nil, []byte(c.Name))...)
		e.keys[i] = append(k, ':')
		e.kinds[i], e.elems[i], e.names[i] = ti.kind, ti.elem, ti.name
	}
	return e, nil
}

// Columns returns the encoder's columns. The caller must not modify them.
func (e *RowEncoder) Columns() []Column { return e.cols }

// AppendRow appends the JSON object {"col":value,...} of one row to dst, with
// the columns in the encoder's order. vals holds the text-format value of each
// column, nil for NULL. On error dst is returned unchanged (same length) with
// an error naming the column and wrapping ErrBadValue.
func (e *RowEncoder) AppendRow(dst []byte, vals [][]byte) ([]byte, error) {
	if len(vals) != len(e.cols) {
		return dst, fmt.Errorf("%w: row has %d values, want %d", ErrBadValue, len(vals), len(e.cols))
	}
	n := len(dst)
	dst = append(dst, '{')
	var err error
	for i, v := range vals {
		k := e.keys[i]
		if i == 0 {
			k = k[1:]
		}
		dst = append(dst, k...)
		if v == nil {
			dst = append(dst, "null"...)
			continue
		}
		if dst, err = appendValue(dst, e.kinds[i], e.elems[i], v); err != nil {
			return dst[:n], fmt.Errorf("column %q (%s): %w", e.cols[i].Name, e.names[i], err)
		}
	}
	return append(dst, '}'), nil
}

// AppendColumns is AppendRow restricted to the columns at positions idx (in
// that order), e.g. the primary key of a deleted row. vals is the full row.
func (e *RowEncoder) AppendColumns(dst []byte, vals [][]byte, idx []int) ([]byte, error) {
	if len(vals) != len(e.cols) {
		return dst, fmt.Errorf("%w: row has %d values, want %d", ErrBadValue, len(vals), len(e.cols))
	}
	n := len(dst)
	dst = append(dst, '{')
	var err error
	for j, i := range idx {
		if i < 0 || i >= len(e.cols) {
			return dst[:n], fmt.Errorf("%w: column position %d out of range", ErrBadValue, i)
		}
		k := e.keys[i]
		if j == 0 {
			k = k[1:]
		}
		dst = append(dst, k...)
		v := vals[i]
		if v == nil {
			dst = append(dst, "null"...)
			continue
		}
		if dst, err = appendValue(dst, e.kinds[i], e.elems[i], v); err != nil {
			return dst[:n], fmt.Errorf("column %q (%s): %w", e.cols[i].Name, e.names[i], err)
		}
	}
	return append(dst, '}'), nil
}

package schema

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Registry is the set of sync tables. It is immutable after NewRegistry or
// LoadRegistry and safe for concurrent use; load a new one to see changes.
type Registry struct {
	tables []*Table // sorted by Name
	byName map[string]*Table
	byRel  map[relKey]*Table
}

type relKey struct{ schema, relation string }

// NewRegistry builds a registry from table descriptions and validates them:
// unique names, names matching TableName(Schema, Relation), at least one
// column, a root key and primary key columns that exist, no XIDColumn among
// the columns. The registry keeps the pointers; callers must not modify the
// tables afterwards.
func NewRegistry(tables []*Table) (*Registry, error) {
	r := &Registry{
		tables: slices.Clone(tables),
		byName: make(map[string]*Table, len(tables)),
		byRel:  make(map[relKey]*Table, len(tables)),
	}
	for _, t := range tables {
		if err := t.validate(); err != nil {
			return nil, err
		}
		if _, dup := r.byName[t.Name]; dup {
			return nil, fmt.Errorf("schema: registry: duplicate table %q", t.Name)
		}
		r.byName[t.Name] = t
		r.byRel[relKey{t.Schema, t.Relation}] = t
	}
	slices.SortFunc(r.tables, func(a, b *Table) int { return strings.Compare(a.Name, b.Name) })
	return r, nil
}

func (t *Table) validate() error {
	if t.Name == "" || t.Schema == "" || t.Relation == "" {
		return fmt.Errorf("schema: registry: table %q: empty name, schema or relation", t.Name)
	}
	if t.Name != TableName(t.Schema, t.Relation) {
		return fmt.Errorf("schema: registry: table %q does not match %s.%s", t.Name, t.Schema, t.Relation)
	}
	if len(t.Columns) == 0 {
		return fmt.Errorf("schema: registry: table %q has no columns", t.Name)
	}
	seen := make(map[string]bool, len(t.Columns))
	for _, c := range t.Columns {
		if c.Name == XIDColumn {
			return fmt.Errorf("schema: registry: table %q: column %s must not be listed", t.Name, XIDColumn)
		}
		if seen[c.Name] {
			return fmt.Errorf("schema: registry: table %q: duplicate column %q", t.Name, c.Name)
		}
		seen[c.Name] = true
	}
	if !seen[t.RootKey] {
		return fmt.Errorf("schema: registry: table %q: root key %q is not a column", t.Name, t.RootKey)
	}
	if len(t.PrimaryKey) == 0 {
		return fmt.Errorf("schema: registry: table %q has no primary key", t.Name)
	}
	for _, k := range t.PrimaryKey {
		if !seen[k] {
			return fmt.Errorf("schema: registry: table %q: primary key column %q is not a column", t.Name, k)
		}
	}
	return nil
}

// Table returns the sync table with registry name name.
func (r *Registry) Table(name string) (*Table, bool) {
	t, ok := r.byName[name]
	return t, ok
}

// ByRelation returns the sync table stored as schema.relation in Postgres.
func (r *Registry) ByRelation(schema, relation string) (*Table, bool) {
	t, ok := r.byRel[relKey{schema, relation}]
	return t, ok
}

// Tables returns every sync table, sorted by name. The caller must not modify
// the slice or the tables.
func (r *Registry) Tables() []*Table { return r.tables }

// CheckTypes returns an error wrapping ErrUnsupportedType naming the first
// column (of any table) whose type types cannot encode.
func (r *Registry) CheckTypes(types *Types) error {
	for _, t := range r.tables {
		for _, c := range t.Columns {
			if err := types.Supported(c.TypeOID); err != nil {
				return fmt.Errorf("table %q column %q: %w", t.Name, c.Name, err)
			}
		}
	}
	return nil
}

// ColumnIndex returns the position of column name in t.Columns, or -1.
func (t *Table) ColumnIndex(name string) int {
	for i, c := range t.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// KeyIndexes returns the positions in t.Columns of the primary key columns,
// in key order (a new slice on each call). A position is -1 for a key column
// that is not a column, which NewRegistry rules out.
func (t *Table) KeyIndexes() []int {
	idx := make([]int, len(t.PrimaryKey))
	for i, k := range t.PrimaryKey {
		idx[i] = t.ColumnIndex(k)
	}
	return idx
}

// RootKeyIndex returns the position of the root key column in t.Columns, or
// -1.
func (t *Table) RootKeyIndex() int { return t.ColumnIndex(t.RootKey) }

// loadTablesSQL reads the registry rows.
const loadTablesSQL = `SELECT name, schema_name, relation, root_key, coalesce(primary_key, '{}'::text[])
FROM ripple.tables ORDER BY name`

// loadColumnsSQL reads the columns of every registered table in attribute
// order, without dropped columns and without Ripple's xid column.
const loadColumnsSQL = `SELECT t.name, a.attname::text, a.atttypid
FROM ripple.tables t
JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.relation
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attname <> $1
ORDER BY t.name, a.attnum`

// loadPrimaryKeysSQL reads the primary key columns of every registered table
// in key order, for rows of ripple.tables whose primary_key is empty.
const loadPrimaryKeysSQL = `SELECT t.name, a.attname::text
FROM ripple.tables t
JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.relation
JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
ORDER BY t.name, k.ord`

// LoadRegistry reads the sync tables from ripple.tables and their columns
// from pg_attribute (attnum order, dropped columns and XIDColumn left out).
// A table whose primary_key is empty gets the columns of its primary key
// index. A registered table that no longer exists, or that lacks its root key
// or primary key columns, is an error.
func LoadRegistry(ctx context.Context, q Querier) (*Registry, error) {
	rows, err := q.Query(ctx, loadTablesSQL)
	if err != nil {
		return nil, fmt.Errorf("schema: load registry: %w", err)
	}
	var tables []*Table
	byName := map[string]*Table{}
	for rows.Next() {
		t := &Table{}
		if err := rows.Scan(&t.Name, &t.Schema, &t.Relation, &t.RootKey, &t.PrimaryKey); err != nil {
			rows.Close()
			return nil, fmt.Errorf("schema: load registry: %w", err)
		}
		tables = append(tables, t)
		byName[t.Name] = t
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: load registry: %w", err)
	}

	if rows, err = q.Query(ctx, loadColumnsSQL, XIDColumn); err != nil {
		return nil, fmt.Errorf("schema: load registry columns: %w", err)
	}
	for rows.Next() {
		var name string
		var c Column
		if err := rows.Scan(&name, &c.Name, &c.TypeOID); err != nil {
			rows.Close()
			return nil, fmt.Errorf("schema: load registry columns: %w", err)
		}
		if t := byName[name]; t != nil {
			t.Columns = append(t.Columns, c)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: load registry columns: %w", err)
	}

	needPK := false
	for _, t := range tables {
		if len(t.Columns) == 0 {
			return nil, fmt.Errorf("schema: load registry: table %q: relation %s.%s not found or has no columns",
				t.Name, t.Schema, t.Relation)
		}
		needPK = needPK || len(t.PrimaryKey) == 0
	}
	if needPK {
		if rows, err = q.Query(ctx, loadPrimaryKeysSQL); err != nil {
			return nil, fmt.Errorf("schema: load registry primary keys: %w", err)
		}
		pk := map[string][]string{}
		for rows.Next() {
			var name, col string
			if err := rows.Scan(&name, &col); err != nil {
				rows.Close()
				return nil, fmt.Errorf("schema: load registry primary keys: %w", err)
			}
			pk[name] = append(pk[name], col)
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("schema: load registry primary keys: %w", err)
		}
		for _, t := range tables {
			if len(t.PrimaryKey) == 0 {
				t.PrimaryKey = pk[t.Name]
			}
		}
	}
	return NewRegistry(tables)
}

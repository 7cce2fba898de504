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
	byName map[string]*TableDef
	byRel  map[relKey]*TableDef
}

type relKey struct{ schema, relation string }

// NewRegistry builds a registry from table descriptions and validates them:
// unique names, names matching TableName(Schema, Relation), at least one
// column, a root key and primary key columns that exist, no XIDColumn among
// the columns. The registry keeps the pointers; callers must not modify the
// tables afterwards. Its tables have no Attributes.
func NewRegistry(tables []*Table) (*Registry, error) {
	defs := make([]*TableDef, len(tables))
	for i, t := range tables {
		defs[i] = &TableDef{Table: t}
	}
	return newRegistry(defs)
}

// newRegistry is NewRegistry for tables that may carry Attributes, which
// must then describe every column.
func newRegistry(defs []*TableDef) (*Registry, error) {
	r := &Registry{
		tables: make([]*Table, 0, len(defs)),
		byName: make(map[string]*TableDef, len(defs)),
		byRel:  make(map[relKey]*TableDef, len(defs)),
	}
	for _, d := range defs {
		if err := d.validate(); err != nil {
			return nil, err
		}
		if d.Attributes != nil && len(d.Attributes) != len(d.Columns) {
			return nil, fmt.Errorf("schema: registry: table %q: %d attributes for %d columns", d.Name, len(d.Attributes), len(d.Columns))
		}
		if _, dup := r.byName[d.Name]; dup {
			return nil, fmt.Errorf("schema: registry: duplicate table %q", d.Name)
		}
		r.tables = append(r.tables, d.Table)
		r.byName[d.Name] = d
		r.byRel[relKey{d.Schema, d.Relation}] = d
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
	d, ok := r.Def(name)
	if !ok {
		return nil, false
	}
	return d.Table, true
}

// Def returns the sync table with registry name name together with its
// Attributes.
func (r *Registry) Def(name string) (*TableDef, bool) {
	d, ok := r.byName[name]
	return d, ok
}

// ByRelation returns the sync table stored as schema.relation in Postgres.
func (r *Registry) ByRelation(schema, relation string) (*Table, bool) {
	d, ok := r.byRel[relKey{schema, relation}]
	if !ok {
		return nil, false
	}
	return d.Table, true
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

// RegistryFilter selects the rows of ripple.tables a load reads. The zero
// value selects every row; set fields select the rows matching all of them.
type RegistryFilter struct {
	// Name selects the table with this registry name.
	Name string
	// Schema and Relation select the table stored as Schema.Relation in
	// Postgres (set both).
	Schema, Relation string
}

// loadTableDefsSQL reads the rows of ripple.tables selected by $2 (name) and
// $3, $4 (schema, relation), NULL selecting all, with the columns of each
// relation in attribute order, without dropped columns and without $1 (the
// xid column). A relation that does not exist gives NULL column arrays. An
// empty primary_key is replaced by the columns of the primary key index, in
// key order.
const loadTableDefsSQL = `SELECT t.name, t.schema_name, t.relation, t.root_key,
	CASE WHEN pg_catalog.cardinality(t.primary_key) > 0 THEN t.primary_key ELSE ARRAY(
		SELECT a.attname::text
		FROM pg_catalog.pg_index i
		CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
		WHERE i.indrelid = c.oid AND i.indisprimary
		ORDER BY k.ord) END,
	cols.names, cols.oids, cols.type_names, cols.full_type_names, cols.arrays, cols.generated
FROM ripple.tables t
LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.relation
LEFT JOIN LATERAL (
	SELECT array_agg(a.attname::text ORDER BY a.attnum) AS names,
		array_agg(a.atttypid ORDER BY a.attnum) AS oids,
		array_agg(pg_catalog.format_type(a.atttypid, NULL) ORDER BY a.attnum) AS type_names,
		array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) AS full_type_names,
		array_agg(ty.typcategory = 'A' ORDER BY a.attnum) AS arrays,
		array_agg(a.attgenerated <> '' ORDER BY a.attnum) AS generated
	FROM pg_catalog.pg_attribute a
	JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
	WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> $1
) cols ON true
WHERE ($2::text IS NULL OR t.name = $2)
	AND ($3::text IS NULL OR (t.schema_name = $3 AND t.relation = $4))
ORDER BY t.name`

// LoadTableDefs reads the rows of ripple.tables that f selects, sorted by
// name, each with the columns of its relation in attribute order (dropped
// columns and XIDColumn left out) and their Attributes. A table whose
// primary_key is empty gets the columns of its primary key index.
//
// Nothing is checked: a registered table whose relation does not exist (it
// was dropped or renamed) comes back without columns, and the root key and
// primary key are not checked against the columns; LoadRegistry does both.
// A database without ripple.tables (not migrated) gives an error wrapping
// the server's (SQLSTATE 42P01).
func LoadTableDefs(ctx context.Context, q Querier, f RegistryFilter) ([]*TableDef, error) {
	rows, err := q.Query(ctx, loadTableDefsSQL, XIDColumn, nullIfEmpty(f.Name), nullIfEmpty(f.Schema), nullIfEmpty(f.Relation))
	if err != nil {
		return nil, fmt.Errorf("schema: load registry: %w", err)
	}
	defer rows.Close()
	var defs []*TableDef
	for rows.Next() {
		var (
			t         Table
			names     []string
			oids      []uint32
			typeNames []string
			fullNames []string
			arrays    []bool
			generated []bool
		)
		if err := rows.Scan(&t.Name, &t.Schema, &t.Relation, &t.RootKey, &t.PrimaryKey,
			&names, &oids, &typeNames, &fullNames, &arrays, &generated); err != nil {
			return nil, fmt.Errorf("schema: load registry: %w", err)
		}
		d := &TableDef{Table: &t}
		if len(names) > 0 {
			t.Columns = make([]Column, len(names))
			d.Attributes = make([]Attribute, len(names))
			for i, name := range names {
				t.Columns[i] = Column{Name: name, TypeOID: oids[i]}
				d.Attributes[i] = Attribute{TypeName: typeNames[i], FullTypeName: fullNames[i], Array: arrays[i], Generated: generated[i]}
			}
		}
		defs = append(defs, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: load registry: %w", err)
	}
	return defs, nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// LoadRegistry reads the sync tables that f selects (LoadTableDefs) and
// builds a registry of them. A registered table whose relation does not
// exist is left out, as if it were not registered; any other table must pass
// NewRegistry's checks (its root key and primary key columns exist), or the
// load fails.
func LoadRegistry(ctx context.Context, q Querier, f RegistryFilter) (*Registry, error) {
	defs, err := LoadTableDefs(ctx, q, f)
	if err != nil {
		return nil, err
	}
	kept := defs[:0]
	for _, d := range defs {
		if len(d.Columns) > 0 {
			kept = append(kept, d)
		}
	}
	return newRegistry(kept)
}

package writer

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/schema"
)

// column is one column of a sync table as the built-in mutators use it.
type column struct {
	name    string
	typeOID uint32
	// cast is the type to cast a text parameter to, without type modifier
	// (format_type(atttypid, NULL)): an explicit cast to varchar(n) would
	// truncate silently, while assignment to the column checks the length.
	cast      string
	isArray   bool
	generated bool
}

// table is one sync table with everything needed to build statements.
type table struct {
	schema.Table
	cols    []column
	byName  map[string]int
	rootIdx int
	pkIdx   []int
	ident   string // sanitized "schema"."relation"
	enc     *schema.RowEncoder
	// returning is the RETURNING list: every column as text.
	returning string
}

// tableSet is an immutable snapshot of the sync tables by registry name.
type tableSet map[string]*table

// tableCache holds the current snapshot. Loads replace it wholesale
// (copy on write), so readers never lock.
type tableCache struct {
	m     atomic.Pointer[tableSet]
	types *schema.Types
}

func newTableCache(types *schema.Types) *tableCache {
	c := &tableCache{types: types}
	empty := tableSet{}
	c.m.Store(&empty)
	return c
}

func (c *tableCache) get(name string) *table {
	return (*c.m.Load())[name]
}

// loadTablesSQL reads every sync table's columns. $1 NULL reads all tables,
// otherwise only the named one.
const loadTablesSQL = `
SELECT t.name, t.schema_name, t.relation, t.root_key, t.primary_key,
       a.attname::text, a.atttypid::int8, format_type(a.atttypid, NULL),
       ty.typcategory = 'A', a.attgenerated <> ''
FROM ripple.tables t
JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.relation
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
WHERE $1::text IS NULL OR t.name = $1
ORDER BY t.name, a.attnum`

// load reads sync tables (one when name != "", else all) through q, builds
// them and merges them into the cache. A named table that is not registered
// is removed from the cache and reported as nil.
func (c *tableCache) load(ctx context.Context, q querier, name string) (*table, error) {
	var arg any
	if name != "" {
		arg = name
	}
	rows, err := q.Query(ctx, loadTablesSQL, arg)
	if err != nil {
		return nil, fmt.Errorf("writer: load sync tables: %w", err)
	}
	loaded := tableSet{}
	var order []string
	for rows.Next() {
		var (
			tName, sName, rel, root string
			pk                      []string
			col                     column
			oid                     int64
		)
		if err := rows.Scan(&tName, &sName, &rel, &root, &pk, &col.name, &oid, &col.cast, &col.isArray, &col.generated); err != nil {
			rows.Close()
			return nil, fmt.Errorf("writer: load sync tables: %w", err)
		}
		// Without a modifier "character" means character(1), which would
		// cut a longer value: bpchar is the unlimited blank-padded type.
		switch col.cast {
		case "character":
			col.cast = "bpchar"
		case "character[]":
			col.cast = "bpchar[]"
		}
		col.typeOID = uint32(oid)
		t := loaded[tName]
		if t == nil {
			t = &table{Table: schema.Table{Name: tName, Schema: sName, Relation: rel, RootKey: root, PrimaryKey: pk}}
			loaded[tName] = t
			order = append(order, tName)
		}
		if col.name == schema.XIDColumn {
			continue
		}
		t.cols = append(t.cols, col)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("writer: load sync tables: %w", err)
	}
	for _, n := range order {
		if err := c.finish(ctx, q, loaded[n]); err != nil {
			return nil, err
		}
	}
	for {
		old := c.m.Load()
		next := make(tableSet, len(*old)+len(loaded))
		if name == "" {
			next = loaded
		} else {
			for k, v := range *old {
				next[k] = v
			}
			delete(next, name)
			for k, v := range loaded {
				next[k] = v
			}
		}
		if c.m.CompareAndSwap(old, &next) {
			break
		}
	}
	if name == "" {
		return nil, nil
	}
	return loaded[name], nil
}

// finish derives the lookup structures and the row encoder of a table.
func (c *tableCache) finish(ctx context.Context, q querier, t *table) error {
	t.byName = make(map[string]int, len(t.cols))
	t.Columns = make([]schema.Column, len(t.cols))
	t.rootIdx = -1
	ret := make([]byte, 0, 64)
	for i, col := range t.cols {
		t.byName[col.name] = i
		t.Columns[i] = schema.Column{Name: col.name, TypeOID: col.typeOID}
		if col.name == t.RootKey {
			t.rootIdx = i
		}
		if i > 0 {
			ret = append(ret, ", "...)
		}
		// The type's output function, as replication and catch-up see the
		// value: a cast to text differs for some types (bool gives
		// "true", inet adds the netmask, char(n) drops trailing blanks).
		// format('%s') calls the output function but turns NULL into ''
		// and costs the server more than a cast, which calls the output
		// function too for the types of textIsOutput.
		id := pgx.Identifier{col.name}.Sanitize()
		if textIsOutput(col) {
			ret = append(ret, id+"::text"...)
		} else {
			ret = append(ret, "CASE WHEN "+id+" IS NULL THEN NULL ELSE pg_catalog.format('%s', "+id+") END"...)
		}
	}
	t.returning = string(ret)
	if t.rootIdx < 0 {
		return fmt.Errorf("writer: sync table %q: root key column %q not found", t.Name, t.RootKey)
	}
	for _, k := range t.PrimaryKey {
		i, ok := t.byName[k]
		if !ok {
			return fmt.Errorf("writer: sync table %q: primary key column %q not found", t.Name, k)
		}
		t.pkIdx = append(t.pkIdx, i)
	}
	t.ident = pgx.Identifier{t.Schema, t.Relation}.Sanitize()
	enc, err := c.types.RowEncoder(t.Columns)
	if err != nil {
		// A type created after the writer started (an enum, a domain):
		// refresh the type map once and try again.
		if rerr := c.types.Refresh(ctx, q); rerr != nil {
			return fmt.Errorf("writer: sync table %q: %w", t.Name, rerr)
		}
		if enc, err = c.types.RowEncoder(t.Columns); err != nil {
			return fmt.Errorf("writer: sync table %q: %w", t.Name, err)
		}
	}
	t.enc = enc
	return nil
}

// castsToOutput are the built-in types whose cast to text is the output
// function (an I/O conversion or a binary-coercible one; pg_cast has no cast
// function from them to text): int2, int4, int8, oid, float4, float8,
// numeric, text, varchar, bytea, json, jsonb, xml, uuid, date, time,
// timetz, timestamp, timestamptz, interval and xid8.
var castsToOutput = map[uint32]bool{
	21: true, 23: true, 20: true, 26: true, 700: true, 701: true, 1700: true,
	25: true, 1043: true, 17: true, 114: true, 3802: true, 142: true, 2950: true,
	1082: true, 1083: true, 1266: true, 1114: true, 1184: true, 1186: true, 5069: true,
}

// textIsOutput reports whether col::text gives the column type's output
// function, as format('%s', col) does: for the types of castsToOutput and
// for arrays (an array has no cast to text: array_out, which calls the
// element type's output function). Every other type (bool, inet, cidr,
// char(n), "char", name, domains, enums, ...) goes through format.
func textIsOutput(col column) bool {
	return col.isArray || castsToOutput[col.typeOID]
}

// keyFrom returns the text values of the primary key columns of a row read as
// text, in key order.
func (t *table) keyFrom(vals [][]byte) [][]byte {
	out := make([][]byte, len(t.pkIdx))
	for i, j := range t.pkIdx {
		out[i] = vals[j]
	}
	return out
}

// drop forgets a table so its metadata is loaded again on next use.
func (c *tableCache) drop(name string) {
	for {
		old := c.m.Load()
		if (*old)[name] == nil {
			return
		}
		next := make(tableSet, len(*old))
		for k, v := range *old {
			if k != name {
				next[k] = v
			}
		}
		if c.m.CompareAndSwap(old, &next) {
			return
		}
	}
}

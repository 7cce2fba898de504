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
	// cast is the type to cast a text parameter to
	// (schema.Attribute.CastType: without type modifier).
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

// load reads sync tables (one when name != "", else all) through q
// (schema.LoadRegistry), builds them and merges them into the cache. A named
// table that is not registered, or whose relation does not exist, is removed
// from the cache and reported as nil.
func (c *tableCache) load(ctx context.Context, q querier, name string) (*table, error) {
	reg, err := schema.LoadRegistry(ctx, q, schema.RegistryFilter{Name: name})
	if err != nil {
		return nil, fmt.Errorf("writer: load sync tables: %w", err)
	}
	loaded := make(tableSet, len(reg.Tables()))
	for _, st := range reg.Tables() {
		d, _ := reg.Def(st.Name)
		t, err := c.build(ctx, q, d)
		if err != nil {
			return nil, err
		}
		loaded[t.Name] = t
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

// build derives a table's columns, lookup structures and row encoder from
// its registry entry (whose root key and primary key columns exist).
func (c *tableCache) build(ctx context.Context, q querier, d *schema.TableDef) (*table, error) {
	t := &table{
		Table:   *d.Table,
		cols:    make([]column, len(d.Columns)),
		byName:  make(map[string]int, len(d.Columns)),
		rootIdx: d.RootKeyIndex(),
		pkIdx:   d.KeyIndexes(),
		ident:   pgx.Identifier{d.Schema, d.Relation}.Sanitize(),
	}
	ret := make([]byte, 0, 64)
	for i, col := range d.Columns {
		a := d.Attributes[i]
		t.cols[i] = column{name: col.Name, typeOID: col.TypeOID, cast: a.CastType(), isArray: a.Array, generated: a.Generated}
		t.byName[col.Name] = i
		if i > 0 {
			ret = append(ret, ", "...)
		}
		// The type's output function, as replication and catch-up see the
		// value: a cast to text differs for some types (bool gives
		// "true", inet adds the netmask, char(n) drops trailing blanks).
		// format('%s') calls the output function but turns NULL into ''
		// and costs the server more than a cast, which calls the output
		// function too for the types of textIsOutput.
		id := pgx.Identifier{col.Name}.Sanitize()
		if textIsOutput(t.cols[i]) {
			ret = append(ret, id+"::text"...)
		} else {
			ret = append(ret, "CASE WHEN "+id+" IS NULL THEN NULL ELSE pg_catalog.format('%s', "+id+") END"...)
		}
	}
	t.returning = string(ret)
	enc, err := c.types.RowEncoder(t.Columns)
	if err != nil {
		// A type created after the writer started (an enum, a domain):
		// refresh the type map once and try again.
		if rerr := c.types.Refresh(ctx, q); rerr != nil {
			return nil, fmt.Errorf("writer: sync table %q: %w", t.Name, rerr)
		}
		if enc, err = c.types.RowEncoder(t.Columns); err != nil {
			return nil, fmt.Errorf("writer: sync table %q: %w", t.Name, err)
		}
	}
	t.enc = enc
	return t, nil
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

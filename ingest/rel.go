package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/schema"
)

// relKind tells what the ingest does with the rows of a relation.
type relKind uint8

const (
	relIgnored   relKind = iota // not a sync table: never published
	relSync                     // a sync table of the registry
	relMutations                // ripple.mutations: routed by its org column
)

// boundRel is a Relation message bound to the registry and the value codec.
type boundRel struct {
	rel   *relation
	kind  relKind
	table string // registry name, used in subjects
	enc   *schema.RowEncoder
	// rowIdx maps each encoder column to its position in the tuple
	// (ripple_xid is left out).
	rowIdx  []int
	rootIdx int   // encoder position of the root key column
	pkIdx   []int // encoder positions of the primary key columns
	// failed is set when the table's rows cannot be encoded; its changes
	// are replaced by a resync marker.
	failed string
}

// mutationsTable is ripple.mutations as the ingest routes it
// (migrations/sql/0001_init.sql): by its org column, keyed by client and
// mutation id. It is not in ripple.tables.
var mutationsTable = schema.Table{
	Name:       schema.MutationsTable,
	Schema:     "ripple",
	Relation:   "mutations",
	RootKey:    "org",
	PrimaryKey: []string{"client_id", "mutation_id"},
}

// lookupSyncTable returns the registry entry of the relation nsp.rel (only
// name, root key and primary key are used: the columns are the Relation
// message's), nil when it is not a sync table. It reads ripple.tables on
// every call, so a table enabled since the last Relation message is found.
func lookupSyncTable(ctx context.Context, q schema.Querier, nsp, rel string) (*schema.Table, error) {
	if nsp == mutationsTable.Schema {
		if rel == mutationsTable.Relation {
			return &mutationsTable, nil
		}
		return nil, nil
	}
	// The raw rows, not a validated registry: a table is streamed (or
	// marked failed) by the columns of its Relation message, whatever the
	// catalogs say now.
	defs, err := schema.LoadTableDefs(ctx, q, schema.RegistryFilter{Schema: nsp, Relation: rel})
	if err != nil {
		return nil, fmt.Errorf("ingest: look up %s.%s in ripple.tables: %w", nsp, rel, err)
	}
	if len(defs) == 0 {
		return nil, nil
	}
	return defs[0].Table, nil
}

// bindRelation binds a Relation message. Errors are only returned for
// failed queries (the session restarts); a table whose rows cannot be
// encoded is bound with failed set.
func bindRelation(ctx context.Context, conn *pgx.Conn, types *schema.Types, rel *relation) (*boundRel, error) {
	b := &boundRel{rel: rel}
	t, err := lookupSyncTable(ctx, conn, rel.Namespace, rel.Name)
	if err != nil || t == nil {
		return b, err
	}
	name := t.Name
	b.table = name
	b.kind = relSync
	if name == schema.MutationsTable {
		b.kind = relMutations
	}
	cols := make([]schema.Column, 0, len(rel.Columns))
	for i, c := range rel.Columns {
		if c.Name == schema.XIDColumn {
			continue
		}
		cols = append(cols, schema.Column{Name: c.Name, TypeOID: c.TypeOID})
		b.rowIdx = append(b.rowIdx, i)
	}
	b.enc, err = types.RowEncoder(cols)
	if errors.Is(err, schema.ErrUnsupportedType) {
		// A type created after the types were loaded (a new enum): reload.
		if rerr := types.Refresh(ctx, conn); rerr != nil {
			return nil, fmt.Errorf("ingest: reload types: %w", rerr)
		}
		b.enc, err = types.RowEncoder(cols)
	}
	if err != nil {
		b.failed = fmt.Sprintf("table %s: %v", name, err)
		return b, nil
	}
	pos := func(col string) int {
		return slices.IndexFunc(cols, func(c schema.Column) bool { return c.Name == col })
	}
	b.rootIdx = pos(t.RootKey)
	if b.rootIdx < 0 {
		b.failed = fmt.Sprintf("table %s: root key column %q is missing", name, t.RootKey)
		return b, nil
	}
	for _, k := range t.PrimaryKey {
		i := pos(k)
		if i < 0 {
			b.failed = fmt.Sprintf("table %s: primary key column %q is missing", name, k)
			return b, nil
		}
		b.pkIdx = append(b.pkIdx, i)
	}
	return b, nil
}

// sameColumns reports whether two Relation messages describe the same
// columns (names and types, in order).
func sameColumns(a, b *relation) bool {
	if len(a.Columns) != len(b.Columns) {
		return false
	}
	for i := range a.Columns {
		if a.Columns[i].Name != b.Columns[i].Name || a.Columns[i].TypeOID != b.Columns[i].TypeOID {
			return false
		}
	}
	return true
}

package catchup

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/ripple-sync/ripple/schema"
)

// tableEntry is one sync table as the registry holds it.
type tableEntry struct {
	table *schema.Table
	// pkTypes holds, for every primary key column in key order, its type as
	// format_type spells it, to cast a tombstone's text key back.
	pkTypes []string
}

// registry is the set of sync tables and the codec's types, loaded from the
// database. Lookups share a read lock; reloads are serialised by reloadMu so
// that concurrent misses cause one reload, not one each.
type registry struct {
	reloadMu sync.Mutex

	mu     sync.RWMutex
	tables map[string]*tableEntry
	types  *schema.Types
	gen    uint64 // incremented by every reload
}

// registrySQL reads every sync table with its columns in attribute order,
// without Ripple's own xid column.
const registrySQL = `SELECT t.name, t.schema_name, t.relation, t.root_key, t.primary_key,
	array_agg(a.attname::text ORDER BY a.attnum),
	array_agg(a.atttypid ORDER BY a.attnum),
	array_agg(pg_catalog.format_type(a.atttypid, NULL) ORDER BY a.attnum)
FROM ripple.tables t
JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema_name
JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.relation
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	AND a.attname <> 'ripple_xid'
GROUP BY t.name, t.schema_name, t.relation, t.root_key, t.primary_key`

func (r *registry) lookup(name string) (*tableEntry, *schema.Types, uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.tables[name], r.types, r.gen
}

// reload reads the registry and the types again, unless another reload
// finished since the caller looked (generation seen).
func (r *registry) reload(ctx context.Context, q schema.Querier, seen uint64) error {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	r.mu.RLock()
	gen := r.gen
	r.mu.RUnlock()
	if gen != seen {
		return nil
	}
	tables, err := loadTables(ctx, q)
	if err != nil {
		return err
	}
	types, err := schema.LoadTypes(ctx, q)
	if err != nil {
		return fmt.Errorf("catchup: %w", err)
	}
	r.mu.Lock()
	r.tables, r.types = tables, types
	r.gen++
	r.mu.Unlock()
	return nil
}

func loadTables(ctx context.Context, q schema.Querier) (map[string]*tableEntry, error) {
	rows, err := q.Query(ctx, registrySQL)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // ripple.tables missing: not migrated
			return map[string]*tableEntry{}, nil
		}
		return nil, fmt.Errorf("catchup: load registry: %w", err)
	}
	tables := map[string]*tableEntry{}
	for rows.Next() {
		var (
			t      schema.Table
			names  []string
			oids   []uint32
			tnames []string
		)
		if err := rows.Scan(&t.Name, &t.Schema, &t.Relation, &t.RootKey, &t.PrimaryKey, &names, &oids, &tnames); err != nil {
			rows.Close()
			return nil, fmt.Errorf("catchup: load registry: %w", err)
		}
		e := &tableEntry{table: &t}
		byName := map[string]string{}
		for i, n := range names {
			t.Columns = append(t.Columns, schema.Column{Name: n, TypeOID: oids[i]})
			byName[n] = tnames[i]
		}
		for _, k := range t.PrimaryKey {
			typ, ok := byName[k]
			if !ok {
				rows.Close()
				return nil, fmt.Errorf("catchup: load registry: %s: primary key column %q is missing", t.Name, k)
			}
			e.pkTypes = append(e.pkTypes, typ)
		}
		if _, ok := byName[t.RootKey]; !ok {
			rows.Close()
			return nil, fmt.Errorf("catchup: load registry: %s: root key column %q is missing", t.Name, t.RootKey)
		}
		tables[t.Name] = e
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("catchup: load registry: %w", err)
	}
	return tables, nil
}

// quoteTable returns the quoted schema-qualified relation of t.
func quoteTable(t *schema.Table) string {
	return pgx.Identifier{t.Schema, t.Relation}.Sanitize()
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

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

// registry is the set of sync tables and the codec's types, loaded from the
// database. Lookups share a read lock; reloads are serialised by reloadMu so
// that concurrent misses cause one reload, not one each.
type registry struct {
	reloadMu sync.Mutex

	mu     sync.RWMutex
	tables *schema.Registry // nil until the first load
	types  *schema.Types
	gen    uint64 // incremented by every reload
}

// lookup returns the sync table called name (nil when it is not known), the
// types and the generation they belong to.
func (r *registry) lookup(name string) (*schema.TableDef, *schema.Types, uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var d *schema.TableDef
	if r.tables != nil {
		d, _ = r.tables.Def(name)
	}
	return d, r.types, r.gen
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

// loadTables reads every sync table. A database without ripple.tables (not
// migrated) has none.
func loadTables(ctx context.Context, q schema.Querier) (*schema.Registry, error) {
	tables, err := schema.LoadRegistry(ctx, q, schema.RegistryFilter{})
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // ripple.tables missing: not migrated
			return schema.NewRegistry(nil)
		}
		return nil, fmt.Errorf("catchup: %w", err)
	}
	return tables, nil
}

// quoteTable returns the quoted schema-qualified relation of t.
func quoteTable(t *schema.Table) string {
	return pgx.Identifier{t.Schema, t.Relation}.Sanitize()
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

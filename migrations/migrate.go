package migrations

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ripple-sync/ripple/schema"
)

// Publication is the name of the logical replication publication that holds
// every sync table and Ripple's mutation log.
const Publication = "ripple"

// DefaultRetention is how long tombstones are kept before Prune may delete
// them.
const DefaultRetention = 30 * 24 * time.Hour

// DefaultMutationRetention is how long the records of applied and rejected
// mutations are kept before PruneMutations may delete them (30 days): a
// client that retries a mutation later gets mutation_expired.
const DefaultMutationRetention = 30 * 24 * time.Hour

// LockKey is the key of the transaction-level advisory lock
// (pg_advisory_xact_lock) that Migrate, Enable, Disable and DemoSchema hold,
// so that two of them never interleave. Other parts of Ripple must use other
// keys for their own advisory locks.
const LockKey int64 = 0x726970706c65 // "ripple"

// Sentinel errors. They are wrapped with detail; test with errors.Is.
var (
	// ErrTableNotFound is returned when the named table does not exist or is
	// not an ordinary table.
	ErrTableNotFound = errors.New("migrations: table not found")
	// ErrNoPrimaryKey is returned by Enable for a table without a primary key.
	ErrNoPrimaryKey = errors.New("migrations: table has no primary key")
	// ErrNoRootKey is returned by Enable when the root key column is missing.
	ErrNoRootKey = errors.New("migrations: root key column not found")
	// ErrNotEnabled is returned for a table that is not a sync table.
	ErrNotEnabled = errors.New("migrations: table is not enabled")
	// ErrAlreadyEnabled is returned by Enable when the table is already a
	// sync table with another root key (disable it first) or when its
	// registry name is taken by another table.
	ErrAlreadyEnabled = errors.New("migrations: table is already enabled differently")
	// ErrUnsupportedType is returned by Enable for a column whose type the
	// value codec cannot encode. It wraps schema.ErrUnsupportedType.
	ErrUnsupportedType = fmt.Errorf("%w", schema.ErrUnsupportedType)
	// ErrBadTableName is returned for a table name that is empty or has an
	// empty schema or relation part.
	ErrBadTableName = errors.New("migrations: bad table name")
	// ErrBadColumn is returned for a column definition Enable cannot use
	// (for example an existing ripple_xid column of the wrong type).
	ErrBadColumn = errors.New("migrations: bad column")
	// ErrCursorTooOld is returned by CheckCursor for a cursor below the pruned
	// horizon: the client must resynchronise from scratch.
	ErrCursorTooOld = errors.New("migrations: cursor is older than the pruned tombstone horizon")
	// ErrBadRetention is returned by Prune for a negative retention.
	ErrBadRetention = errors.New("migrations: negative retention")
)

// Querier is what read-only helpers need: a *pgx.Conn, a pgx.Tx or a
// *pgxpool.Pool all satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// execer is what the helpers that change things need inside a transaction.
type execer interface {
	Querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

//go:embed sql/*.sql
var sqlFiles embed.FS

// migration is one versioned SQL file, named NNNN_description.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads the embedded SQL files in version order.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(sqlFiles, "sql")
	if err != nil {
		return nil, fmt.Errorf("migrations: read embedded sql: %w", err)
	}
	var ms []migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		if !ok || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("migrations: bad migration file name %q", name)
		}
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migrations: bad migration version in %q", name)
		}
		b, err := fs.ReadFile(sqlFiles, "sql/"+name)
		if err != nil {
			return nil, fmt.Errorf("migrations: read %s: %w", name, err)
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := 1; i < len(ms); i++ {
		if ms[i].version == ms[i-1].version {
			return nil, fmt.Errorf("migrations: duplicate version %d", ms[i].version)
		}
	}
	return ms, nil
}

// LatestVersion is the highest migration version this build knows.
func LatestVersion() int {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// Migrate installs Ripple's own objects in schema ripple: the registry
// (ripple.tables), tombstones, the pruned horizon, the writer's clients and
// mutations tables, the shared trigger function and the publication
// "ripple". It runs in one transaction holding the advisory lock LockKey, so
// two Migrate calls at once are safe; applied versions are recorded in
// ripple.schema_migrations and never applied twice. Calling it again is
// harmless.
func Migrate(ctx context.Context, conn *pgx.Conn) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return migrateTx(ctx, tx)
	})
}

// migrateTx is Migrate inside a caller's transaction.
func migrateTx(ctx context.Context, tx execer) error {
	return migrateTxTo(ctx, tx, math.MaxInt)
}

// migrateTxTo applies the migrations up to version last only (tests of
// upgrades from earlier versions).
func migrateTxTo(ctx context.Context, tx execer, last int) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", LockKey); err != nil {
		return fmt.Errorf("migrations: take advisory lock: %w", err)
	}
	// Creating the schema and the version table only happens under the lock:
	// CREATE ... IF NOT EXISTS alone still races on the catalogs' unique
	// indexes.
	if _, err := tx.Exec(ctx, `
CREATE SCHEMA IF NOT EXISTS ripple;
CREATE TABLE IF NOT EXISTS ripple.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		return fmt.Errorf("migrations: create ripple.schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := tx.Query(ctx, "SELECT version FROM ripple.schema_migrations")
	if err != nil {
		return fmt.Errorf("migrations: read applied versions: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("migrations: read applied versions: %w", err)
	}
	for _, v := range versions {
		applied[int(v)] = true
	}
	for _, m := range ms {
		if applied[m.version] || m.version > last {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migrations: apply %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO ripple.schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return fmt.Errorf("migrations: record %s: %w", m.name, err)
		}
	}
	return ensurePublication(ctx, tx)
}

// ensurePublication creates the publication if it is missing and makes sure
// the mutation log belongs to it. It runs on every Migrate, so a dropped
// publication comes back.
func ensurePublication(ctx context.Context, tx execer) error {
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", Publication).Scan(&exists); err != nil {
		return fmt.Errorf("migrations: look up publication: %w", err)
	}
	if !exists {
		q := "CREATE PUBLICATION " + pgx.Identifier{Publication}.Sanitize() +
			" WITH (publish = 'insert, update, delete, truncate')"
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("migrations: create publication: %w", err)
		}
	}
	return addToPublication(ctx, tx, "ripple", "mutations")
}

// addToPublication adds a table to the publication unless it is a member.
func addToPublication(ctx context.Context, tx execer, schemaName, relation string) error {
	member, err := inPublication(ctx, tx, schemaName, relation)
	if err != nil {
		return err
	}
	if member {
		return nil
	}
	q := "ALTER PUBLICATION " + pgx.Identifier{Publication}.Sanitize() + " ADD TABLE " +
		pgx.Identifier{schemaName, relation}.Sanitize()
	if _, err := tx.Exec(ctx, q); err != nil {
		return fmt.Errorf("migrations: add %s.%s to publication: %w", schemaName, relation, err)
	}
	return nil
}

// inPublication reports whether a table is a direct member of the publication.
func inPublication(ctx context.Context, q Querier, schemaName, relation string) (bool, error) {
	var member bool
	err := q.QueryRow(ctx, `
SELECT EXISTS (
    SELECT 1 FROM pg_publication_rel pr
    JOIN pg_publication p ON p.oid = pr.prpubid
    JOIN pg_class c ON c.oid = pr.prrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE p.pubname = $1 AND n.nspname = $2 AND c.relname = $3)`,
		Publication, schemaName, relation).Scan(&member)
	if err != nil {
		return false, fmt.Errorf("migrations: look up publication membership: %w", err)
	}
	return member, nil
}

// Version returns the highest applied migration version, 0 when Migrate has
// never run on the database.
func Version(ctx context.Context, q Querier) (int, error) {
	var present bool
	if err := q.QueryRow(ctx, "SELECT to_regclass('ripple.schema_migrations') IS NOT NULL").Scan(&present); err != nil {
		return 0, fmt.Errorf("migrations: read version: %w", err)
	}
	if !present {
		return 0, nil
	}
	var v int32
	if err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM ripple.schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("migrations: read version: %w", err)
	}
	return int(v), nil
}

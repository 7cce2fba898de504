package migrations_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// newDB returns a connection to a fresh database of the shared primary and
// its URL.
func newDB(t *testing.T) (*pgx.Conn, string) {
	t.Helper()
	url := testenv.SharedPostgres(t).CreateDatabase(t)
	return connect(t, url), url
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func queryString(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string, args ...any) string {
	t.Helper()
	var s *string
	if err := q.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	if s == nil {
		return "<null>"
	}
	return *s
}

func queryUint(t *testing.T, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, sql string, args ...any) uint64 {
	t.Helper()
	s := queryString(t, q, sql, args...)
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("query %q: %q is not a number", sql, s)
	}
	return v
}

// catalogState summarises everything Enable and Disable may touch, so a test
// can prove that a refused call changed nothing.
const catalogState = `
SELECT coalesce(string_agg(x, E'\n' ORDER BY x), '') FROM (
    SELECT 'col ' || a.attrelid::regclass || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    UNION ALL
    SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL
    SELECT 'index ' || indexrelid::regclass || ' ' || pg_get_indexdef(indexrelid)
    FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    UNION ALL
    SELECT 'identity ' || c.oid::regclass || ' ' || c.relreplident::text
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
    UNION ALL
    SELECT 'publication ' || pubname || ' ' || schemaname || '.' || tablename FROM pg_publication_tables
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'ripple'
    UNION ALL
    SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'ripple'
) s(x)`

// rippleState adds Ripple's own rows to catalogState (Migrate must have run).
const rippleState = `
SELECT (` + catalogState + `) || E'\n' || (
    SELECT coalesce(string_agg(x, E'\n' ORDER BY x), '') FROM (
        SELECT 'registry ' || name || ' ' || schema_name || ' ' || relation || ' ' || root_key || ' ' || primary_key::text
        FROM ripple.tables
        UNION ALL
        SELECT 'tombstone ' || table_name || ' ' || coalesce(root_key, '<null>') || ' ' || pk::text || ' ' || xid
        FROM ripple.tombstones
        UNION ALL
        SELECT 'horizon ' || xid FROM ripple.horizon
    ) s(x))`

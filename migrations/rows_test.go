package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/migrations"
)

// enabledTodos creates and enables todos(id, org_id, title) with rows 1
// (acme) and 2 (globex).
func enabledTodos(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, _ := newDB(t)
	exec(t, conn, "CREATE TABLE todos (id bigint PRIMARY KEY, org_id text, title text)")
	exec(t, conn, "INSERT INTO todos VALUES (1, 'acme', 'one'), (2, 'globex', 'two')")
	if _, err := migrations.Enable(testCtx(t), conn, "todos", "org_id"); err != nil {
		t.Fatal(err)
	}
	return conn
}

// inTx runs statements in one transaction and returns its xid.
func inTx(t *testing.T, conn *pgx.Conn, stmts ...string) string {
	t.Helper()
	var xid string
	err := pgx.BeginFunc(context.Background(), conn, func(tx pgx.Tx) error {
		for _, s := range stmts {
			if _, err := tx.Exec(context.Background(), s); err != nil {
				return fmt.Errorf("%s: %w", s, err)
			}
		}
		return tx.QueryRow(context.Background(), "SELECT pg_current_xact_id()::text").Scan(&xid)
	})
	if err != nil {
		t.Fatal(err)
	}
	return xid
}

func TestXIDStamp(t *testing.T) {
	tests := []struct {
		name    string
		stmts   []string
		written []int // ids that must carry the transaction's xid
	}{
		{name: "insert", stmts: []string{"INSERT INTO todos (id, org_id, title) VALUES (10, 'acme', 'n')"}, written: []int{10}},
		{name: "insert with explicit xid", stmts: []string{"INSERT INTO todos VALUES (10, 'acme', 'n', '3')"}, written: []int{10}},
		{name: "update", stmts: []string{"UPDATE todos SET title = 'u' WHERE id = 1"}, written: []int{1}},
		{name: "update with explicit xid", stmts: []string{"UPDATE todos SET title = 'u', ripple_xid = '3' WHERE id = 2"}, written: []int{2}},
		{name: "upsert", stmts: []string{"INSERT INTO todos VALUES (1, 'acme', 'x'), (11, 'acme', 'y') ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title"}, written: []int{1, 11}},
		{name: "move to another org", stmts: []string{"UPDATE todos SET org_id = 'globex' WHERE id = 1"}, written: []int{1}},
		{name: "two statements", stmts: []string{"INSERT INTO todos VALUES (12, 'acme', 'a')", "UPDATE todos SET title = 'b' WHERE id = 2"}, written: []int{2, 12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := enabledTodos(t)
			before := queryString(t, conn, "SELECT ripple_xid::text FROM todos WHERE id = 1")
			xid := inTx(t, conn, tt.stmts...)
			rows, err := conn.Query(context.Background(), "SELECT id, ripple_xid::text FROM todos ORDER BY id")
			if err != nil {
				t.Fatal(err)
			}
			got := map[int]string{}
			for rows.Next() {
				var id int
				var x string
				if err := rows.Scan(&id, &x); err != nil {
					t.Fatal(err)
				}
				got[id] = x
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			for id, x := range got {
				written := false
				for _, w := range tt.written {
					written = written || w == id
				}
				switch {
				case written && x != xid:
					t.Errorf("row %d: ripple_xid %s, want the writer's %s", id, x, xid)
				case !written && x != before:
					t.Errorf("row %d: ripple_xid %s changed (was %s), the row was not written", id, x, before)
				}
			}
		})
	}
}

func TestTombstones(t *testing.T) {
	tests := []struct {
		name  string
		stmts []string
		want  []string // "root pk" of the tombstones, in any order
	}{
		{name: "delete", stmts: []string{"DELETE FROM todos WHERE id = 1"}, want: []string{"acme {1}"}},
		{name: "delete all", stmts: []string{"DELETE FROM todos"}, want: []string{"acme {1}", "globex {2}"}},
		{name: "move to another org", stmts: []string{"UPDATE todos SET org_id = 'globex' WHERE id = 1"}, want: []string{"acme {1}"}},
		{name: "primary key change", stmts: []string{"UPDATE todos SET id = 100 WHERE id = 1"}, want: []string{"acme {1}"}},
		{name: "move and key change", stmts: []string{"UPDATE todos SET id = 100, org_id = 'initech' WHERE id = 1"}, want: []string{"acme {1}"}},
		{name: "root key to NULL and back", stmts: []string{"UPDATE todos SET org_id = NULL WHERE id = 1", "UPDATE todos SET org_id = 'acme' WHERE id = 1"}, want: []string{"acme {1}", "<null> {1}"}},
		{name: "update other columns", stmts: []string{"UPDATE todos SET title = 'x'"}},
		{name: "update root key to the same value", stmts: []string{"UPDATE todos SET org_id = org_id, id = id"}},
		{name: "insert", stmts: []string{"INSERT INTO todos VALUES (3, 'acme', 'three')"}},
		{name: "insert then delete", stmts: []string{"INSERT INTO todos VALUES (3, 'acme', 'three')", "DELETE FROM todos WHERE id = 3"}, want: []string{"acme {3}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := enabledTodos(t)
			xid := inTx(t, conn, tt.stmts...)
			got := queryString(t, conn, `SELECT coalesce(string_agg(coalesce(root_key, '<null>') || ' ' || pk::text, ',' ORDER BY root_key, pk), '') FROM ripple.tombstones WHERE table_name = 'todos'`)
			if want := strings.Join(tt.want, ","); got != want {
				t.Fatalf("tombstones = %q, want %q", got, want)
			}
			if len(tt.want) > 0 {
				if x := queryString(t, conn, "SELECT string_agg(DISTINCT xid::text, ',') FROM ripple.tombstones"); x != xid {
					t.Fatalf("tombstone xid %s, want the deleting transaction's %s", x, xid)
				}
			}
		})
	}
}

// TestCursorSkipsNothing replays the interleaving of BRIEF rule 5 that a
// snapshot-xmin stamp gets wrong: O (open) < T (inserts) ; O commits; a
// catch-up snapshot does not see T; T commits; "ripple_xid >= cursor" must
// find T's row.
func TestCursorSkipsNothing(t *testing.T) {
	ctx := testCtx(t)
	conn, url := newDB(t)
	exec(t, conn, "CREATE TABLE todos (id bigint PRIMARY KEY, org_id text, title text)")
	if _, err := migrations.Enable(ctx, conn, "todos", "org_id"); err != nil {
		t.Fatal(err)
	}
	o, tw, c := connect(t, url), connect(t, url), connect(t, url)
	otx, err := o.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	oxid := queryUint(t, otx, "SELECT pg_current_xact_id()::text")
	ttx, err := tw.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ttx.Exec(ctx, "INSERT INTO todos VALUES (1, 'acme', 't')"); err != nil {
		t.Fatal(err)
	}
	txid := queryUint(t, ttx, "SELECT pg_current_xact_id()::text")
	if oxid >= txid {
		t.Fatalf("O %d must be older than T %d", oxid, txid)
	}
	if err := otx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	cursor := queryUint(t, snap, "SELECT pg_snapshot_xmin(pg_current_snapshot())::text")
	if n := queryString(t, snap, "SELECT count(*)::text FROM todos"); n != "0" {
		t.Fatalf("snapshot sees %s rows, want 0", n)
	}
	if err := snap.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ttx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if cursor > txid {
		t.Fatalf("cursor %d passed the open T %d", cursor, txid)
	}
	if n := queryString(t, conn, "SELECT count(*)::text FROM todos WHERE ripple_xid >= $1::text::xid8", fmt.Sprint(cursor)); n != "1" {
		t.Fatalf("resume from cursor %d finds %s rows, want T's row", cursor, n)
	}
}

func TestPrune(t *testing.T) {
	ctx := testCtx(t)
	conn := enabledTodos(t)
	exec(t, conn, "INSERT INTO todos SELECT g, 'acme', 'x' FROM generate_series(3, 9) g")
	xidOf := func(stmt string) uint64 {
		x := inTx(t, conn, stmt)
		return queryUint(t, conn, "SELECT $1::text", x)
	}
	var x1, x2, x3, x4 uint64
	steps := []struct {
		name        string
		before      func()
		retention   time.Duration
		wantErr     error
		wantDeleted int64
		wantHorizon func() uint64
		wantLeft    int
	}{
		{name: "nothing old enough", before: func() {
			x1 = xidOf("DELETE FROM todos WHERE id = 1")
			x2 = xidOf("DELETE FROM todos WHERE id IN (2, 3)")
		}, retention: time.Hour, wantHorizon: func() uint64 { return 0 }, wantLeft: 3},
		{name: "negative retention", retention: -time.Second, wantErr: migrations.ErrBadRetention, wantLeft: 3},
		{name: "backdated tombstone", before: func() {
			exec(t, conn, "UPDATE ripple.tombstones SET deleted_at = now() - interval '2 hours' WHERE xid = $1::text::xid8", fmt.Sprint(x1))
		}, retention: time.Hour, wantDeleted: 1, wantHorizon: func() uint64 { return x1 + 1 }, wantLeft: 2},
		{name: "retention 0", retention: 0, wantDeleted: 2, wantHorizon: func() uint64 { return x2 + 1 }, wantLeft: 0},
		{name: "horizon never goes down", before: func() {
			x3 = xidOf("DELETE FROM todos WHERE id = 4")
		}, retention: time.Hour, wantHorizon: func() uint64 { return x2 + 1 }, wantLeft: 1},
		{name: "later prune raises it", before: func() {
			x4 = xidOf("UPDATE todos SET org_id = 'globex' WHERE id = 5")
		}, retention: 0, wantDeleted: 2, wantHorizon: func() uint64 { return x4 + 1 }, wantLeft: 0},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		res, err := migrations.Prune(ctx, conn, s.retention)
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: Prune = %+v, %v; want %v", s.name, res, err, s.wantErr)
		}
		left := int(queryUint(t, conn, "SELECT count(*)::text FROM ripple.tombstones"))
		if left != s.wantLeft {
			t.Fatalf("%s: %d tombstones left, want %d", s.name, left, s.wantLeft)
		}
		if s.wantErr != nil {
			continue
		}
		h, err := migrations.Horizon(ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if res.Deleted != s.wantDeleted || res.Horizon != s.wantHorizon() || h != res.Horizon {
			t.Fatalf("%s: Prune = %+v, Horizon %d; want deleted %d, horizon %d", s.name, res, h, s.wantDeleted, s.wantHorizon())
		}
		// A cursor below the horizon is told apart from one at it.
		if h > 0 {
			if err := migrations.CheckCursor(ctx, conn, h-1); !errors.Is(err, migrations.ErrCursorTooOld) {
				t.Fatalf("%s: CheckCursor(%d) = %v, want ErrCursorTooOld", s.name, h-1, err)
			}
		}
		if err := migrations.CheckCursor(ctx, conn, h); err != nil {
			t.Fatalf("%s: CheckCursor(%d) = %v", s.name, h, err)
		}
	}
	if x3 >= x4 || queryString(t, conn, "SELECT (pruned_at IS NOT NULL)::text FROM ripple.horizon") != "true" {
		t.Fatal("xids not increasing or pruned_at not stored")
	}
}

func TestDemoSchema(t *testing.T) {
	ctx := testCtx(t)
	conn, _ := newDB(t)
	var first string
	for i := 0; i < 2; i++ {
		if err := migrations.DemoSchema(ctx, conn); err != nil {
			t.Fatalf("DemoSchema run %d: %v", i+1, err)
		}
		state := queryString(t, conn, `SELECT (SELECT string_agg(name || ':' || root_key || ':' || primary_key::text, ',' ORDER BY name) FROM ripple.tables)
			|| ' orgs=' || (SELECT count(*) FROM organisations) || ' lists=' || (SELECT count(*) FROM todo_lists)
			|| ' items=' || (SELECT count(*) FROM todo_items WHERE org_id IN ('acme', 'globex'))`)
		if i == 0 {
			first = state
		}
		if want := "organisations:org_id:{org_id},todo_items:org_id:{id},todo_lists:org_id:{id} orgs=2 lists=3 items=5"; state != want || state != first {
			t.Fatalf("run %d: %s, want %s", i+1, state, want)
		}
	}
	// Deleting an organisation cascades and leaves a tombstone for each row.
	exec(t, conn, "DELETE FROM organisations WHERE org_id = 'globex'")
	got := queryString(t, conn, "SELECT string_agg(table_name || ':' || root_key, ',' ORDER BY table_name) FROM ripple.tombstones")
	if got != "organisations:globex,todo_items:globex,todo_lists:globex" {
		t.Fatalf("tombstones = %s", got)
	}
}

// PruneMutations deletes the mutation records older than the retention, in
// several transactions when there are many, and keeps the newer ones.
func TestPruneMutations(t *testing.T) {
	ctx := testCtx(t)
	conn := enabledTodos(t)
	exec(t, conn, `INSERT INTO ripple.mutations (client_id, mutation_id, org, status, created_at)
		SELECT 'c' || (g % 7), g, 'acme', 'applied', now() - interval '2 hours' FROM generate_series(1, 25000) g`)
	exec(t, conn, `INSERT INTO ripple.mutations (client_id, mutation_id, org, status)
		SELECT 'new', g, 'acme', 'applied' FROM generate_series(1, 5) g`)
	tests := []struct {
		name        string
		retention   time.Duration
		wantErr     error
		wantDeleted int64
		wantLeft    uint64
	}{
		{"a negative retention is refused", -time.Second, migrations.ErrBadRetention, 0, 25005},
		{"records older than the retention go, in batches", time.Hour, nil, 25000, 5},
		{"nothing more is old enough", time.Hour, nil, 0, 5},
		{"retention 0 deletes every record", 0, nil, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := migrations.PruneMutations(ctx, conn, tt.retention)
			if !errors.Is(err, tt.wantErr) || n != tt.wantDeleted {
				t.Fatalf("PruneMutations = %d, %v; want %d, %v", n, err, tt.wantDeleted, tt.wantErr)
			}
			if left := queryUint(t, conn, "SELECT count(*)::text FROM ripple.mutations"); left != tt.wantLeft {
				t.Fatalf("%d records left, want %d", left, tt.wantLeft)
			}
		})
	}
}

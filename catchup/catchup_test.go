package catchup_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

func TestSnapshotFull(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	f.exec(t, `INSERT INTO todos (id, org_id, title, done) VALUES
		(1, 'acme', 'milk', false), (2, 'acme', 'eggs "large"', true), (3, 'acme', NULL, false),
		(4, 'other', 'secret', false), (5, 'other', 'hidden', true)`)
	before := f.insertLSN(t)
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url})

	tests := []struct {
		name    string
		req     catchup.Request
		want    []op
		wantErr error
	}{
		{
			name: "all columns of one org, none of another",
			req:  catchup.Request{Table: "todos", Org: "acme"},
			want: []op{
				{"insert", `{"id":"1","org_id":"acme","title":"milk","done":false}`},
				{"insert", `{"id":"2","org_id":"acme","title":"eggs \"large\"","done":true}`},
				{"insert", `{"id":"3","org_id":"acme","title":null,"done":false}`},
			},
		},
		{
			name: "a column list gets the primary key added, in table order",
			req:  catchup.Request{Table: "todos", Org: "other", Columns: []string{"done", "title"}},
			want: []op{
				{"insert", `{"id":"4","title":"secret","done":false}`},
				{"insert", `{"id":"5","title":"hidden","done":true}`},
			},
		},
		{
			name: "an empty column list means the primary key only",
			req:  catchup.Request{Table: "todos", Org: "other", Columns: []string{}},
			want: []op{{"insert", `{"id":"4"}`}, {"insert", `{"id":"5"}`}},
		},
		{
			name: "an org without rows gets an empty snapshot",
			req:  catchup.Request{Table: "todos", Org: "nobody"},
		},
		{
			name:    "an unknown column is refused",
			req:     catchup.Request{Table: "todos", Org: "acme", Columns: []string{"title", "nope"}},
			wantErr: catchup.ErrBadColumns,
		},
		{
			name:    "ripple's own xid column is not a column",
			req:     catchup.Request{Table: "todos", Org: "acme", Columns: []string{schema.XIDColumn}},
			wantErr: catchup.ErrBadColumns,
		},
		{
			name:    "an unknown table is refused",
			req:     catchup.Request{Table: "nope", Org: "acme"},
			wantErr: schema.ErrUnknownTable,
		},
		{
			name:    "a table that exists but is not synced is refused",
			req:     catchup.Request{Table: "scratch", Org: "acme"},
			wantErr: schema.ErrUnknownTable,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			res, ops, err := collect(ctx, c, tt.req)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if len(ops) != 0 {
					t.Fatalf("an error emitted %d ops", len(ops))
				}
				return
			}
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if got, want := sortedOps(ops), sortedOps(tt.want); !reflect.DeepEqual(got, want) && len(want)+len(got) > 0 {
				t.Fatalf("ops:\n got %v\nwant %v", got, want)
			}
			if res.Mode != schema.SnapshotFull || res.Rows != len(tt.want) {
				t.Fatalf("result %+v, want mode full and %d rows", res, len(tt.want))
			}
			after := f.insertLSN(t)
			if res.U < before || res.U > after {
				t.Fatalf("U = %s, want between %s and %s", res.U, before, after)
			}
			next := xidOf(t, f, "SELECT pg_current_xact_id()::text")
			if res.Cursor == 0 || res.Cursor > next {
				t.Fatalf("cursor = %s, want in (0, %s]", res.Cursor, next)
			}
		})
	}
}

func TestTableLookup(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url})
	ctx := t.Context()
	tbl, err := c.Table(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	want := &schema.Table{Name: "todos", Schema: "public", Relation: "todos", RootKey: "org_id",
		PrimaryKey: []string{"id"}, Columns: []schema.Column{{Name: "id", TypeOID: 20}, {Name: "org_id", TypeOID: 25}, {Name: "title", TypeOID: 25}, {Name: "done", TypeOID: 16}}}
	if !reflect.DeepEqual(tbl, want) {
		t.Fatalf("Table = %+v, want %+v", tbl, want)
	}
	if _, err := c.Table(ctx, "later"); !errors.Is(err, schema.ErrUnknownTable) {
		t.Fatalf("unknown table: err = %v", err)
	}
	// A table enabled after the registry was loaded is found on a miss.
	f.exec(t, "CREATE SCHEMA app; CREATE TABLE app.later (org uuid, k int, v jsonb, PRIMARY KEY (org, k))")
	if _, err := migrations.Enable(ctx, f.conn, "app.later", "org"); err != nil {
		t.Fatal(err)
	}
	tbl, err = c.Table(ctx, "app.later")
	if err != nil {
		t.Fatalf("table enabled later: %v", err)
	}
	if tbl.Schema != "app" || tbl.Relation != "later" || !reflect.DeepEqual(tbl.PrimaryKey, []string{"org", "k"}) {
		t.Fatalf("app.later = %+v", tbl)
	}
	// A bad root key value is a clear error, not an internal one.
	_, _, err = collect(ctx, c, catchup.Request{Table: "app.later", Org: "not-a-uuid"})
	if !errors.Is(err, catchup.ErrBadOrg) {
		t.Fatalf("bad org: err = %v, want ErrBadOrg", err)
	}
	// A registered table dropped without being disabled becomes unknown;
	// the other tables stay usable.
	f.exec(t, "DROP TABLE app.later")
	if err := c.Reload(ctx); err != nil {
		t.Fatalf("reload with a dropped sync table: %v", err)
	}
	if _, err := c.Table(ctx, "app.later"); !errors.Is(err, schema.ErrUnknownTable) {
		t.Fatalf("dropped table: err = %v, want ErrUnknownTable", err)
	}
	if _, err := c.Table(ctx, "todos"); err != nil {
		t.Fatalf("todos after another table was dropped: %v", err)
	}
}

// TestResume changes a few rows among many and checks that a resume sends
// only the changes (at most 1.1x the rows changed) and that applying them
// to the client's copy gives the table.
func TestResume(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	f.exec(t, `INSERT INTO todos (id, org_id, title) SELECT g, 'acme', 'item ' || g FROM generate_series(1, 2000) g`)
	f.exec(t, `INSERT INTO todos (id, org_id, title) SELECT g, 'other', 'x' FROM generate_series(5001, 5100) g`)
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url, BatchRows: 100})
	ctx := t.Context()

	res, ops, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	v := view{}.apply(t, res.Mode, ops)
	if len(v) != 2000 {
		t.Fatalf("snapshot has %d rows, want 2000", len(v))
	}

	// 30 inserts, 40 updates (one transaction each), 30 deletes, plus
	// changes in another organisation that must not be sent.
	changed := 0
	for i := 0; i < 30; i++ {
		f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES ($1, 'acme', 'new')", 3000+i)
		changed++
	}
	for i := 0; i < 40; i++ {
		f.exec(t, "UPDATE todos SET done = true WHERE id = $1", 100+i)
		changed++
	}
	f.exec(t, "DELETE FROM todos WHERE id BETWEEN 500 AND 529")
	changed += 30
	f.exec(t, "UPDATE todos SET title = 'y' WHERE org_id = 'other'")
	f.exec(t, "DELETE FROM todos WHERE id BETWEEN 5001 AND 5010")

	res2, ops2, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(res.Cursor)})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Mode != schema.SnapshotResume {
		t.Fatalf("mode = %s, want resume", res2.Mode)
	}
	if res2.Rows != len(ops2) || float64(len(ops2)) > 1.1*float64(changed) || len(ops2) < changed {
		t.Fatalf("resume sent %d ops (Rows %d) for %d changed rows", len(ops2), res2.Rows, changed)
	}
	deletes := 0
	for _, o := range ops2 {
		if o.Op == schema.OpDelete {
			deletes++
			if want := fmt.Sprintf(`{"id":"%s"}`, o.Data[7:10]); o.Data != want {
				t.Fatalf("delete key %s, want %s", o.Data, want)
			}
		}
	}
	if deletes != 30 {
		t.Fatalf("%d deletes, want 30", deletes)
	}
	v = v.apply(t, res2.Mode, ops2)
	if want := f.tableView(t, "acme"); !reflect.DeepEqual(v, want) {
		t.Fatalf("client view after resume differs from the table: %d rows vs %d", len(v), len(want))
	}
	if res2.Cursor < res.Cursor {
		t.Fatalf("cursor went back: %s after %s", res2.Cursor, res.Cursor)
	}

	// Nothing changed since: an empty resume.
	res3, ops3, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(res2.Cursor)})
	if err != nil || res3.Mode != schema.SnapshotResume || len(ops3) != 0 {
		t.Fatalf("resume with nothing changed: %+v, %d ops, %v", res3, len(ops3), err)
	}
}

// TestLongTransactionInterleaving is the interleaving of BRIEF rule 5 that
// loses a row when rows are stamped with the writer's snapshot xmin:
// O holds an xid; T inserts R; O commits; a catch-up takes its snapshot
// (cursor = its xmin, T not visible); T commits; the resume finds R.
func TestLongTransactionInterleaving(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES (1, 'acme', 'before')")
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url})
	ctx := t.Context()

	o := connect(t, f.url)
	tconn := connect(t, f.url)
	oTx, err := o.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var oXID, tXID string
	if err := oTx.QueryRow(ctx, "INSERT INTO scratch (note) VALUES ('O') RETURNING pg_current_xact_id()::text").Scan(&oXID); err != nil {
		t.Fatal(err)
	}
	tTx, err := tconn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tTx.QueryRow(ctx, "INSERT INTO todos (id, org_id, title) VALUES (2, 'acme', 'R') RETURNING ripple_xid::text").Scan(&tXID); err != nil {
		t.Fatal(err)
	}
	oX, tX := mustXID(t, oXID), mustXID(t, tXID)
	if tX <= oX {
		t.Fatalf("T's xid %s not after O's %s", tXID, oXID)
	}
	if err := oTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	res, ops, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || keyOf(t, ops[0].Data) != `"1"` {
		t.Fatalf("snapshot while T is open: %v, want only row 1", ops)
	}
	if res.Cursor > tX {
		t.Fatalf("cursor %s is past the open transaction T %s: a resume would skip R", res.Cursor, tXID)
	}
	// What the proof of concept stamped R with (the writer's snapshot xmin)
	// is below T's xid; the cursor must not pass T's own xid.
	if res.Cursor <= oX {
		t.Logf("cursor %s held back by another open transaction (O was %s)", res.Cursor, oXID)
	}
	if err := tTx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	res2, ops2, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(res.Cursor)})
	if err != nil {
		t.Fatal(err)
	}
	want := []op{{"insert", `{"id":"2","org_id":"acme","title":"R","done":false}`}}
	if res2.Mode != schema.SnapshotResume || !reflect.DeepEqual(ops2, want) {
		t.Fatalf("resume after T committed: mode %s ops %v, want resume %v", res2.Mode, ops2, want)
	}
}

// TestCursorBelowHorizon checks rule 6: a cursor older than the pruned
// tombstone horizon gets a full snapshot, never a silent gap.
func TestCursorBelowHorizon(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	f.exec(t, `INSERT INTO todos (id, org_id, title) SELECT g, 'acme', 't' FROM generate_series(1, 10) g`)
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url})
	ctx := t.Context()
	res, _, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	f.exec(t, "DELETE FROM todos WHERE id IN (3, 4)")
	pr, err := migrations.Prune(ctx, f.conn, 0)
	if err != nil {
		t.Fatal(err)
	}
	if pr.Deleted != 2 || schema.XID8(pr.Horizon) <= res.Cursor {
		t.Fatalf("prune: %+v (cursor %s)", pr, res.Cursor)
	}

	tests := []struct {
		name     string
		cursor   schema.XID8
		wantMode string
		wantRows int
	}{
		{"a cursor below the horizon gets a full snapshot", res.Cursor, schema.SnapshotFull, 8},
		{"a cursor at the horizon resumes", schema.XID8(pr.Horizon), schema.SnapshotResume, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res2, ops, err := collect(t.Context(), c, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(tt.cursor)})
			if err != nil {
				t.Fatal(err)
			}
			if res2.Mode != tt.wantMode || len(ops) != tt.wantRows {
				t.Fatalf("mode %s with %d ops, want %s with %d", res2.Mode, len(ops), tt.wantMode, tt.wantRows)
			}
			if tt.wantMode == schema.SnapshotFull {
				if v := (view{}).apply(t, res2.Mode, ops); !reflect.DeepEqual(v, f.tableView(t, "acme")) {
					t.Fatalf("full snapshot differs from the table")
				}
			}
		})
	}
}

// TestTombstonesAndRows covers how tombstones and live rows combine in a
// resume (rule 6, "the larger xid wins").
func TestTombstonesAndRows(t *testing.T) {
	tests := []struct {
		name  string
		after []string // statements run after the cursor was taken
		want  []op     // for org acme, in order
		other []op     // for org other, in order
	}{
		{
			name:  "a row deleted and inserted again is sent as the row",
			after: []string{"DELETE FROM todos WHERE id = 1", "INSERT INTO todos (id, org_id, title) VALUES (1, 'acme', 'again')"},
			want:  []op{{"insert", `{"id":"1","org_id":"acme","title":"again","done":false}`}},
		},
		{
			name:  "a row inserted and then deleted is sent as a delete",
			after: []string{"INSERT INTO todos (id, org_id, title) VALUES (9, 'acme', 'brief')", "DELETE FROM todos WHERE id = 9"},
			want:  []op{{"delete", `{"id":"9"}`}},
		},
		{
			name:  "a deleted row is sent as a delete of its key",
			after: []string{"DELETE FROM todos WHERE id = 2"},
			want:  []op{{"delete", `{"id":"2"}`}},
		},
		{
			name:  "deleted twice and re-inserted in between is one delete",
			after: []string{"DELETE FROM todos WHERE id = 2", "INSERT INTO todos (id, org_id) VALUES (2, 'acme')", "DELETE FROM todos WHERE id = 2"},
			want:  []op{{"delete", `{"id":"2"}`}},
		},
		{
			name:  "a row moved to another org is a delete here and an insert there",
			after: []string{"UPDATE todos SET org_id = 'other' WHERE id = 3"},
			want:  []op{{"delete", `{"id":"3"}`}},
			other: []op{{"insert", `{"id":"3","org_id":"other","title":"c","done":false}`}},
		},
		{
			name:  "a row whose key changed is a delete of the old key and the new row",
			after: []string{"UPDATE todos SET id = 30 WHERE id = 3"},
			want:  []op{{"delete", `{"id":"3"}`}, {"insert", `{"id":"30","org_id":"acme","title":"c","done":false}`}},
		},
	}
	pg := testenv.SharedPostgres(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, pg)
			f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES (1, 'acme', 'a'), (2, 'acme', 'b'), (3, 'acme', 'c')")
			c := newCatchup(t, catchup.Config{PrimaryURL: f.url})
			ctx := t.Context()
			res, ops, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme"})
			if err != nil {
				t.Fatal(err)
			}
			resOther, _, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "other"})
			if err != nil {
				t.Fatal(err)
			}
			v := view{}.apply(t, res.Mode, ops)
			for _, s := range tt.after {
				f.exec(t, s)
			}
			res2, ops2, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(res.Cursor)})
			if err != nil {
				t.Fatal(err)
			}
			if res2.Mode != schema.SnapshotResume || !reflect.DeepEqual(ops2, tt.want) {
				t.Fatalf("resume: mode %s ops %v, want %v", res2.Mode, ops2, tt.want)
			}
			if got := v.apply(t, res2.Mode, ops2); !reflect.DeepEqual(got, f.tableView(t, "acme")) {
				t.Fatalf("client view %v differs from the table", got)
			}
			_, opsOther, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "other", Cursor: ptr(resOther.Cursor)})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(opsOther, tt.other) {
				t.Fatalf("other org: ops %v, want %v", opsOther, tt.other)
			}
		})
	}
}

// TestBatches checks that batches respect BatchRows and BatchBytes and that
// an emit error stops the catch-up.
func TestBatches(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	f.exec(t, `INSERT INTO todos (id, org_id, title) SELECT g, 'acme', repeat('x', 100) FROM generate_series(1, 1000) g`)
	ctx := t.Context()
	tests := []struct {
		name       string
		cfg        catchup.Config
		maxOps     int
		maxBytes   int
		minBatches int
	}{
		{"bounded by rows", catchup.Config{BatchRows: 64}, 64, 1 << 30, 16},
		{"bounded by bytes", catchup.Config{BatchBytes: 4096}, 1000, 4096 + 200, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			cfg.PrimaryURL = f.url
			c := newCatchup(t, cfg)
			batches, total := 0, 0
			res, err := c.Run(ctx, catchup.Request{Table: "todos", Org: "acme"}, func(ops []schema.Op) error {
				batches++
				total += len(ops)
				size := 0
				for _, o := range ops {
					size += len(o.Row)
				}
				if len(ops) > tt.maxOps || size > tt.maxBytes {
					return fmt.Errorf("batch of %d ops, %d bytes", len(ops), size)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if total != 1000 || res.Rows != 1000 || batches < tt.minBatches {
				t.Fatalf("%d ops in %d batches (Rows %d)", total, batches, res.Rows)
			}
		})
	}
	t.Run("an emit error stops the catch-up", func(t *testing.T) {
		c := newCatchup(t, catchup.Config{PrimaryURL: f.url, BatchRows: 10})
		stop := errors.New("client gone")
		calls := 0
		_, err := c.Run(ctx, catchup.Request{Table: "todos", Org: "acme"}, func([]schema.Op) error {
			calls++
			return stop
		})
		if !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("err %v after %d calls, want the emit error after 1", err, calls)
		}
		// The pool recovers: the next catch-up works.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, ops, err := collect(cctx, c, catchup.Request{Table: "todos", Org: "acme"}); err != nil || len(ops) != 1000 {
			t.Fatalf("next catch-up: %d ops, %v", len(ops), err)
		}
	})
}

func TestBeginAnnouncesMode(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	f.exec(t, "INSERT INTO todos (id, org_id) VALUES (1, 'acme')")
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url})
	var begun []catchup.Result
	sawBatchBeforeBegin := false
	res, err := c.Run(t.Context(), catchup.Request{Table: "todos", Org: "acme",
		Begin: func(r catchup.Result) error { begun = append(begun, r); return nil }},
		func([]schema.Op) error {
			if len(begun) == 0 {
				sawBatchBeforeBegin = true
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if sawBatchBeforeBegin || len(begun) != 1 || begun[0].Mode != res.Mode || begun[0].Cursor != res.Cursor || begun[0].U != res.U {
		t.Fatalf("Begin calls %+v, result %+v", begun, res)
	}
}

// TestSnapshotStreams checks that a snapshot is streamed: what the catch-up
// allocates is a small fraction of what it sends.
func TestSnapshotStreams(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	const n = 50000
	f.exec(t, fmt.Sprintf(`INSERT INTO todos (id, org_id, title) SELECT g, 'acme', repeat('r', 200) FROM generate_series(1, %d) g`, n))
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url})
	ctx := t.Context()
	run := func() (catchup.Result, uint64) {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		res, err := c.Run(ctx, catchup.Request{Table: "todos", Org: "acme"}, func([]schema.Op) error { return nil })
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		return res, after.TotalAlloc - before.TotalAlloc
	}
	run() // warm the registry, types and pool
	res, alloc := run()
	if res.Rows != n || res.Bytes < n*200 {
		t.Fatalf("result %+v", res)
	}
	if alloc > uint64(res.Bytes)/4 {
		t.Fatalf("allocated %d bytes to send %d: the snapshot is not streamed", alloc, res.Bytes)
	}
	t.Logf("sent %d bytes, allocated %d", res.Bytes, alloc)
}

// Tombstones render keys exactly as the stream does, whatever the type of
// the primary key and the settings of the session that deleted: a row
// deleted and inserted again after the cursor is sent as the row (and not
// also as a delete, which the client would apply after it), and a deleted
// row's delete carries the key as the row had it. Each tombstone's text key
// is cast back to the key column's type with its modifier (char(n) padding
// is kept), and the trigger renders keys under Ripple's session settings
// (a timestamptz deleted by a session with DateStyle German and another time
// zone).
func TestTombstoneKeyTypes(t *testing.T) {
	tests := []struct {
		name, typ, key, row, del string
	}{
		{"a char(n) key", "char(6)", "'abc'", `{"k":"abc   ","org_id":"acme","v":"again"}`, `{"k":"abc   "}`},
		{"a varchar(n) key", "varchar(6)", "'abc'", `{"k":"abc","org_id":"acme","v":"again"}`, `{"k":"abc"}`},
		{"a numeric(10,2) key", "numeric(10,2)", "1.5", `{"k":"1.50","org_id":"acme","v":"again"}`, `{"k":"1.50"}`},
		{"a uuid key", "uuid", "'00000000-0000-0000-0000-0000000000ab'",
			`{"k":"00000000-0000-0000-0000-0000000000ab","org_id":"acme","v":"again"}`, `{"k":"00000000-0000-0000-0000-0000000000ab"}`},
		{"a timestamptz key", "timestamptz", "'2026-01-02 03:04:05+00'",
			`{"k":"2026-01-02 03:04:05+00","org_id":"acme","v":"again"}`, `{"k":"2026-01-02 03:04:05+00"}`},
	}
	pg := testenv.SharedPostgres(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, pg)
			f.exec(t, "CREATE TABLE keyed (k "+tt.typ+" PRIMARY KEY, org_id text NOT NULL, v text)")
			if _, err := migrations.Enable(t.Context(), f.conn, "keyed", "org_id"); err != nil {
				t.Fatal(err)
			}
			// The application's session has settings of its own.
			f.exec(t, "SET DateStyle = 'German, DMY'; SET TimeZone = 'Asia/Kolkata'; SET extra_float_digits = 0")
			f.exec(t, "INSERT INTO keyed (k, org_id, v) VALUES ("+tt.key+", 'acme', 'first')")
			c := newCatchup(t, catchup.Config{PrimaryURL: f.url})
			res, _, err := collect(t.Context(), c, catchup.Request{Table: "keyed", Org: "acme"})
			if err != nil {
				t.Fatal(err)
			}
			f.exec(t, "DELETE FROM keyed WHERE k = "+tt.key)
			f.exec(t, "INSERT INTO keyed (k, org_id, v) VALUES ("+tt.key+", 'acme', 'again')")
			_, ops, err := collect(t.Context(), c, catchup.Request{Table: "keyed", Org: "acme", Cursor: ptr(res.Cursor)})
			if err != nil {
				t.Fatal(err)
			}
			if want := []op{{"insert", tt.row}}; !reflect.DeepEqual(ops, want) {
				t.Fatalf("resume after delete and insert: ops %v, want %v", ops, want)
			}
			f.exec(t, "DELETE FROM keyed WHERE k = "+tt.key)
			_, ops, err = collect(t.Context(), c, catchup.Request{Table: "keyed", Org: "acme", Cursor: ptr(res.Cursor)})
			if err != nil {
				t.Fatal(err)
			}
			if want := []op{{"delete", tt.del}}; !reflect.DeepEqual(ops, want) {
				t.Fatalf("resume after delete: ops %v, want %v", ops, want)
			}
		})
	}
}

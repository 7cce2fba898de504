package catchup_test

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// fixture is one database with the sync table todos (root key org_id).
type fixture struct {
	pg   *testenv.Postgres
	url  string // primary URL of the database
	db   string
	conn *pgx.Conn // to the primary
}

const todosDDL = `CREATE TABLE todos (
	id bigint PRIMARY KEY,
	org_id text NOT NULL,
	title text,
	done boolean NOT NULL DEFAULT false
);
CREATE TABLE scratch (id serial PRIMARY KEY, note text)`

func newFixture(t testing.TB, pg *testenv.Postgres) *fixture {
	t.Helper()
	dbURL := pg.CreateDatabase(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{pg: pg, url: dbURL, db: strings.TrimPrefix(u.Path, "/")}
	f.conn = connect(t, dbURL)
	f.exec(t, todosDDL)
	ctx := context.Background()
	if err := migrations.Migrate(ctx, f.conn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if _, err := migrations.Enable(ctx, f.conn, "todos", "org_id"); err != nil {
		t.Fatalf("enable: %v", err)
	}
	return f
}

func connect(t testing.TB, u string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (f *fixture) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := f.conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// insertLSN returns the primary's current insert LSN: at or past the end of
// every commit so far.
func (f *fixture) insertLSN(t testing.TB) schema.LSN {
	t.Helper()
	var s string
	if err := f.conn.QueryRow(context.Background(), "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	l, err := schema.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newCatchup(t testing.TB, cfg catchup.Config) *catchup.Catchup {
	t.Helper()
	c, err := catchup.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("catchup.New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// op is an operation copied out of an emitted batch.
type op struct {
	Op   string
	Data string // row or key
}

// collect runs a catch-up and copies every emitted operation.
func collect(ctx context.Context, c *catchup.Catchup, req catchup.Request) (catchup.Result, []op, error) {
	var ops []op
	res, err := c.Run(ctx, req, func(batch []schema.Op) error {
		for _, o := range batch {
			d := o.Row
			if o.Op == schema.OpDelete {
				d = o.Key
			}
			ops = append(ops, op{Op: o.Op, Data: string(d)})
		}
		return nil
	})
	return res, ops, err
}

// view is a client's copy of one subscription: encoded rows by key.
type view map[string]string

// apply applies operations in order, as a client does: a full snapshot
// replaces everything held.
func (v view) apply(t testing.TB, mode string, ops []op) view {
	t.Helper()
	if mode == schema.SnapshotFull {
		v = view{}
	}
	for _, o := range ops {
		switch o.Op {
		case schema.OpInsert, schema.OpUpdate:
			v[keyOf(t, o.Data)] = o.Data
		case schema.OpDelete:
			delete(v, keyOf(t, o.Data))
		default:
			t.Fatalf("unexpected op %q", o.Op)
		}
	}
	return v
}

func keyOf(t testing.TB, data string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		t.Fatalf("bad JSON %q: %v", data, err)
	}
	id, ok := m["id"]
	if !ok {
		t.Fatalf("no id in %s", data)
	}
	return string(id)
}

// tableView reads the org's rows from the primary, encoded as the codec does
// (through a full catch-up on a fresh Catchup would be circular, so this
// builds the JSON by hand for the todos columns).
func (f *fixture) tableView(t testing.TB, org string) view {
	t.Helper()
	rows, err := f.conn.Query(context.Background(),
		"SELECT id::text, org_id, title, done FROM todos WHERE org_id = $1", org)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	v := view{}
	for rows.Next() {
		var (
			id, o string
			title *string
			done  bool
		)
		if err := rows.Scan(&id, &o, &title, &done); err != nil {
			t.Fatal(err)
		}
		v[`"`+id+`"`] = todoJSON(id, o, title, done)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return v
}

func todoJSON(id, org string, title *string, done bool) string {
	b, _ := json.Marshal(org)
	s := `{"id":"` + id + `","org_id":` + string(b) + `,"title":`
	if title == nil {
		s += "null"
	} else {
		tb, _ := json.Marshal(*title)
		s += string(tb)
	}
	if done {
		return s + `,"done":true}`
	}
	return s + `,"done":false}`
}

func sortedOps(ops []op) []op {
	out := append([]op(nil), ops...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Op != out[j].Op {
			return out[i].Op < out[j].Op
		}
		return out[i].Data < out[j].Data
	})
	return out
}

func ptr[T any](v T) *T { return &v }

func mustXID(t testing.TB, s string) schema.XID8 {
	t.Helper()
	x, err := schema.ParseXID8(s)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func xidOf(t testing.TB, f *fixture, sql string) schema.XID8 {
	t.Helper()
	var s string
	if err := f.conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return mustXID(t, s)
}

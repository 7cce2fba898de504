package schema_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

func TestNewRegistry(t *testing.T) {
	good := func() *schema.Table {
		return &schema.Table{Name: "todos", Schema: "public", Relation: "todos", RootKey: "org_id",
			PrimaryKey: []string{"id"}, Columns: []schema.Column{{Name: "id", TypeOID: 20}, {Name: "org_id", TypeOID: 25}}}
	}
	tests := []struct {
		name   string
		mutate func(*schema.Table)
		errHas string
	}{
		{"ok", func(*schema.Table) {}, ""},
		{"name mismatch", func(t *schema.Table) { t.Name = "other" }, "does not match"},
		{"empty relation", func(t *schema.Table) { t.Relation = "" }, "empty"},
		{"no columns", func(t *schema.Table) { t.Columns = nil }, "no columns"},
		{"root key missing", func(t *schema.Table) { t.RootKey = "tenant" }, "root key"},
		{"no primary key", func(t *schema.Table) { t.PrimaryKey = nil }, "no primary key"},
		{"pk not a column", func(t *schema.Table) { t.PrimaryKey = []string{"id", "x"} }, "primary key column"},
		{"xid column listed", func(t *schema.Table) {
			t.Columns = append(t.Columns, schema.Column{Name: schema.XIDColumn, TypeOID: 5069})
		}, schema.XIDColumn},
		{"duplicate column", func(t *schema.Table) { t.Columns = append(t.Columns, t.Columns[0]) }, "duplicate column"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := good()
			tt.mutate(tab)
			r, err := schema.NewRegistry([]*schema.Table{tab})
			if tt.errHas == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got, ok := r.Table("todos"); !ok || got != tab {
					t.Fatal("table not found")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("error = %v, want one mentioning %q", err, tt.errHas)
			}
		})
	}
	if _, err := schema.NewRegistry([]*schema.Table{good(), good()}); err == nil || !strings.Contains(err.Error(), "duplicate table") {
		t.Fatalf("duplicate table: %v", err)
	}
}

const registryDDL = `
CREATE SCHEMA ripple;
CREATE TABLE ripple.tables (name text PRIMARY KEY, schema_name text, relation text, root_key text, primary_key text[]);
CREATE SCHEMA app;
CREATE TYPE app.status AS ENUM ('open', 'done');
CREATE TABLE todos (id int8 PRIMARY KEY, gone int4, org_id text NOT NULL, title text, ripple_xid xid8, done bool, tags text[]);
ALTER TABLE todos DROP COLUMN gone;
CREATE TABLE app.items (org_id uuid, item_no int4, payload jsonb, status app.status, PRIMARY KEY (org_id, item_no));
CREATE TABLE nopk (org_id text, v text);
CREATE TABLE priced (id int4 PRIMARY KEY, org_id text, price money);
CREATE TABLE shaped (code char(3) PRIMARY KEY, org_id varchar(10), n numeric(8,2), twice int4 GENERATED ALWAYS AS (length(code) * 2) STORED, codes char(2)[]);
INSERT INTO ripple.tables VALUES
	('todos', 'public', 'todos', 'org_id', NULL),
	('app.items', 'app', 'items', 'org_id', '{item_no,org_id}');
`

func TestLoadRegistry(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	url := pg.CreateDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := connect(t, url)
	if _, err := conn.Exec(ctx, registryDDL); err != nil {
		t.Fatal(err)
	}
	reg, err := schema.LoadRegistry(ctx, conn, schema.RegistryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	types, err := schema.LoadTypes(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	var statusOID uint32
	if err := conn.QueryRow(ctx, "SELECT 'app.status'::regtype::oid").Scan(&statusOID); err != nil {
		t.Fatal(err)
	}

	var names []string
	for _, tab := range reg.Tables() {
		names = append(names, tab.Name)
	}
	if !reflect.DeepEqual(names, []string{"app.items", "todos"}) {
		t.Fatalf("tables = %v", names)
	}
	todos, ok := reg.Table("todos")
	if !ok {
		t.Fatal("todos missing")
	}
	wantCols := []schema.Column{{"id", 20}, {"org_id", 25}, {"title", 25}, {"done", 16}, {"tags", 1009}}
	if !reflect.DeepEqual(todos.Columns, wantCols) {
		t.Fatalf("todos columns = %v, want %v (dropped and xid columns left out)", todos.Columns, wantCols)
	}
	if !reflect.DeepEqual(todos.PrimaryKey, []string{"id"}) || !reflect.DeepEqual(todos.KeyIndexes(), []int{0}) {
		t.Fatalf("todos key %v at %v (from pg_index)", todos.PrimaryKey, todos.KeyIndexes())
	}
	if todos.RootKeyIndex() != 1 || todos.ColumnIndex("tags") != 4 || todos.ColumnIndex("ripple_xid") != -1 {
		t.Fatalf("indexes: root %d tags %d xid %d", todos.RootKeyIndex(), todos.ColumnIndex("tags"), todos.ColumnIndex("ripple_xid"))
	}
	items, ok := reg.ByRelation("app", "items")
	if !ok || items.Name != "app.items" {
		t.Fatalf("ByRelation(app, items) = %v, %v", items, ok)
	}
	if !reflect.DeepEqual(items.KeyIndexes(), []int{1, 0}) || items.RootKeyIndex() != 0 {
		t.Fatalf("items key indexes %v root %d (explicit primary_key order)", items.KeyIndexes(), items.RootKeyIndex())
	}
	if items.Columns[3].TypeOID != statusOID {
		t.Fatalf("items.status oid %d, want %d", items.Columns[3].TypeOID, statusOID)
	}
	if _, ok := reg.Table("nopk"); ok {
		t.Fatal("unregistered table found")
	}
	if _, ok := reg.ByRelation("public", "items"); ok {
		t.Fatal("ByRelation matched the wrong schema")
	}
	if err := reg.CheckTypes(types); err != nil {
		t.Fatal(err)
	}
	if err := reg.CheckTypes(schema.BuiltinTypes()); !errors.Is(err, schema.ErrUnsupportedType) || !strings.Contains(err.Error(), `"status"`) {
		t.Fatalf("CheckTypes without the enum = %v", err)
	}

	// Bad registry rows are clear errors; each runs in a rolled-back transaction.
	bad := []struct {
		name, sql, errHas string
	}{
		{"no primary key", `INSERT INTO ripple.tables VALUES ('nopk', 'public', 'nopk', 'org_id', NULL)`, "no primary key"},
		{"bad root key", `INSERT INTO ripple.tables VALUES ('nopk', 'public', 'nopk', 'tenant', '{v}')`, "root key"},
		{"bad pk column", `INSERT INTO ripple.tables VALUES ('nopk', 'public', 'nopk', 'org_id', '{nope}')`, "primary key column"},
		{"wrong name", `INSERT INTO ripple.tables VALUES ('x', 'public', 'nopk', 'org_id', '{v}')`, "does not match"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			tx := rolledBack(t, ctx, conn, tt.sql)
			_, err := schema.LoadRegistry(ctx, tx, schema.RegistryFilter{})
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("LoadRegistry = %v, want error mentioning %q", err, tt.errHas)
			}
		})
	}
	t.Run("unsupported column type", func(t *testing.T) {
		tx := rolledBack(t, ctx, conn, `INSERT INTO ripple.tables VALUES ('priced', 'public', 'priced', 'org_id', NULL)`)
		r, err := schema.LoadRegistry(ctx, tx, schema.RegistryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		err = r.CheckTypes(types)
		if !errors.Is(err, schema.ErrUnsupportedType) || !strings.Contains(err.Error(), `"price"`) || !strings.Contains(err.Error(), "money") {
			t.Fatalf("CheckTypes = %v", err)
		}
	})
	t.Run("a registered table whose relation is gone is left out of the registry but listed by LoadTableDefs", func(t *testing.T) {
		tx := rolledBack(t, ctx, conn, `INSERT INTO ripple.tables VALUES ('ghost', 'public', 'ghost', 'org_id', '{id}')`)
		r, err := schema.LoadRegistry(ctx, tx, schema.RegistryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := r.Table("ghost"); ok || len(r.Tables()) != 2 {
			t.Fatalf("registry holds %d tables, ghost found %v; want the 2 others only", len(r.Tables()), ok)
		}
		defs, err := schema.LoadTableDefs(ctx, tx, schema.RegistryFilter{Name: "ghost"})
		if err != nil || len(defs) != 1 {
			t.Fatalf("LoadTableDefs(ghost) = %d defs, %v; want 1", len(defs), err)
		}
		if d := defs[0]; d.RootKey != "org_id" || !reflect.DeepEqual(d.PrimaryKey, []string{"id"}) || d.Columns != nil || d.Attributes != nil {
			t.Fatalf("ghost = %+v, want its registry row without columns", d)
		}
	})
	t.Run("attributes give type names with and without modifier, cast types, arrays and generated columns", func(t *testing.T) {
		tx := rolledBack(t, ctx, conn, `INSERT INTO ripple.tables VALUES ('shaped', 'public', 'shaped', 'org_id', '{code}')`)
		r, err := schema.LoadRegistry(ctx, tx, schema.RegistryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		d, ok := r.Def("shaped")
		if !ok {
			t.Fatal("shaped missing")
		}
		want := []schema.Attribute{
			{TypeName: "character", FullTypeName: "character(3)"},
			{TypeName: "character varying", FullTypeName: "character varying(10)"},
			{TypeName: "numeric", FullTypeName: "numeric(8,2)"},
			{TypeName: "integer", FullTypeName: "integer", Generated: true},
			{TypeName: "character[]", FullTypeName: "character(2)[]", Array: true},
		}
		if !reflect.DeepEqual(d.Attributes, want) {
			t.Fatalf("attributes = %+v, want %+v", d.Attributes, want)
		}
		var casts []string
		for _, a := range d.Attributes {
			casts = append(casts, a.CastType())
		}
		if want := []string{"bpchar", "character varying", "numeric", "integer", "bpchar[]"}; !reflect.DeepEqual(casts, want) {
			t.Fatalf("cast types = %v, want %v", casts, want)
		}
		if todos, _ := r.Def("todos"); len(todos.Attributes) != len(todos.Columns) || todos.Attributes[4] != (schema.Attribute{TypeName: "text[]", FullTypeName: "text[]", Array: true}) {
			t.Fatalf("todos attributes = %+v", todos.Attributes)
		}
	})
	t.Run("a filter selects one table by name or by relation", func(t *testing.T) {
		filters := []struct {
			f    schema.RegistryFilter
			want []string
		}{
			{schema.RegistryFilter{Name: "app.items"}, []string{"app.items"}},
			{schema.RegistryFilter{Schema: "app", Relation: "items"}, []string{"app.items"}},
			{schema.RegistryFilter{Schema: "public", Relation: "todos"}, []string{"todos"}},
			{schema.RegistryFilter{Schema: "public", Relation: "items"}, nil},
			{schema.RegistryFilter{Name: "nopk"}, nil},
		}
		for _, tt := range filters {
			r, err := schema.LoadRegistry(ctx, conn, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tab := range r.Tables() {
				got = append(got, tab.Name)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("LoadRegistry(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		}
	})
}

// TestLoadRegistryNotMigrated checks that a database without ripple.tables
// gives an error that wraps the server's undefined_table.
func TestLoadRegistryNotMigrated(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	conn := connect(t, pg.CreateDatabase(t))
	_, err := schema.LoadRegistry(t.Context(), conn, schema.RegistryFilter{})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
		t.Fatalf("LoadRegistry = %v, want an error wrapping SQLSTATE 42P01", err)
	}
}

// rolledBack begins a transaction on conn that is rolled back when the test
// ends and runs sql in it.
func rolledBack(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string) pgx.Tx {
	t.Helper()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	if _, err := tx.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
	return tx
}

func oidOf(t *testing.T, ctx context.Context, conn *pgx.Conn, typ string) uint32 {
	t.Helper()
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT $1::regtype::oid", typ).Scan(&oid); err != nil {
		t.Fatalf("oid of %s: %v", typ, err)
	}
	return oid
}

func TestLoadTypes(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	url := pg.CreateDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := connect(t, url)
	_, err := conn.Exec(ctx, `
		CREATE EXTENSION citext;
		CREATE SCHEMA app;
		CREATE TYPE app.color AS ENUM ('red', 'green blue');
		CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
		CREATE DOMAIN posint2 AS posint;
		CREATE DOMAIN intlist AS int4[];
		CREATE DOMAIN cash AS money;
		CREATE TYPE pair AS (a int4, b text);
		CREATE TABLE rowtype (id int4);`)
	if err != nil {
		t.Fatal(err)
	}
	types, err := schema.LoadTypes(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		typ, text, want string
		unsupported     string // type name in the error
	}{
		{typ: "app.color", text: "green blue", want: `"green blue"`},
		{typ: "app.color[]", text: `{red,"green blue",NULL}`, want: `["red","green blue",null]`},
		{typ: "posint", text: "7", want: `7`},
		{typ: "posint2", text: "8", want: `8`},
		{typ: "posint[]", text: "{1,2}", want: `[1,2]`},
		{typ: "posint2[]", text: "{3}", want: `[3]`},
		{typ: "intlist", text: "{{1},{2}}", want: `[[1],[2]]`},
		{typ: "citext", text: "MiXeD", want: `"MiXeD"`},
		{typ: "citext[]", text: "{a,B}", want: `["a","B"]`},
		{typ: "money", unsupported: "money"},
		{typ: "cash", unsupported: "cash"},
		{typ: "box[]", unsupported: "_box"},
		{typ: "point", unsupported: "point"},
		{typ: "pair", unsupported: "pair"},
		{typ: "rowtype", unsupported: "rowtype"},
		{typ: "int4range", unsupported: "int4range"},
		{typ: "xml", unsupported: "xml"},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			oid := oidOf(t, ctx, conn, tt.typ)
			if tt.unsupported != "" {
				err := types.Supported(oid)
				if !errors.Is(err, schema.ErrUnsupportedType) || !strings.Contains(err.Error(), tt.unsupported) {
					t.Fatalf("Supported(%s) = %v", tt.typ, err)
				}
				return
			}
			got, err := types.AppendValue(nil, oid, []byte(tt.text))
			if err != nil || string(got) != tt.want {
				t.Fatalf("AppendValue(%s, %q) = %s, %v; want %s", tt.typ, tt.text, got, err, tt.want)
			}
			if err := schema.BuiltinTypes().Supported(oid); !errors.Is(err, schema.ErrUnsupportedType) {
				t.Fatalf("builtin types know %s: %v", tt.typ, err)
			}
		})
	}

	// Refresh picks up a type created later while readers keep encoding.
	if _, err := conn.Exec(ctx, `CREATE TYPE late AS ENUM ('x')`); err != nil {
		t.Fatal(err)
	}
	late := oidOf(t, ctx, conn, "late")
	if err := types.Supported(late); !errors.Is(err, schema.ErrUnsupportedType) {
		t.Fatalf("late type known before Refresh: %v", err)
	}
	colorOID := oidOf(t, ctx, conn, "app.color")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var readErr error
	var mu sync.Mutex
	for range 2 {
		wg.Go(func() {
			var buf []byte
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				if buf, err = types.AppendValue(buf[:0], colorOID, []byte("red")); err != nil || string(buf) != `"red"` {
					mu.Lock()
					readErr = errors.Join(readErr, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	for range 3 {
		if err := types.Refresh(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if readErr != nil {
		t.Fatalf("reader during Refresh: %v", readErr)
	}
	if got, err := types.AppendValue(nil, late, []byte("x")); err != nil || string(got) != `"x"` {
		t.Fatalf("after Refresh: %s, %v", got, err)
	}
}

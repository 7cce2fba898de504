package migrations_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
)

func TestEnableRefused(t *testing.T) {
	tests := []struct {
		name     string
		ddl      string
		table    string
		rootKey  string
		migrated bool // run Migrate before (else Enable's own migration must roll back too)
		wantErr  error
		wantMsg  []string // substrings of the error message
	}{
		{
			name: "no primary key", migrated: true,
			ddl:   "CREATE TABLE todos (id int, org_id text)",
			table: "todos", rootKey: "org_id", wantErr: migrations.ErrNoPrimaryKey,
		},
		{
			name:  "no primary key, not migrated",
			ddl:   "CREATE TABLE todos (id int, org_id text)",
			table: "todos", rootKey: "org_id", wantErr: migrations.ErrNoPrimaryKey,
		},
		{
			name: "missing root key", migrated: true,
			ddl:   "CREATE TABLE todos (id int PRIMARY KEY, org text)",
			table: "todos", rootKey: "org_id", wantErr: migrations.ErrNoRootKey, wantMsg: []string{`"org_id"`},
		},
		{
			name: "root key is ripple_xid", migrated: true,
			ddl:   "CREATE TABLE todos (id int PRIMARY KEY, org_id text)",
			table: "todos", rootKey: "ripple_xid", wantErr: migrations.ErrNoRootKey,
		},
		{
			name: "empty root key", migrated: true,
			ddl:   "CREATE TABLE todos (id int PRIMARY KEY, org_id text)",
			table: "todos", rootKey: "", wantErr: migrations.ErrNoRootKey,
		},
		{
			name: "unsupported type", migrated: true,
			ddl:   "CREATE TABLE todos (id int PRIMARY KEY, org_id text, spot point, title text)",
			table: "todos", rootKey: "org_id", wantErr: migrations.ErrUnsupportedType,
			wantMsg: []string{`"spot"`, "point"},
		},
		{
			name:  "unsupported types, not migrated, with data",
			ddl:   "CREATE TABLE app.todos (id int PRIMARY KEY, org_id text, area box, spots point[]); INSERT INTO app.todos VALUES (1, 'a', NULL, NULL)",
			table: "app.todos", rootKey: "org_id", wantErr: schema.ErrUnsupportedType,
			wantMsg: []string{`"area"`, "box", `"spots"`, "point[]"},
		},
		{
			name: "ripple_xid of another type", migrated: true,
			ddl:   "CREATE TABLE todos (id int PRIMARY KEY, org_id text, ripple_xid bigint)",
			table: "todos", rootKey: "org_id", wantErr: migrations.ErrBadColumn,
		},
		{
			name: "no such table", migrated: true,
			table: "nope", rootKey: "org_id", wantErr: migrations.ErrTableNotFound,
		},
		{
			name: "view", migrated: true,
			ddl:   "CREATE TABLE todos (id int PRIMARY KEY, org_id text); CREATE VIEW v AS SELECT * FROM todos",
			table: "v", rootKey: "org_id", wantErr: migrations.ErrTableNotFound,
		},
		{
			name: "name is case sensitive", migrated: true,
			ddl:   "CREATE TABLE todos (id int PRIMARY KEY, org_id text)",
			table: "Todos", rootKey: "org_id", wantErr: migrations.ErrTableNotFound,
		},
		{
			name: "ripple's own table", migrated: true,
			table: "ripple.mutations", rootKey: "org", wantErr: migrations.ErrBadTableName,
		},
		{
			name: "empty relation", migrated: true,
			table: "app.", rootKey: "org_id", wantErr: migrations.ErrBadTableName,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			conn, _ := newDB(t)
			exec(t, conn, "CREATE SCHEMA app")
			if tt.ddl != "" {
				exec(t, conn, tt.ddl)
			}
			if tt.migrated {
				if err := migrations.Migrate(ctx, conn); err != nil {
					t.Fatal(err)
				}
			}
			state := catalogState
			if tt.migrated {
				state = rippleState
			}
			before := queryString(t, conn, state)
			res, err := migrations.Enable(ctx, conn, tt.table, tt.rootKey)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Enable = %+v, %v; want %v", res, err, tt.wantErr)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %s", err, m)
				}
			}
			if after := queryString(t, conn, state); after != before {
				t.Fatalf("refused Enable changed the database:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

// objectsOf lists Ripple's objects on one table (by regclass text).
func objectsOf(t *testing.T, conn *pgx.Conn, table string) string {
	return queryString(t, conn, `
SELECT concat_ws(' | ',
  (SELECT string_agg(tgname, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal),
  (SELECT string_agg(pg_get_indexdef(indexrelid), ',' ORDER BY 1) FROM pg_index WHERE indrelid = $1::regclass AND NOT indisprimary),
  (SELECT 'identity=' || relreplident::text FROM pg_class WHERE oid = $1::regclass),
  (SELECT 'published=' || count(*) FROM pg_publication_rel WHERE prrelid = $1::regclass),
  (SELECT 'column=' || count(*) || coalesce(string_agg(pg_get_expr(d.adbin, d.adrelid), ''), '')
   FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE a.attrelid = $1::regclass AND a.attname = 'ripple_xid' AND NOT a.attisdropped),
  (SELECT 'functions=' || count(*) FROM pg_proc WHERE pronamespace = 'ripple'::regnamespace AND proname LIKE 'tombstone%'),
  (SELECT 'registered=' || coalesce(string_agg(name || ':' || root_key || ':' || primary_key::text, ','), '') FROM ripple.tables))`, table)
}

func TestEnableDisableLifecycle(t *testing.T) {
	ctx := testCtx(t)
	conn, _ := newDB(t)
	exec(t, conn, "CREATE TABLE todos (id bigint PRIMARY KEY, org_id text NOT NULL, title text)")
	exec(t, conn, "INSERT INTO todos VALUES (1, 'acme', 'a'), (2, 'globex', 'b')")
	if err := migrations.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	plain := objectsOf(t, conn, "todos")

	type step struct {
		name    string
		do      func() error
		wantErr error
		check   func(t *testing.T)
	}
	var enabled string
	var enableXID string
	steps := []step{
		{name: "enable", do: func() error {
			var err error
			enableXID = queryString(t, conn, "SELECT pg_current_xact_id()::text") // a lower bound
			res, err := migrations.Enable(ctx, conn, "todos", "org_id")
			if err != nil {
				return err
			}
			want := schema.Table{Name: "todos", Schema: "public", Relation: "todos", RootKey: "org_id", PrimaryKey: []string{"id"},
				Columns: []schema.Column{{Name: "id", TypeOID: 20}, {Name: "org_id", TypeOID: 25}, {Name: "title", TypeOID: 25}}}
			if res.AlreadyEnabled || !res.AddedColumn || res.HorizonRaised || !tableEqual(res.Table, want) {
				t.Fatalf("Enable = %+v", res)
			}
			enabled = objectsOf(t, conn, "todos")
			return nil
		}, check: func(t *testing.T) {
			for _, w := range []string{
				migrations.TriggerStampXID, migrations.TriggerTombstoneDelete, migrations.TriggerTombstoneMove,
				"(org_id, ripple_xid)", "identity=f", "published=1", "column=1pg_current_xact_id()", "functions=1",
				"registered=todos:org_id:{id}",
			} {
				if !strings.Contains(enabled, w) {
					t.Errorf("enabled table lacks %q: %s", w, enabled)
				}
			}
			// Existing rows carry the enabling transaction's id.
			if n := queryString(t, conn, "SELECT count(DISTINCT ripple_xid)::text || ' ' || bool_and(ripple_xid > $1::xid8)::text FROM todos", enableXID); n != "1 true" {
				t.Errorf("backfill: %s", n)
			}
		}},
		{name: "enable again", do: func() error {
			res, err := migrations.Enable(ctx, conn, "todos", "org_id")
			if err == nil && (!res.AlreadyEnabled || res.AddedColumn || res.HorizonRaised) {
				t.Fatalf("second Enable = %+v", res)
			}
			return err
		}, check: func(t *testing.T) {
			if got := objectsOf(t, conn, "todos"); got != enabled {
				t.Errorf("second Enable changed objects:\n%s\nwant\n%s", got, enabled)
			}
		}},
		{name: "enable with another root key", wantErr: migrations.ErrAlreadyEnabled, do: func() error {
			_, err := migrations.Enable(ctx, conn, "public.todos", "title")
			return err
		}, check: func(t *testing.T) {
			if got := objectsOf(t, conn, "todos"); got != enabled {
				t.Errorf("refused Enable changed objects:\n%s\nwant\n%s", got, enabled)
			}
		}},
		{name: "disable", do: func() error {
			exec(t, conn, "DELETE FROM todos WHERE id = 2") // leaves a tombstone that Disable removes
			return migrations.Disable(ctx, conn, "todos")
		}, check: func(t *testing.T) {
			got := objectsOf(t, conn, "todos")
			want := strings.Replace(plain, "column=0", "column=1", 1) // the column stays, without default, nullable
			if got != want {
				t.Errorf("after Disable:\n%s\nwant\n%s", got, want)
			}
			if n := queryString(t, conn, "SELECT count(*)::text FROM ripple.tombstones"); n != "0" {
				t.Errorf("tombstones left: %s", n)
			}
			// The application keeps working.
			exec(t, conn, "INSERT INTO todos (id, org_id, title) VALUES (3, 'acme', 'c'); UPDATE todos SET title = 'x'; DELETE FROM todos WHERE id = 3; INSERT INTO todos (id, org_id) VALUES (4, 'acme')")
		}},
		{name: "disable again", wantErr: migrations.ErrNotEnabled, do: func() error {
			return migrations.Disable(ctx, conn, "todos")
		}},
		{name: "re-enable with the kept column raises the horizon", do: func() error {
			xid := queryUint(t, conn, "SELECT pg_current_xact_id()::text")
			res, err := migrations.Enable(ctx, conn, "todos", "org_id")
			if err != nil {
				return err
			}
			h, err := migrations.Horizon(ctx, conn)
			if err != nil {
				return err
			}
			if res.AddedColumn || !res.HorizonRaised || h <= xid {
				t.Fatalf("re-Enable = %+v, horizon %d, want > %d", res, h, xid)
			}
			// The row inserted while disabled got a transaction id.
			if n := queryString(t, conn, "SELECT count(*)::text FROM todos WHERE id = 4 AND ripple_xid >= $1::text::xid8", fmt.Sprint(xid)); n != "1" {
				t.Fatalf("row written while disabled not stamped on re-enable")
			}
			return nil
		}, check: func(t *testing.T) {
			if got := objectsOf(t, conn, "todos"); got != enabled {
				t.Errorf("re-enabled objects:\n%s\nwant\n%s", got, enabled)
			}
		}},
		{name: "disable dropping the column", do: func() error {
			return migrations.DisableWithOptions(ctx, conn, "todos", migrations.DisableOptions{DropColumn: true})
		}, check: func(t *testing.T) {
			if got := objectsOf(t, conn, "todos"); got != plain {
				t.Errorf("after Disable with DropColumn:\n%s\nwant\n%s", got, plain)
			}
		}},
		{name: "disable a table that never was enabled", wantErr: migrations.ErrNotEnabled, do: func() error {
			return migrations.DisableWithOptions(ctx, conn, "todos", migrations.DisableOptions{DropColumn: true})
		}},
		{name: "disable an unknown table", wantErr: migrations.ErrNotEnabled, do: func() error {
			return migrations.Disable(ctx, conn, "nope")
		}},
	}
	for _, s := range steps {
		before := queryString(t, conn, rippleState)
		err := s.do()
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
		if s.wantErr != nil {
			if after := queryString(t, conn, rippleState); after != before {
				t.Fatalf("%s: refused call changed the database:\nbefore:\n%s\nafter:\n%s", s.name, before, after)
			}
		}
		if s.check != nil {
			t.Run(s.name, s.check)
		}
	}
}

func tableEqual(a, b schema.Table) bool {
	return a.Name == b.Name && a.Schema == b.Schema && a.Relation == b.Relation && a.RootKey == b.RootKey &&
		slices.Equal(a.PrimaryKey, b.PrimaryKey) && slices.Equal(a.Columns, b.Columns)
}

func TestDisableDroppedTable(t *testing.T) {
	ctx := testCtx(t)
	conn, _ := newDB(t)
	exec(t, conn, "CREATE TABLE todos (id int PRIMARY KEY, org_id text)")
	if _, err := migrations.Enable(ctx, conn, "todos", "org_id"); err != nil {
		t.Fatal(err)
	}
	exec(t, conn, "INSERT INTO todos VALUES (1, 'a'); DELETE FROM todos; DROP TABLE todos")
	if err := migrations.Disable(ctx, conn, "todos"); err != nil {
		t.Fatal(err)
	}
	got := queryString(t, conn, `SELECT (SELECT count(*) FROM ripple.tables) || ' ' || (SELECT count(*) FROM ripple.tombstones) || ' ' ||
		(SELECT count(*) FROM pg_proc WHERE pronamespace = 'ripple'::regnamespace AND proname LIKE 'tombstone%')`)
	if got != "0 0 0" {
		t.Fatalf("registry, tombstones, functions left: %s", got)
	}
}

// TestEnableSupportedTypes enables a table with every type the codec
// supports, enums, domains and arrays included.
func TestEnableSupportedTypes(t *testing.T) {
	ctx := testCtx(t)
	conn, _ := newDB(t)
	exec(t, conn, `CREATE TYPE mood AS ENUM ('ok', 'sad'); CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE everything (
  id uuid PRIMARY KEY, org_id text, a varchar(10), b char(3), c smallint, d integer, e bigint, f numeric(10,2),
  g real, h double precision, i boolean, j json, k jsonb, l bytea, m date, n time, o timestamp, p timestamptz,
  q interval, r mood, s text[], t int4[], u mood[], v numeric[], w posint, x inet)`)
	res, err := migrations.Enable(ctx, conn, "everything", "org_id")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Columns) != 26 {
		t.Fatalf("columns = %d, want 26", len(res.Columns))
	}
}

// TestEnableQuoting uses identifiers that need quoting everywhere: quotes,
// spaces, semicolons, capitals, a composite key and a quote in a root key
// value.
func TestEnableQuoting(t *testing.T) {
	ctx := testCtx(t)
	conn, _ := newDB(t)
	exec(t, conn, `CREATE SCHEMA "My ""Schema""";
CREATE TABLE "My ""Schema"""."Items; DROP TABLE x" ("Org Id" text, "K'1" int, "k.2" text, val text, PRIMARY KEY ("K'1", "k.2"))`)
	name := queryString(t, conn, `SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'My "Schema"' AND c.relkind = 'r'`)
	schemaName, relation, _ := strings.Cut(name, ".")
	if _, err := migrations.Enable(ctx, conn, name, "Org Id"); err != nil {
		t.Fatal(err)
	}
	q := pgx.Identifier{schemaName, relation}.Sanitize()
	exec(t, conn, "INSERT INTO "+q+` VALUES ('o''1', 1, 'a', 'v')`)
	exec(t, conn, "UPDATE "+q+` SET "Org Id" = 'o2'`)
	exec(t, conn, "DELETE FROM "+q)
	got := queryString(t, conn, "SELECT string_agg(table_name || '|' || root_key || '|' || pk::text, ';' ORDER BY xid) FROM ripple.tombstones")
	want := name + `|o'1|{1,a};` + name + `|o2|{1,a}`
	if got != want {
		t.Fatalf("tombstones = %q, want %q", got, want)
	}
	if err := migrations.DisableWithOptions(ctx, conn, name, migrations.DisableOptions{DropColumn: true}); err != nil {
		t.Fatal(err)
	}
}

func TestParseTableName(t *testing.T) {
	tests := []struct {
		in, schema, relation string
		err                  error
	}{
		{in: "todos", schema: "public", relation: "todos"},
		{in: "app.todos", schema: "app", relation: "todos"},
		{in: "app.to.dos", err: migrations.ErrBadTableName},
		{in: "Todos", schema: "public", relation: "Todos"},
		{in: "", err: migrations.ErrBadTableName},
		{in: ".todos", err: migrations.ErrBadTableName},
		{in: "app.", err: migrations.ErrBadTableName},
		{in: "ripple.tables", err: migrations.ErrBadTableName},
		{in: "pg_catalog.pg_class", err: migrations.ErrBadTableName},
		{in: strings.Repeat("x", 64), err: migrations.ErrBadTableName},
		{in: "a\x00b", err: migrations.ErrBadTableName},
		{in: "\xff", err: migrations.ErrBadTableName},
	}
	for _, tt := range tests {
		s, r, err := migrations.ParseTableName(tt.in)
		if !errors.Is(err, tt.err) || s != tt.schema || r != tt.relation {
			t.Errorf("ParseTableName(%q) = %q, %q, %v; want %q, %q, %v", tt.in, s, r, err, tt.schema, tt.relation, tt.err)
		}
	}
}

func FuzzParseTableName(f *testing.F) {
	for _, s := range []string{"todos", "app.todos", "a.b.c", "", ".", "ripple.x", "\xff", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, r, err := migrations.ParseTableName(in)
		if err != nil {
			if !errors.Is(err, migrations.ErrBadTableName) {
				t.Fatalf("unexpected error kind %v", err)
			}
			return
		}
		if s == "" || r == "" || len(s) > 63 || len(r) > 63 {
			t.Fatalf("ParseTableName(%q) = %q, %q", in, s, r)
		}
		// The registry name maps back to the same table.
		s2, r2, err := migrations.ParseTableName(schema.TableName(s, r))
		if err != nil || s2 != s || r2 != r {
			t.Fatalf("round trip of %q: %q, %q, %v", in, s2, r2, err)
		}
	})
}

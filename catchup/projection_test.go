package catchup_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/schema"
)

var projTable = &schema.Table{
	Name: "todos", Schema: "public", Relation: "todos", RootKey: "org_id",
	PrimaryKey: []string{"org_id", "id"},
	Columns: []schema.Column{
		{Name: "id", TypeOID: 20}, {Name: "org_id", TypeOID: 25}, {Name: "title", TypeOID: 25},
		{Name: `odd "name"`, TypeOID: 25}, {Name: "meta", TypeOID: 3802}, {Name: "tags", TypeOID: 1009},
		{Name: "done", TypeOID: 16},
	},
}

var projRow = [][]byte{[]byte("7"), []byte("acme"), []byte(`say "hi"`), []byte("x"),
	[]byte(`{"a": [1, {"b": "}"}], "c": null}`), []byte(`{a,"b,c",NULL}`), nil}

// TestProjectionMatchesCodec checks that projecting a whole encoded row (as
// the ingest publishes it) gives the same bytes as encoding only the
// projected columns (as a snapshot with that column list does).
func TestProjectionMatchesCodec(t *testing.T) {
	types := schema.BuiltinTypes()
	full, err := types.RowEncoder(projTable.Columns)
	if err != nil {
		t.Fatal(err)
	}
	row, err := full.AppendRow(nil, projRow)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		columns []string
		want    []string
	}{
		{"nil keeps every column", nil, []string{"id", "org_id", "title", `odd "name"`, "meta", "tags", "done"}},
		{"the primary key is added", []string{"title"}, []string{"id", "org_id", "title"}},
		{"table order, not request order", []string{"done", "meta"}, []string{"id", "org_id", "meta", "done"}},
		{"escaped names match", []string{`odd "name"`}, []string{"id", "org_id", `odd "name"`}},
		{"duplicates are ignored", []string{"tags", "tags", "id"}, []string{"id", "org_id", "tags"}},
		{"an empty list is the key", []string{}, []string{"id", "org_id"}},
		{"listing every column is all", []string{"title", `odd "name"`, "meta", "tags", "done"},
			[]string{"id", "org_id", "title", `odd "name"`, "meta", "tags", "done"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := catchup.NewProjection(projTable, tt.columns)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.ColumnNames(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("columns %q, want %q", got, tt.want)
			}
			var vals [][]byte
			for _, c := range p.Columns() {
				for i, tc := range projTable.Columns {
					if tc.Name == c.Name {
						vals = append(vals, projRow[i])
					}
				}
			}
			enc, err := types.RowEncoder(p.Columns())
			if err != nil {
				t.Fatal(err)
			}
			want, err := enc.AppendRow(nil, vals)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Apply(row)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Apply:\n got %s\nwant %s", got, want)
			}
			if p.All() != (len(tt.want) == len(projTable.Columns)) {
				t.Fatalf("All() = %v", p.All())
			}
			op, _, err := p.ApplyOp(nil, schema.Op{Op: schema.OpUpdate, Row: row})
			if err != nil || !bytes.Equal(op.Row, want) {
				t.Fatalf("ApplyOp row %s, %v", op.Row, err)
			}
			key := json.RawMessage(`{"org_id":"acme","id":"7"}`)
			if op, _, err := p.ApplyOp(nil, schema.Op{Op: schema.OpDelete, Key: key}); err != nil || !bytes.Equal(op.Key, key) {
				t.Fatalf("ApplyOp delete %s, %v", op.Key, err)
			}
		})
	}
}

func TestProjectionErrors(t *testing.T) {
	if _, err := catchup.NewProjection(projTable, []string{"title", "nope"}); !errors.Is(err, catchup.ErrBadColumns) {
		t.Fatalf("unknown column: %v", err)
	}
	p, err := catchup.NewProjection(projTable, []string{"title"})
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{``, `[]`, `{`, `{"id"}`, `{"id":}`, `{"id":1,}`, `{"id":"\q"}`, `{"id":tru}`,
		`{"id":1} x`, `{"id":[1,]}`, `{"id":{"a" 1}}`, "{\"id\":\"a\x01\"}", `{"id":01}`, `{"id":"\u12"}`} {
		if _, err := p.Apply(json.RawMessage(bad)); !errors.Is(err, catchup.ErrBadRow) {
			t.Errorf("Apply(%q): err = %v, want ErrBadRow", bad, err)
		}
	}
	got, err := p.Apply(json.RawMessage(` { "id" : "1" , "title":"t", "other" : [ 1 , 2 ] } `))
	if err != nil || string(got) != `{"id" : "1","title":"t"}` {
		t.Fatalf("whitespace: %s, %v", got, err)
	}
}

// FuzzProjectionApply checks that Apply accepts exactly the JSON objects,
// never panics, and returns valid JSON holding only the kept members.
func FuzzProjectionApply(f *testing.F) {
	types := schema.BuiltinTypes()
	full, err := types.RowEncoder(projTable.Columns)
	if err != nil {
		f.Fatal(err)
	}
	row, err := full.AppendRow(nil, projRow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(row)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":"1","title":"\u00e9\"","x":{"y":[true,false,null,-1.5e3]}}`))
	f.Add([]byte(`{"title":1,"title":2}`))
	f.Add([]byte(`[{"id":1}]`))
	p, err := catchup.NewProjection(projTable, []string{"title"})
	if err != nil {
		f.Fatal(err)
	}
	keep := map[string]bool{"id": true, "org_id": true, "title": true}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := p.Apply(in)
		var obj map[string]json.RawMessage
		isObject := json.Valid(in) && json.Unmarshal(in, &obj) == nil && obj != nil
		if (err == nil) != isObject {
			t.Fatalf("Apply(%q): err %v, but JSON object: %v", in, err, isObject)
		}
		if err != nil {
			return
		}
		var got map[string]json.RawMessage
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("Apply(%q) = %q: not JSON: %v", in, out, err)
		}
		for k, v := range obj {
			if !keep[k] {
				if _, ok := got[k]; ok {
					t.Fatalf("Apply(%q) kept %q", in, k)
				}
				continue
			}
			if g, ok := got[k]; !ok || !bytes.Equal(compact(t, g), compact(t, v)) {
				t.Fatalf("Apply(%q) = %q: member %q lost or changed", in, out, k)
			}
		}
	})
}

func compact(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

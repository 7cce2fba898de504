package writer_test

import (
	"context"
	"testing"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/writer"
)

// TestResultUsesOutputFunctions: a mutation's result encodes each column as
// replication and catch-up do (the type's output function), also for types
// whose cast to text differs from it: bool ("f", not "false"), inet (no added
// netmask) and char(n) (trailing blanks kept), in the stream's column order.
func TestResultUsesOutputFunctions(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	tests := []struct {
		name string
		row  map[string]any
		want string
	}{
		{"defaults and padding", map[string]any{"id": "f1", "org": "acme", "addr": "10.0.0.1", "code": "ab"},
			`{"id":"f1","org":"acme","done":false,"addr":"10.0.0.1","code":"ab  "}`},
		{"true, a network, null", map[string]any{"id": "f2", "org": "acme", "done": true, "addr": "10.1.0.0/16"},
			`{"id":"f2","org":"acme","done":true,"addr":"10.1.0.0/16","code":null}`},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, _ := mustSend(t, nc, schema.MutationRequest{ClientID: "out", MutationID: int64(i + 1), Mutator: "insert",
				Args: args(map[string]any{"table": "flags", "row": tt.row}), Claims: claims("acme")})
			if rep.Status != schema.MutationApplied {
				t.Fatalf("reply %+v", rep)
			}
			// Byte for byte: the result is stored as the codec wrote it.
			if string(rep.Result) != tt.want {
				t.Errorf("result\n got %s\nwant %s", rep.Result, tt.want)
			}
		})
	}
}

// TestCastsToOutput: the types whose results are read with a cast to text
// (writer.CastsToOutput) have no cast function to text in this server's
// pg_cast, so the cast is their output function, and a sample value of each
// reads the same both ways.
func TestCastsToOutput(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	rows, err := e.db.Query(ctx, `SELECT castsource::oid::int8, castsource::regtype::text FROM pg_catalog.pg_cast
		WHERE casttarget = 'text'::regtype AND castmethod = 'f'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var oid int64
		var name string
		if err := rows.Scan(&oid, &name); err != nil {
			t.Fatal(err)
		}
		if writer.CastsToOutput[uint32(oid)] {
			t.Errorf("%s (oid %d) has a cast function to text: its cast is not its output function", name, oid)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var differ string
	err = e.db.QueryRow(ctx, `SELECT coalesce(string_agg(v.t, ', '), '') FROM (VALUES
		('int2', (1::int2)::text, format('%s', 1::int2)), ('float8', (-1.5e300::float8)::text, format('%s', -1.5e300::float8)),
		('numeric', (12.50::numeric(10,2))::text, format('%s', 12.50::numeric(10,2))),
		('varchar', ('a '::varchar(4))::text, format('%s', 'a '::varchar(4))),
		('bytea', ('\x00ff'::bytea)::text, format('%s', '\x00ff'::bytea)),
		('jsonb', ('{"b": 1, "a": [true]}'::jsonb)::text, format('%s', '{"b": 1, "a": [true]}'::jsonb)),
		('timestamptz', ('2026-01-02 03:04:05.678+02'::timestamptz)::text, format('%s', '2026-01-02 03:04:05.678+02'::timestamptz)),
		('interval', ('1 day 02:03'::interval)::text, format('%s', '1 day 02:03'::interval)),
		('bool[]', (ARRAY[true, NULL]::bool[])::text, format('%s', ARRAY[true, NULL]::bool[])),
		('char(3)[]', (ARRAY['a']::char(3)[])::text, format('%s', ARRAY['a']::char(3)[]))
	) AS v(t, cast_text, output) WHERE v.cast_text IS DISTINCT FROM v.output`).Scan(&differ)
	if err != nil {
		t.Fatal(err)
	}
	if differ != "" {
		t.Errorf("cast to text differs from the output function for %s", differ)
	}
}

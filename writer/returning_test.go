package writer_test

import (
	"testing"

	"github.com/ripple-sync/ripple/schema"
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

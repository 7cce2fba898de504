package load

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestCountOps(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{`{"type":"snapshot","id":"s","ops":[]}`, 0, true},
		{`{"type":"snapshot","id":"s","ops":[{"op":"insert","row":{"id":"1","ops":[1,2]}}]}`, 1, true},
		{`{"type":"snapshot","id":"s\",\"ops\":[1,2,3]","ops":[1, "a,b", [3,4], {"x":"]"}, null]}`, 5, true},
		{`{"a":{"ops":[1,2]},"ops" : [ 7 ]}`, 1, true},
		{`{"type":"snapshot"}`, 0, false},
		{`{"ops":3}`, 0, false},
		{`{"ops":[1,2`, 0, false},
		{`{"ops":["abc`, 0, false},
		{``, 0, false},
	}
	for _, tc := range tests {
		got, ok := countOps([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("countOps(%s) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzCountOps checks countOps against encoding/json on every valid JSON
// object, and that it never panics on anything else.
func FuzzCountOps(f *testing.F) {
	f.Add([]byte(`{"type":"snapshot","id":"s","ops":[{"op":"insert","row":{"id":"1"}}]}`))
	f.Add([]byte(`{"ops":[1,"\\",[],{}]}`))
	f.Add([]byte(`{"x":"\"ops\":[1]","ops":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if bytes.Contains(b, []byte(`\u`)) {
			return // a key spelled with \u escapes; countOps compares raw bytes
		}
		got, ok := countOps(b)
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) != nil {
			return
		}
		// encoding/json keeps the last of duplicate keys; countOps the first.
		var raw []byte
		if v, has := m["ops"]; has {
			raw = v
		}
		var ops []json.RawMessage
		isArr := raw != nil && json.Unmarshal(raw, &ops) == nil && raw[0] == '['
		if countKey(b) > 1 {
			return
		}
		if ok != isArr || (ok && got != len(ops)) {
			t.Fatalf("countOps(%s) = %d, %v; encoding/json: %d ops, array %v", b, got, ok, len(ops), isArr)
		}
	})
}

// countKey counts top-level "ops" keys (the fuzz test skips duplicates).
func countKey(b []byte) int {
	n := 0
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			j, ok := skipString(b, i)
			if !ok {
				return n
			}
			if depth == 1 && string(b[i+1:j]) == "ops" && skipSpace(b, j+1) < len(b) && b[skipSpace(b, j+1)] == ':' {
				n++
			}
			i = j
		case '{', '[':
			depth++
		case '}', ']':
			depth--
		}
	}
	return n
}

package writer

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParseBuiltin feeds arbitrary bytes as the args of the built-in
// mutators: they never panic, and either decode into objects whose members
// are valid JSON or are rejected with invalid_argument.
func FuzzParseBuiltin(f *testing.F) {
	for _, s := range []string{
		`{"table":"todos","row":{"id":"1","org":"acme"}}`,
		`{"table":"todos","key":{"id":1},"set":{"title":null}}`,
		`{"table":"todos","key":{"id":1},"key":{"id":2}}`,
		`{"table":5}`, `[]`, `null`, `{"table":"t","row":{}} trailing`, `{"table":"t","row":{"a":1,"a":2}}`,
		`{"table":"t","row":{"a":[1,[2,"x\"y"]]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, need := range [][]string{{"row"}, {"key", "set"}, {"key"}} {
			a, objs, err := parseBuiltin(data, need...)
			if err != nil {
				var r *Rejection
				if !errors.As(err, &r) || r.Code != CodeInvalidArgument {
					t.Fatalf("error %v is not an invalid_argument rejection", err)
				}
				continue
			}
			if a.Table == "" {
				t.Fatal("accepted args without a table")
			}
			for _, n := range need {
				for k, v := range objs[n] {
					if !json.Valid(v) {
						t.Fatalf("member %q of %s is not valid JSON: %q", k, n, v)
					}
				}
			}
		}
	})
}

// FuzzTextParam converts arbitrary JSON values for columns of every shape:
// it never panics; strings pass unchanged; array literals are balanced.
func FuzzTextParam(f *testing.F) {
	for _, s := range []string{`"x"`, `12.50`, `true`, `null`, `[1,"a b",null,[2]]`, `{"k":1}`, `["\"\\"]`, `[`, ``} {
		f.Add([]byte(s))
	}
	cols := []column{
		{name: "t", typeOID: 25, cast: "text"},
		{name: "j", typeOID: 3802, cast: "jsonb"},
		{name: "a", typeOID: 1009, cast: "text[]", isArray: true},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, c := range cols {
			v, err := textParam(c, data)
			if err != nil || v == nil {
				continue
			}
			var s string
			if c.typeOID == 25 && json.Unmarshal(data, &s) == nil && *v != s {
				t.Fatalf("string %q became %q", s, *v)
			}
			if c.isArray && strings.HasPrefix(strings.TrimSpace(string(data)), "[") {
				if !balanced(*v) {
					t.Fatalf("unbalanced array literal %q from %q", *v, data)
				}
			}
		}
	})
}

// balanced reports whether braces outside quoted elements balance.
func balanced(lit string) bool {
	depth, inQuote := 0, false
	for i := 0; i < len(lit); i++ {
		switch c := lit[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '{':
			depth++
		case !inQuote && c == '}':
			depth--
			if depth < 0 {
				return false
			}
		}
	}
	return depth == 0 && !inQuote
}

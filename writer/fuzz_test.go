package writer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
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
	for _, s := range []string{`"x"`, `12.50`, `true`, `null`, `[1,"a b",null,[2]]`, `{"k":1}`, `["\"\\"]`, `[`, ``, `"caf\u00e9"`, "\"\xff\"", `-0.5e+3`, `01`, `"a" "b"`, `true false`} {
		f.Add([]byte(s))
	}
	cols := []column{
		{name: "t", typeOID: 25, cast: "text"},
		{name: "j", typeOID: 3802, cast: "jsonb"},
		{name: "a", typeOID: 1009, cast: "text[]", isArray: true},
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if raw := bytes.TrimSpace(data); len(raw) > 0 {
			// The fast path answers what decoding the value would.
			if s, ok := scalarText(raw); ok {
				var v any
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.UseNumber()
				if err := dec.Decode(&v); err != nil || dec.More() {
					t.Fatalf("fast path took %q, which does not decode as one value (%v)", raw, err)
				}
				if want := fmt.Sprint(v); s != want {
					t.Fatalf("fast path gave %q for %q, decoding gives %q", s, raw, want)
				}
			}
		}
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

// FuzzDecodeObject checks decodeObject against a decoder built on
// encoding/json's token stream: both accept the same inputs and give the
// same members, byte for byte, in the same order.
func FuzzDecodeObject(f *testing.F) {
	for _, s := range []string{
		`{"table":"todos","row":{"id":"1","org":"acme"}}`, ` {"a" : [1, {"b": "}"}] , "c":null} `,
		`{"a":1,"a":2}`, `{"\u0061":1,"a":2}`, `{"a\"b":"x\\"}`, `{}`, `{"a":1} x`, `{"a":1,}`, `{"a"}`,
		"{\"\xff\":1}", `{"a":-1.5e3,"b":true,"c":[]}`, `[]`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, keys, err := decodeObject(data, "x")
		wm, wkeys, werr := decodeObjectStd(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: error %v, encoding/json says %v", data, err, werr)
		}
		if err != nil {
			return
		}
		if !slices.Equal(keys, wkeys) {
			t.Fatalf("%q: keys %q, want %q", data, keys, wkeys)
		}
		for k, v := range wm {
			if !bytes.Equal(m[k], v) {
				t.Fatalf("%q: member %q is %q, want %q", data, k, m[k], v)
			}
		}
	})
}

// decodeObjectStd decodes a JSON object with encoding/json's Decoder:
// members in order, duplicate keys and trailing data refused.
func decodeObjectStd(raw []byte) (map[string]json.RawMessage, []string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, nil, errors.New("not an object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	m := map[string]json.RawMessage{}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, err
		}
		if _, dup := m[k]; dup {
			return nil, nil, errors.New("duplicate key")
		}
		m[k] = v
		keys = append(keys, k)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("trailing data")
	}
	return m, keys, nil
}

package schema

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// fuzzOIDs are the types FuzzAppendValue exercises, one per encoding rule.
var fuzzOIDs = []uint32{oidText, oidInt4, oidInt8, oidFloat8, oidBool, oidJSON, oidJSONB, oidBytea,
	1007, 1009, 1022, 1000, 199, 1016, 790, 0}

func FuzzAppendValue(f *testing.F) {
	seeds := []string{"", "t", "f", "0", "-1", "1e5", "NaN", "-Infinity", `{"a":1}`, `\x00ff`,
		"{1,2}", `{"a\"b",NULL}`, "{{1},{2}}", "[0:1]={1,2}", "\xff\xfe", "a\nb", `{"{\"x\":[1]}"}`}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	types := BuiltinTypes()
	f.Fuzz(func(t *testing.T, which uint8, text []byte) {
		oid := fuzzOIDs[int(which)%len(fuzzOIDs)]
		out, err := types.AppendValue([]byte("p"), oid, text)
		if err != nil {
			if !errors.Is(err, ErrBadValue) && !errors.Is(err, ErrUnsupportedType) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if string(out) != "p" {
				t.Fatalf("dst changed on error: %q", out)
			}
			return
		}
		out = out[1:]
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("oid %d text %q: invalid output %q", oid, text, out)
		}
		if oid == oidText && utf8.Valid(text) {
			var s string
			if err := json.Unmarshal(out, &s); err != nil || s != string(text) {
				t.Fatalf("text round trip: %q -> %q (%v)", text, s, err)
			}
		}
	})
}

func FuzzParseArray(f *testing.F) {
	seeds := []string{"{}", "{1,2,3}", "{NULL}", `{"",""}`, `{"a\\b","c\"d"}`, "{{1,2},{3,4}}",
		"[1:2]={1,2}", "[0:1][0:0]={{1},{2}}", "{{{{{{1}}}}}}", "{{{{{{{1}}}}}}}", "{1,{2}}", `{"x`, "{a b}",
		"[99999999999:1]={1}", "{,}", "{NULL,null,Null}"}
	for i, s := range seeds {
		f.Add(uint8(i), []byte(s))
	}
	types := BuiltinTypes()
	elems := []uint32{oidText, oidInt4, oidFloat8, oidBool, oidJSONB, oidNumeric}
	f.Fuzz(func(t *testing.T, which uint8, text []byte) {
		elem := elems[int(which)%len(elems)]
		out, err := types.ParseArray([]byte("p"), elem, text)
		if err != nil {
			if !errors.Is(err, ErrBadValue) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if string(out) != "p" {
				t.Fatalf("dst changed on error: %q", out)
			}
			return
		}
		out = out[1:]
		var v []any
		if err := json.Unmarshal(out, &v); err != nil || !utf8.Valid(out) {
			t.Fatalf("elem %d text %q: output %q is not a JSON array: %v", elem, text, out, err)
		}
	})
}

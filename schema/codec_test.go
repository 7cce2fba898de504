package schema

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestAppendValue(t *testing.T) {
	types := BuiltinTypes()
	tests := []struct {
		name string
		oid  uint32
		text string
		null bool
		want string
	}{
		{"null", oidInt4, "", true, `null`},
		{"text", oidText, "milk", false, `"milk"`},
		{"text empty", oidText, "", false, `""`},
		{"text quotes backslash", oidText, `a"b\c`, false, `"a\"b\\c"`},
		{"text controls", oidText, "a\nb\rc\td\x01e\x1f\b\f", false, `"a\nb\rc\td\u0001e\u001f\b\f"`},
		{"text unicode", oidText, "héllo 世界 🎉", false, `"héllo 世界 🎉"`},
		{"text invalid utf8", oidText, "a\xffb\xc3", false, `"a\ufffdb\ufffd"`},
		{"text del and slash", oidText, "\x7f/</script>", false, "\"\x7f/</script>\""},
		{"varchar", oidVarchar, "x y", false, `"x y"`},
		{"bpchar", oidBPChar, "ab  ", false, `"ab  "`},
		{"name", oidName, "pg_class", false, `"pg_class"`},
		{"char", oidChar, "c", false, `"c"`},
		{"uuid", oidUUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", false, `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`},
		{"int2 min", oidInt2, "-32768", false, `-32768`},
		{"int4 max", oidInt4, "2147483647", false, `2147483647`},
		{"int4 zero", oidInt4, "0", false, `0`},
		{"oid", oidOID, "4294967295", false, `4294967295`},
		{"int8 as string", oidInt8, "-9223372036854775808", false, `"-9223372036854775808"`},
		{"numeric as string", oidNumeric, "123456789012345678901234567890.000000001", false, `"123456789012345678901234567890.000000001"`},
		{"numeric NaN", oidNumeric, "NaN", false, `"NaN"`},
		{"numeric -Infinity", oidNumeric, "-Infinity", false, `"-Infinity"`},
		{"xid8", oidXID8, "18446744073709551615", false, `"18446744073709551615"`},
		{"xid", oidXID, "745", false, `"745"`},
		{"pg_lsn", oidPgLSN, "0/16B3748", false, `"0/16B3748"`},
		{"float8", oidFloat8, "1.5", false, `1.5`},
		{"float8 exp", oidFloat8, "1e+100", false, `1e+100`},
		{"float8 neg exp", oidFloat8, "-2.5e-07", false, `-2.5e-07`},
		{"float8 -0", oidFloat8, "-0", false, `-0`},
		{"float8 NaN", oidFloat8, "NaN", false, `"NaN"`},
		{"float8 Infinity", oidFloat8, "Infinity", false, `"Infinity"`},
		{"float4 -Infinity", oidFloat4, "-Infinity", false, `"-Infinity"`},
		{"float4 max", oidFloat4, "3.4028235e+38", false, `3.4028235e+38`},
		{"bool t", oidBool, "t", false, `true`},
		{"bool f", oidBool, "f", false, `false`},
		{"json", oidJSON, `{"a": [1, "x\"y"], "b": null}`, false, `{"a": [1, "x\"y"], "b": null}`},
		{"json scalar", oidJSON, `"s"`, false, `"s"`},
		{"json whitespace kept", oidJSON, " [1 ,2]\n", false, " [1 ,2]\n"},
		{"jsonb", oidJSONB, `{"a": {"b": []}}`, false, `{"a": {"b": []}}`},
		{"json invalid utf8 replaced", oidJSON, "\"a\xffb\"", false, "\"a\uFFFDb\""},
		{"bytea", oidBytea, `\x00ff10`, false, `"\\x00ff10"`},
		{"bytea empty", oidBytea, `\x`, false, `"\\x"`},
		{"date", oidDate, "2024-02-29", false, `"2024-02-29"`},
		{"date BC", oidDate, "0044-03-15 BC", false, `"0044-03-15 BC"`},
		{"date infinity", oidDate, "infinity", false, `"infinity"`},
		{"time", oidTime, "23:59:59.999999", false, `"23:59:59.999999"`},
		{"timetz", oidTimetz, "12:00:00+05:30", false, `"12:00:00+05:30"`},
		{"timestamp", oidTimestamp, "2024-01-02 03:04:05.123456", false, `"2024-01-02 03:04:05.123456"`},
		{"timestamptz", oidTimestamptz, "2024-01-02 03:04:05+00", false, `"2024-01-02 03:04:05+00"`},
		{"timestamptz -infinity", oidTimestamptz, "-infinity", false, `"-infinity"`},
		{"interval", oidInterval, "1 year 2 mons -3 days +04:05:06.789", false, `"1 year 2 mons -3 days +04:05:06.789"`},
		{"inet", oidInet, "192.168.0.1/24", false, `"192.168.0.1/24"`},
		{"cidr", oidCIDR, "10.0.0.0/8", false, `"10.0.0.0/8"`},
		{"macaddr", oidMacaddr, "08:00:2b:01:02:03", false, `"08:00:2b:01:02:03"`},
		{"int4 array", 1007, "{1,2,3}", false, `[1,2,3]`},
		{"int4 array nulls", 1007, "{NULL,2,NULL}", false, `[null,2,null]`},
		{"int4 empty array", 1007, "{}", false, `[]`},
		{"int4 2-dim", 1007, "{{1,2},{3,4}}", false, `[[1,2],[3,4]]`},
		{"int4 3-dim", 1007, "{{{1},{2}},{{3},{NULL}}}", false, `[[[1],[2]],[[3],[null]]]`},
		{"int4 bounds", 1007, "[0:2]={1,2,3}", false, `[1,2,3]`},
		{"int4 2-dim bounds", 1007, "[-1:0][1:2]={{1,2},{3,4}}", false, `[[1,2],[3,4]]`},
		{"int8 array", 1016, "{-9223372036854775808,0}", false, `["-9223372036854775808","0"]`},
		{"numeric array", 1231, "{1.5,NaN,Infinity}", false, `["1.5","NaN","Infinity"]`},
		{"float8 array", 1022, "{1.5,NaN,-Infinity,-0}", false, `[1.5,"NaN","-Infinity",-0]`},
		{"bool array", 1000, "{t,f,NULL}", false, `[true,false,null]`},
		{"text array quoted", 1009, `{"a b","","NULL","null",NULL,"x\"y","back\\slash","{}",","}`, false,
			`["a b","","NULL","null",null,"x\"y","back\\slash","{}",","]`},
		{"text array unicode", 1009, `{héllo,🎉}`, false, `["héllo","🎉"]`},
		{"text 2-dim", 1009, `{{a,NULL},{"c d",""}}`, false, `[["a",null],["c d",""]]`},
		{"json array", 199, `{"{\"a\": 1}","[1, 2]",NULL,"\"s\""}`, false, `[{"a": 1},[1, 2],null,"s"]`},
		{"jsonb array", 3807, `{"{\"a\": {\"b\": \"\\\\\"}}"}`, false, `[{"a": {"b": "\\"}}]`},
		{"bytea array", 1001, `{"\\x01ff",NULL}`, false, `["\\x01ff",null]`},
		{"timestamptz array", 1185, `{"2024-01-02 03:04:05+00",infinity}`, false, `["2024-01-02 03:04:05+00","infinity"]`},
		{"uuid array", 2951, `{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}`, false, `["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]`},
		{"date array", 1182, `{"0044-03-15 BC",2020-01-01}`, false, `["0044-03-15 BC","2020-01-01"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var text []byte
			if !tt.null {
				text = []byte(tt.text)
			}
			prefix := []byte("prefix:")
			got, err := types.AppendValue(prefix, tt.oid, text)
			if err != nil {
				t.Fatalf("AppendValue(%d, %q): %v", tt.oid, tt.text, err)
			}
			if !strings.HasPrefix(string(got), "prefix:") {
				t.Fatalf("prefix lost: %q", got)
			}
			got = got[len("prefix:"):]
			if string(got) != tt.want {
				t.Fatalf("AppendValue(%d, %q) = %s, want %s", tt.oid, tt.text, got, tt.want)
			}
			if !json.Valid(got) || !utf8.Valid(got) {
				t.Fatalf("output is not valid JSON/UTF-8: %q", got)
			}
		})
	}
}

func TestAppendValueTextRoundTrip(t *testing.T) {
	// Whatever a text value holds, decoding its JSON gives the text back
	// (invalid UTF-8 aside).
	types := BuiltinTypes()
	for _, s := range []string{"", "plain", `"\`, "\x00\x01\x1f\x7f", "\u2028\u2029", "🎉 ü 世", strings.Repeat("ab\"", 100)} {
		out, err := types.AppendValue(nil, oidText, []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		var back string
		if err := json.Unmarshal(out, &back); err != nil || back != s {
			t.Fatalf("round trip of %q: got %q, %v", s, back, err)
		}
	}
}

func TestAppendValueErrors(t *testing.T) {
	types := BuiltinTypes()
	tests := []struct {
		name string
		oid  uint32
		text string
		want error
	}{
		{"int4 empty", oidInt4, "", ErrBadValue},
		{"int4 letters", oidInt4, "12a", ErrBadValue},
		{"int4 leading zero", oidInt4, "012", ErrBadValue},
		{"int4 minus only", oidInt4, "-", ErrBadValue},
		{"int4 plus", oidInt4, "+1", ErrBadValue},
		{"float junk", oidFloat8, "1.", ErrBadValue},
		{"float inf lowercase", oidFloat8, "inf", ErrBadValue},
		{"float exp empty", oidFloat8, "1e", ErrBadValue},
		{"bool true", oidBool, "true", ErrBadValue},
		{"bool empty", oidBool, "", ErrBadValue},
		{"json invalid", oidJSON, `{"a":}`, ErrBadValue},
		{"json empty", oidJSONB, ``, ErrBadValue},
		{"array no brace", 1007, "1,2", ErrBadValue},
		{"array unterminated", 1007, "{1,2", ErrBadValue},
		{"array trailing", 1007, "{1}x", ErrBadValue},
		{"array empty element", 1007, "{1,,2}", ErrBadValue},
		{"array bad element", 1007, "{1,x}", ErrBadValue},
		{"array mixed", 1007, "{{1},2}", ErrBadValue},
		{"array mixed 2", 1007, "{1,{2}}", ErrBadValue},
		{"array unterminated quote", 1009, `{"abc}`, ErrBadValue},
		{"array quote in unquoted", 1009, `{ab"c}`, ErrBadValue},
		{"array backslash at end", 1009, `{"ab\`, ErrBadValue},
		{"array too deep", 1007, "{{{{{{{1}}}}}}}", ErrBadValue},
		{"array bad bounds", 1007, "[1:]={1}", ErrBadValue},
		{"array bounds no eq", 1007, "[1:2]{1,2}", ErrBadValue},
		{"array bounds dims mismatch", 1007, "[1:2]={{1},{2}}", ErrBadValue},
		{"array missing comma", 1009, `{"a""b"}`, ErrBadValue},
		{"unknown oid", 999999, "x", ErrUnsupportedType},
		{"money", 790, "$1.00", ErrUnsupportedType},
		{"box array", 1020, "{(1,1),(0,0)}", ErrUnsupportedType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := []byte("keep")
			got, err := types.AppendValue(dst, tt.oid, []byte(tt.text))
			if !errors.Is(err, tt.want) {
				t.Fatalf("AppendValue(%d, %q) error = %v, want %v", tt.oid, tt.text, err, tt.want)
			}
			if string(got) != "keep" {
				t.Fatalf("dst changed on error: %q", got)
			}
		})
	}
}

func TestSupported(t *testing.T) {
	types := BuiltinTypes()
	for _, b := range builtins() {
		if err := types.Supported(b.oid); err != nil {
			t.Errorf("%s: %v", b.name, err)
		}
		if err := types.Supported(b.arrayOID); err != nil {
			t.Errorf("_%s: %v", b.name, err)
		}
	}
	err := types.Supported(790)
	if !errors.Is(err, ErrUnsupportedType) || !strings.Contains(err.Error(), "790") {
		t.Fatalf("money: %v", err)
	}
}

func TestResolveTypes(t *testing.T) {
	// pg_type rows as a database would return them.
	rows := map[uint32]pgTypeRow{
		16:    {oid: 16, name: "bool", typtype: "b", cat: "B", delim: ","},
		23:    {oid: 23, name: "int4", typtype: "b", cat: "N", delim: ","},
		603:   {oid: 603, name: "box", typtype: "b", cat: "G", delim: ";", elem: 600},
		1020:  {oid: 1020, name: "_box", typtype: "b", cat: "A", delim: ",", elem: 603},
		790:   {oid: 790, name: "money", typtype: "b", cat: "N", delim: ","},
		791:   {oid: 791, name: "_money", typtype: "b", cat: "A", delim: ",", elem: 790},
		20000: {oid: 20000, name: "mood", typtype: "e", cat: "E", delim: ","},
		20001: {oid: 20001, name: "_mood", typtype: "b", cat: "A", delim: ",", elem: 20000},
		20002: {oid: 20002, name: "posint", typtype: "d", cat: "N", delim: ",", base: 23},
		20003: {oid: 20003, name: "_posint", typtype: "b", cat: "A", delim: ",", elem: 20002},
		20004: {oid: 20004, name: "posint2", typtype: "d", cat: "N", delim: ",", base: 20002},
		20005: {oid: 20005, name: "intlist", typtype: "d", cat: "A", delim: ",", base: 1007},
		20006: {oid: 20006, name: "_intlist", typtype: "b", cat: "A", delim: ",", elem: 20005},
		20007: {oid: 20007, name: "citext", typtype: "b", cat: "S", delim: ","},
		20008: {oid: 20008, name: "moneyd", typtype: "d", cat: "N", delim: ",", base: 790},
		20009: {oid: 20009, name: "loop", typtype: "d", cat: "N", delim: ",", base: 20009},
		20010: {oid: 20010, name: "comp", typtype: "c", cat: "C", delim: ","},
	}
	m := resolveTypes(rows)
	want := map[uint32]struct{ kind, elem kind }{
		1020:  {kindUnsupported, 0},
		790:   {kindUnsupported, 0},
		791:   {kindUnsupported, 0},
		20000: {kindString, 0},
		20001: {kindArray, kindString},
		20002: {kindInt, 0},
		20003: {kindArray, kindInt},
		20004: {kindInt, 0},
		20005: {kindArray, kindInt},
		20006: {kindUnsupported, 0},
		20007: {kindString, 0},
		20008: {kindUnsupported, 0},
		20009: {kindUnsupported, 0},
		20010: {kindUnsupported, 0},
		23:    {kindInt, 0},
		1007:  {kindArray, kindInt},
	}
	for oid, w := range want {
		got := m[oid]
		if got.kind != w.kind || got.elem != w.elem {
			t.Errorf("oid %d (%s): kind %d elem %d, want %d %d", oid, got.name, got.kind, got.elem, w.kind, w.elem)
		}
	}
	if m[20008].name != "moneyd" {
		t.Errorf("unsupported types keep their name, got %q", m[20008].name)
	}
}

func TestRowEncoder(t *testing.T) {
	types := BuiltinTypes()
	cols := []Column{{"id", oidInt8}, {"org_id", oidText}, {"done", oidBool}, {"tags", 1009}, {`we"ird`, oidFloat8}}
	enc, err := types.RowEncoder(cols)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		vals [][]byte
		want string
	}{
		{"full", [][]byte{[]byte("1"), []byte("acme"), []byte("t"), []byte(`{a,"b c"}`), []byte("NaN")},
			`{"id":"1","org_id":"acme","done":true,"tags":["a","b c"],"we\"ird":"NaN"}`},
		{"nulls", [][]byte{[]byte("2"), nil, nil, nil, nil},
			`{"id":"2","org_id":null,"done":null,"tags":null,"we\"ird":null}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := enc.AppendRow([]byte("x"), tt.vals)
			if err != nil {
				t.Fatal(err)
			}
			if string(got[1:]) != tt.want {
				t.Fatalf("got %s, want %s", got[1:], tt.want)
			}
		})
	}
	key, err := enc.AppendColumns(nil, tests[0].vals, []int{1, 0})
	if err != nil || string(key) != `{"org_id":"acme","id":"1"}` {
		t.Fatalf("AppendColumns = %s, %v", key, err)
	}
	if _, err := enc.AppendColumns(nil, tests[0].vals, []int{5}); !errors.Is(err, ErrBadValue) {
		t.Fatalf("AppendColumns out of range: %v", err)
	}

	// Errors leave dst unchanged and name the column.
	dst := []byte("keep")
	got, err := enc.AppendRow(dst, [][]byte{[]byte("1"), []byte("a"), []byte("yes"), nil, nil})
	if !errors.Is(err, ErrBadValue) || !strings.Contains(err.Error(), `"done"`) || string(got) != "keep" {
		t.Fatalf("bad bool: %q, %v", got, err)
	}
	if _, err := enc.AppendRow(nil, [][]byte{nil}); !errors.Is(err, ErrBadValue) {
		t.Fatalf("short row: %v", err)
	}

	// Unsupported column types are refused up front, naming the column.
	_, err = types.RowEncoder([]Column{{"id", oidInt4}, {"price", 790}})
	if !errors.Is(err, ErrUnsupportedType) || !strings.Contains(err.Error(), `"price"`) {
		t.Fatalf("RowEncoder(money) = %v", err)
	}
}

func TestSessionSettings(t *testing.T) {
	p := SessionParams()
	for _, k := range []string{"client_encoding", "DateStyle", "IntervalStyle", "TimeZone", "extra_float_digits", "bytea_output"} {
		if p[k] == "" {
			t.Errorf("SessionParams lacks %s", k)
		}
	}
	opts := ConnConfigOptions()
	if strings.Count(opts, "-c ") != len(p) || strings.Contains(opts, ", ") {
		t.Fatalf("ConnConfigOptions = %q", opts)
	}
}

var benchRow = [][]byte{
	[]byte("123456789"), []byte("acme-corp"), []byte("Buy milk and \"eggs\""), []byte("t"),
	[]byte("2024-01-02 03:04:05.123456+00"), []byte("42"), []byte("3.14159"),
	[]byte(`{"tags": ["a", "b"], "n": 1}`), []byte(`{1,2,3,NULL}`), nil,
}

var benchCols = []Column{
	{"id", oidInt8}, {"org_id", oidText}, {"title", oidText}, {"done", oidBool},
	{"updated_at", oidTimestamptz}, {"position", oidInt4}, {"score", oidFloat8},
	{"meta", oidJSONB}, {"ids", 1007}, {"note", oidText},
}

func BenchmarkAppendRow(b *testing.B) {
	enc, err := BuiltinTypes().RowEncoder(benchCols)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		if buf, err = enc.AppendRow(buf[:0], benchRow); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkAppendValueText(b *testing.B) {
	types := BuiltinTypes()
	v := []byte("a reasonably long text value with no escapes at all, as most are")
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		buf, _ = types.AppendValue(buf[:0], oidText, v)
	}
}

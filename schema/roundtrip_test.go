package schema_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// sqlRow is one generated row: an input literal per column, nil for NULL.
type sqlRow []*string

func lit(s string) *string { return &s }

// column is one column of the round-trip table with a generator of input
// literals. Edge values are used first (one per row, cycling), then random
// ones.
type column struct {
	name, typ string
	edges     []string // "\x00NULL" stands for SQL NULL
	gen       func(r *rand.Rand) string
}

const sqlNull = "\x00NULL"

var textRunes = []string{"a", "Z", "0", " ", `"`, `\`, "{", "}", ",", "'", "NULL", "null", "\n", "\t", "\r",
	"\x01", "\x1f", "\x7f", "é", "ü", "世", "界", "🎉", "👩‍👩‍👧", "\u2028", "\ufeff", "[", "]", ":", "=", "$"}

func genText(r *rand.Rand) string {
	var b strings.Builder
	for n := r.IntN(16); n > 0; n-- {
		b.WriteString(textRunes[r.IntN(len(textRunes))])
	}
	return b.String()
}

func genBigText(r *rand.Rand) string {
	// Incompressible enough to be stored out of line (TOAST).
	var b strings.Builder
	for b.Len() < 20000 {
		b.WriteRune(rune(0x4e00 + r.IntN(0x5000)))
		b.WriteString(strconv.FormatUint(r.Uint64(), 36))
	}
	return b.String()
}

func genInt(bits int) func(r *rand.Rand) string {
	return func(r *rand.Rand) string {
		v := int64(r.Uint64())
		switch bits {
		case 16:
			v = int64(int16(v))
		case 32:
			v = int64(int32(v))
		}
		if r.IntN(3) == 0 {
			v %= 1000
		}
		return strconv.FormatInt(v, 10)
	}
}

func genDigits(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('0' + r.IntN(10))
	}
	return string(b)
}

func genNumeric(r *rand.Rand) string {
	s := genDigits(r, 1+r.IntN(40))
	if r.IntN(2) == 0 {
		s += "." + genDigits(r, 1+r.IntN(20))
	}
	if r.IntN(2) == 0 {
		s = "-" + s
	}
	return s
}

func genFloat(bits int) func(r *rand.Rand) string {
	return func(r *rand.Rand) string {
		for {
			var f float64
			switch r.IntN(3) {
			case 0:
				f = (r.Float64() - 0.5) * 1000
			case 1:
				f = float64(r.IntN(1000000) - 500000)
			default:
				if bits == 32 {
					f = float64(math.Float32frombits(r.Uint32()))
				} else {
					f = math.Float64frombits(r.Uint64())
				}
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				continue
			}
			return strconv.FormatFloat(f, 'g', -1, bits)
		}
	}
}

func genUUID(r *rand.Rand) string {
	b := make([]byte, 16)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// genJSON returns a random JSON document with varied whitespace, escapes and
// nesting.
func genJSON(r *rand.Rand) string {
	var b strings.Builder
	var val func(depth int)
	ws := func() {
		if r.IntN(4) == 0 {
			b.WriteString([]string{" ", "\n", "\t ", "  "}[r.IntN(4)])
		}
	}
	str := func() {
		b.WriteByte('"')
		for n := r.IntN(6); n > 0; n-- {
			b.WriteString([]string{"a", "é", "🎉", `\"`, `\\`, `\n`, `\u00e9`, `\ud83c\udf89`, `\/`, " ", "{", "'"}[r.IntN(12)])
		}
		b.WriteByte('"')
	}
	val = func(depth int) {
		ws()
		k := r.IntN(8)
		if depth > 3 && k >= 6 {
			k = r.IntN(6)
		}
		switch k {
		case 0:
			b.WriteString("null")
		case 1:
			b.WriteString([]string{"true", "false"}[r.IntN(2)])
		case 2:
			b.WriteString([]string{"0", "-0", "1.5", "-2.25e10", "1E-7", "123456789012345678901234567890", "0.1"}[r.IntN(7)])
		case 3:
			b.WriteString(strconv.Itoa(r.IntN(2000) - 1000))
		case 4, 5:
			str()
		case 6:
			b.WriteByte('[')
			for i, n := 0, r.IntN(4); i < n; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				val(depth + 1)
			}
			ws()
			b.WriteByte(']')
		case 7:
			b.WriteByte('{')
			for i, n := 0, r.IntN(4); i < n; i++ {
				if i > 0 {
					b.WriteByte(',')
				}
				ws()
				b.WriteString(fmt.Sprintf(`"k%d"`, i))
				ws()
				b.WriteByte(':')
				val(depth + 1)
			}
			ws()
			b.WriteByte('}')
		}
		ws()
	}
	val(0)
	return b.String()
}

func genBytea(r *rand.Rand) string {
	b := make([]byte, r.IntN(40))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return fmt.Sprintf(`\x%x`, b)
}

func genDate(r *rand.Rand) string {
	if r.IntN(5) == 0 {
		return fmt.Sprintf("%04d-%02d-%02d BC", 1+r.IntN(4700), 1+r.IntN(12), 1+r.IntN(28))
	}
	return fmt.Sprintf("%04d-%02d-%02d", 1+r.IntN(9999), 1+r.IntN(12), 1+r.IntN(28))
}

func genTime(r *rand.Rand) string {
	s := fmt.Sprintf("%02d:%02d:%02d", r.IntN(24), r.IntN(60), r.IntN(60))
	if r.IntN(2) == 0 {
		s += "." + genDigits(r, 1+r.IntN(6))
	}
	return s
}

func genOffset(r *rand.Rand) string {
	return fmt.Sprintf("%+03d:%02d", r.IntN(29)-14, []int{0, 30, 45}[r.IntN(3)])
}

func genTimestamp(r *rand.Rand) string {
	d := genDate(r)
	if strings.HasSuffix(d, " BC") {
		return strings.TrimSuffix(d, " BC") + " " + genTime(r) + " BC"
	}
	return d + " " + genTime(r)
}

func genTimestamptz(r *rand.Rand) string {
	d := fmt.Sprintf("%04d-%02d-%02d", 1+r.IntN(9999), 1+r.IntN(12), 1+r.IntN(28))
	return d + " " + genTime(r) + genOffset(r)
}

func genInterval(r *rand.Rand) string {
	return fmt.Sprintf("%d years %d mons %d days %d:%02d:%02d.%06d",
		r.IntN(400)-200, r.IntN(30)-15, r.IntN(100)-50, r.IntN(100)-50, r.IntN(60), r.IntN(60), r.IntN(1000000))
}

var moods = []string{"happy", "sad", "with space", `quo"te`, `back\slash`, "ünï🎉", "NULL", "a,b"}

func genMood(r *rand.Rand) string { return moods[r.IntN(len(moods))] }

// arrayLiteral builds a Postgres array input literal of dims (outermost
// first), every element quoted, NULL elements (nil) unquoted.
func arrayLiteral(r *rand.Rand, dims []int, elem func(r *rand.Rand) *string) string {
	var b strings.Builder
	var level func(d int)
	level = func(d int) {
		b.WriteByte('{')
		for i := 0; i < dims[d]; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			if d+1 < len(dims) {
				level(d + 1)
				continue
			}
			e := elem(r)
			if e == nil {
				b.WriteString("NULL")
				continue
			}
			b.WriteByte('"')
			b.WriteString(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(*e))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	if len(dims) == 0 {
		return "{}"
	}
	level(0)
	return b.String()
}

func maybeNull(gen func(r *rand.Rand) string) func(r *rand.Rand) *string {
	return func(r *rand.Rand) *string {
		if r.IntN(6) == 0 {
			return nil
		}
		return lit(gen(r))
	}
}

func genArray(nd int, gen func(r *rand.Rand) string) func(r *rand.Rand) string {
	return func(r *rand.Rand) string {
		if r.IntN(8) == 0 {
			return "{}"
		}
		dims := make([]int, 1+r.IntN(nd))
		for i := range dims {
			dims[i] = 1 + r.IntN(4)
		}
		s := arrayLiteral(r, dims, maybeNull(gen))
		if r.IntN(5) == 0 {
			// Non-default lower bounds: output gets a "[lb:ub]..." prefix.
			var p strings.Builder
			for _, d := range dims {
				lb := r.IntN(7) - 3
				fmt.Fprintf(&p, "[%d:%d]", lb, lb+d-1)
			}
			s = p.String() + "=" + s
		}
		return s
	}
}

func roundTripColumns() []column {
	return []column{
		{"c_text", "text", []string{"", " ", "NULL", "null", `"`, `\`, `\\x00`, "🎉", "a,b", "{}", "\u2028", "BIG"}, genText},
		{"c_varchar", "varchar", []string{"", "x"}, genText},
		{"c_bpchar", "char(5)", []string{"", "ab", "é🎉"}, func(r *rand.Rand) string { return []string{"a", "ab ", "ü", `"\`}[r.IntN(4)] }},
		{"c_int2", "int2", []string{"-32768", "32767", "0", "-0"}, genInt(16)},
		{"c_int4", "int4", []string{"-2147483648", "2147483647", "0"}, genInt(32)},
		{"c_int8", "int8", []string{"-9223372036854775808", "9223372036854775807", "0"}, genInt(64)},
		{"c_numeric", "numeric", []string{"NaN", "Infinity", "-Infinity", "0", "-0.000", "1e1000", "0.000000000000000000001",
			"123456789012345678901234567890.123456789"}, genNumeric},
		{"c_float4", "float4", []string{"NaN", "Infinity", "-Infinity", "-0", "1.4e-45", "3.4028235e38", "0.1"}, genFloat(32)},
		{"c_float8", "float8", []string{"NaN", "Infinity", "-Infinity", "-0", "5e-324", "1.7976931348623157e308", "0.1", "1e100"}, genFloat(64)},
		{"c_bool", "bool", []string{"t", "f"}, func(r *rand.Rand) string { return []string{"t", "f"}[r.IntN(2)] }},
		{"c_uuid", "uuid", []string{"00000000-0000-0000-0000-000000000000"}, genUUID},
		{"c_json", "json", []string{"{}", "[]", "null", `"str"`, ` {"dup": 1, "dup": 2} `, `{"a": {"b": [1, 2.5e10, -0, true, null, "x\"y\\z"]}}`, `"\u0000"`}, genJSON},
		{"c_jsonb", "jsonb", []string{"{}", "[]", "null", `{"a": {"b": [1, 2.5e10, -0, true, null, "x\"y\\z"]}}`, `1e400`}, genJSON},
		{"c_bytea", "bytea", []string{`\x`, `\x00`, `\xdeadbeef`}, genBytea},
		{"c_date", "date", []string{"infinity", "-infinity", "4713-01-01 BC", "5874897-12-31", "0001-01-01", "2000-02-29"}, genDate},
		{"c_time", "time", []string{"24:00:00", "00:00:00", "23:59:59.999999"}, genTime},
		{"c_timetz", "timetz", []string{"12:34:56+05:30", "00:00:00-15:59"}, func(r *rand.Rand) string { return genTime(r) + genOffset(r) }},
		{"c_timestamp", "timestamp", []string{"infinity", "-infinity", "4713-01-01 00:00:00 BC", "294276-12-31 23:59:59.999999"}, genTimestamp},
		{"c_timestamptz", "timestamptz", []string{"infinity", "-infinity", "2000-01-01 00:00:00+14:00", "1900-06-01 12:00:00 Europe/Amsterdam"}, genTimestamptz},
		{"c_interval", "interval", []string{"0", "-178000000 years", "1 day -00:00:01", "P1Y2M3DT4H5M6S", "-1 mons +2 days -03:04:05.6"}, genInterval},
		{"c_inet", "inet", []string{"::1", "192.168.0.1/24", "2001:db8::1/64"}, func(r *rand.Rand) string {
			return fmt.Sprintf("%d.%d.%d.%d/%d", r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), 8+r.IntN(25))
		}},
		{"c_cidr", "cidr", []string{"10.0.0.0/8", "2001:db8::/32"}, func(r *rand.Rand) string { return fmt.Sprintf("10.%d.0.0/16", r.IntN(256)) }},
		{"c_macaddr", "macaddr", []string{"08:00:2b:01:02:03"}, func(r *rand.Rand) string {
			return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256), r.IntN(256))
		}},
		{"c_oid", "oid", []string{"0", "4294967295"}, func(r *rand.Rand) string { return strconv.FormatUint(uint64(r.Uint32()), 10) }},
		{"c_xid8", "xid8", []string{"0", "18446744073709551615"}, func(r *rand.Rand) string { return strconv.FormatUint(r.Uint64(), 10) }},
		{"c_pg_lsn", "pg_lsn", []string{"0/0", "FFFFFFFF/FFFFFFFF"}, func(r *rand.Rand) string { return fmt.Sprintf("%X/%X", r.Uint32(), r.Uint32()) }},
		{"c_mood", "mood", moods, genMood},
		{"c_posint", "posint", []string{"1", "2147483647"}, func(r *rand.Rand) string { return strconv.Itoa(1 + r.IntN(1000000)) }},
		{"c_shorttext", "shorttext", []string{"", `"\`}, genText},
		{"c_intlist", "intlist", []string{"{}", "{1,NULL}", "[0:1]={1,2}"}, genArray(2, genInt(32))},
		{"a_text", "text[]", []string{"{}", `{""}`, `{NULL}`, `{"NULL"}`, `{"null"}`, `{"a b","c,d","{}","\"","\\"}`, `{"🎉",é}`}, genArray(1, genText)},
		{"a_text2", "text[][]", []string{`{{a,NULL},{"",b}}`, `[-1:0][2:3]={{a,b},{c,d}}`}, genArray(3, genText)},
		{"a_int4", "int4[]", []string{"{}", "{NULL,NULL}", "{-2147483648,2147483647}", "[0:2]={1,2,3}", "{{{{{{1}}}}}}"}, genArray(2, genInt(32))},
		{"a_int8", "int8[]", []string{"{-9223372036854775808,9223372036854775807}"}, genArray(1, genInt(64))},
		{"a_numeric", "numeric[]", []string{"{NaN,Infinity,-Infinity,1e100}"}, genArray(2, genNumeric)},
		{"a_float4", "float4[]", []string{"{NaN,Infinity,-Infinity,-0}"}, genArray(1, genFloat(32))},
		{"a_float8", "float8[]", []string{"{NaN,Infinity,-Infinity,-0,5e-324}"}, genArray(2, genFloat(64))},
		{"a_bool", "bool[]", []string{"{t,f,NULL}"}, genArray(2, func(r *rand.Rand) string { return []string{"t", "f"}[r.IntN(2)] })},
		{"a_uuid", "uuid[]", []string{"{}"}, genArray(1, genUUID)},
		{"a_json", "json[]", []string{`{"{\"a\": [1, \"x\\\"y\"]}",NULL,"null","\"NULL\""}`}, genArray(1, genJSON)},
		{"a_jsonb", "jsonb[]", []string{`{"{}","[]"}`}, genArray(2, genJSON)},
		{"a_bytea", "bytea[]", []string{`{"\\x",NULL,"\\xff00"}`}, genArray(1, genBytea)},
		{"a_date", "date[]", []string{`{infinity,"0044-03-15 BC"}`}, genArray(1, genDate)},
		{"a_timestamptz", "timestamptz[]", []string{`{infinity,-infinity}`}, genArray(1, genTimestamptz)},
		{"a_interval", "interval[]", []string{`{"-178000000 years",0}`}, genArray(1, genInterval)},
		{"a_mood", "mood[]", []string{`{"with space","quo\"te","back\\slash",NULL,"NULL"}`}, genArray(1, genMood)},
		{"a_posint", "posint[]", []string{`{1,NULL}`}, genArray(1, func(r *rand.Rand) string { return strconv.Itoa(1 + r.IntN(1000)) })},
	}
}

// genRows returns n rows: row 0 all NULL, then rows cycling through each
// column's edge values, then random rows (with some NULLs).
func genRows(r *rand.Rand, cols []column, n int) []sqlRow {
	rows := make([]sqlRow, n)
	maxEdges := 0
	for _, c := range cols {
		maxEdges = max(maxEdges, len(c.edges))
	}
	for i := range rows {
		row := make(sqlRow, len(cols))
		for j, c := range cols {
			switch {
			case i == 0:
			case i <= maxEdges:
				e := c.edges[(i-1)%len(c.edges)]
				if e == "BIG" {
					e = genBigText(r)
				}
				if e != sqlNull {
					row[j] = lit(e)
				}
			case r.IntN(10) == 0:
			default:
				row[j] = lit(c.gen(r))
			}
		}
		rows[i] = row
	}
	return rows
}

const roundTripDDL = `
CREATE TYPE mood AS ENUM ('happy', 'sad', 'with space', 'quo"te', 'back\slash', 'ünï🎉', 'NULL', 'a,b');
CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
CREATE DOMAIN shorttext AS text;
CREATE DOMAIN intlist AS int4[];
`

// connect opens a pgx connection with the codec's session settings.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	schema.ApplySessionSettings(&cfg.Config)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// encodedRows encodes every row of a text-format result by id (column 0).
func encodeResult(t *testing.T, types *schema.Types, fields []pgconn.FieldDescription, rows [][][]byte) map[string][]byte {
	t.Helper()
	cols := make([]schema.Column, len(fields))
	for i, f := range fields {
		if f.Format != pgx.TextFormatCode {
			t.Fatalf("column %s is not in text format", f.Name)
		}
		cols[i] = schema.Column{Name: f.Name, TypeOID: f.DataTypeOID}
	}
	enc, err := types.RowEncoder(cols)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte, len(rows))
	for _, vals := range rows {
		b, err := enc.AppendRow(nil, vals)
		if err != nil {
			t.Fatalf("select row %s: %v", vals[0], err)
		}
		out[string(vals[0])] = b
	}
	return out
}

// selectEncoded reads the table with pgconn ExecParams in text format and
// encodes every row.
func selectEncoded(t *testing.T, ctx context.Context, conn *pgx.Conn, types *schema.Types) map[string][]byte {
	t.Helper()
	res := conn.PgConn().ExecParams(ctx, "SELECT * FROM vals ORDER BY id", nil, nil, nil, []int16{pgx.TextFormatCode}).Read()
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	return encodeResult(t, types, res.FieldDescriptions, res.Rows)
}

// streamEncoded reads n inserts of table vals from the slot with pgoutput and
// encodes each with a RowEncoder built from the Relation message.
func streamEncoded(t *testing.T, ctx context.Context, url, slot string, types *schema.Types, n int) map[string][]byte {
	t.Helper()
	cfg, err := pgconn.ParseConfig(url + "&replication=database")
	if err != nil {
		t.Fatal(err)
	}
	schema.ApplySessionSettings(cfg)
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	err = pglogrepl.StartReplication(ctx, conn, slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names 'rt_pub'"},
	})
	if err != nil {
		t.Fatal(err)
	}
	encoders := map[uint32]*schema.RowEncoder{}
	out := make(map[string][]byte, n)
	for len(out) < n {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive after %d of %d rows: %v", len(out), n, err)
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok {
			if e, ok := msg.(*pgproto3.ErrorResponse); ok {
				t.Fatalf("replication error: %s", e.Message)
			}
			continue
		}
		if len(cd.Data) == 0 || cd.Data[0] != pglogrepl.XLogDataByteID {
			continue
		}
		xld, err := pglogrepl.ParseXLogData(cd.Data[1:])
		if err != nil {
			t.Fatal(err)
		}
		m, err := pglogrepl.Parse(xld.WALData)
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pglogrepl.RelationMessage:
			cols := make([]schema.Column, len(m.Columns))
			for i, c := range m.Columns {
				cols[i] = schema.Column{Name: c.Name, TypeOID: c.DataType}
			}
			if encoders[m.RelationID], err = types.RowEncoder(cols); err != nil {
				t.Fatal(err)
			}
		case *pglogrepl.InsertMessage:
			enc := encoders[m.RelationID]
			if enc == nil {
				t.Fatalf("insert before relation %d", m.RelationID)
			}
			vals := make([][]byte, len(m.Tuple.Columns))
			for i, c := range m.Tuple.Columns {
				switch c.DataType {
				case pglogrepl.TupleDataTypeText:
					vals[i] = c.Data
				case pglogrepl.TupleDataTypeNull:
				default:
					t.Fatalf("column %d: tuple data type %q", i, c.DataType)
				}
			}
			b, err := enc.AppendRow(nil, vals)
			if err != nil {
				t.Fatalf("replicated row %s: %v", vals[0], err)
			}
			out[string(vals[0])] = b
		}
	}
	return out
}

// TestReplicationMatchesSelect is the codec's end-to-end proof (rule 10): rows
// of every supported type, full of edge values, encode to the same bytes
// whether they come from pgoutput or from a text-format SELECT.
func TestReplicationMatchesSelect(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RIPPLE_SCHEMA_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (rerun with RIPPLE_SCHEMA_SEED=%d)", seed, seed)
	r := rand.New(rand.NewPCG(seed, seed>>1))

	pg := testenv.SharedPostgres(t)
	url := pg.CreateDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := connect(t, url)

	cols := roundTripColumns()
	ddl := roundTripDDL + "CREATE TABLE vals (id int4 PRIMARY KEY"
	for _, c := range cols {
		ddl += ", " + c.name + " " + c.typ
	}
	ddl += ");\nCREATE PUBLICATION rt_pub FOR TABLE vals;"
	if _, err := conn.Exec(ctx, ddl); err != nil {
		t.Fatal(err)
	}
	slot := fmt.Sprintf("schema_rt_%d", seed%1000000007)
	if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		t.Fatal(err)
	}

	const n = 400
	rows := genRows(r, cols, n)
	insert := "INSERT INTO vals VALUES ($1"
	for i := range cols {
		insert += fmt.Sprintf(", $%d", i+2)
	}
	insert += ")"
	for start := 0; start < n; start += 100 {
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		for i := start; i < start+100 && i < n; i++ {
			params := make([][]byte, len(cols)+1)
			params[0] = []byte(strconv.Itoa(i))
			for j, v := range rows[i] {
				if v != nil {
					params[j+1] = []byte(*v)
				}
			}
			if err := conn.PgConn().ExecParams(ctx, insert, params, nil, nil, nil).Read().Err; err != nil {
				t.Fatalf("insert row %d: %v\nrow: %q", i, err, derefAll(rows[i]))
			}
		}
		if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
	}

	types, err := schema.LoadTypes(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	fromSelect := selectEncoded(t, ctx, conn, types)
	fromStream := streamEncoded(t, ctx, url, slot, types, n)

	// The catch-up path through pgx's Query with text results encodes the same.
	qrows, err := conn.Query(ctx, "SELECT * FROM vals ORDER BY id", pgx.QueryResultFormats{pgx.TextFormatCode})
	if err != nil {
		t.Fatal(err)
	}
	var raw [][][]byte
	for qrows.Next() {
		vals := qrows.RawValues()
		cp := make([][]byte, len(vals))
		for i, v := range vals {
			if v != nil {
				cp[i] = append([]byte{}, v...)
			}
		}
		raw = append(raw, cp)
	}
	if err := qrows.Err(); err != nil {
		t.Fatal(err)
	}
	fromQuery := encodeResult(t, types, qrows.FieldDescriptions(), raw)

	if len(fromSelect) != n || len(fromStream) != n || len(fromQuery) != n {
		t.Fatalf("rows: select %d, stream %d, query %d, want %d", len(fromSelect), len(fromStream), len(fromQuery), n)
	}
	mismatches := 0
	for i := 0; i < n; i++ {
		id := strconv.Itoa(i)
		s, st, q := fromSelect[id], fromStream[id], fromQuery[id]
		if !bytes.Equal(s, st) || !bytes.Equal(s, q) {
			mismatches++
			if mismatches <= 3 {
				t.Errorf("row %d differs:\nselect %s\nstream %s\nquery  %s", i, s, st, q)
			}
		}
		checkRowMeaning(t, i, cols, rows[i], s)
	}
	if mismatches > 0 {
		t.Fatalf("%d of %d rows encode differently", mismatches, n)
	}

	// Control: without the session settings the text forms differ, so the
	// comparison above is sensitive to them.
	t.Run("settings matter", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(url)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["TimeZone"] = "Asia/Kathmandu"
		cfg.RuntimeParams["extra_float_digits"] = "0"
		cfg.RuntimeParams["DateStyle"] = "SQL, DMY"
		other, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close(ctx)
		fromOther := selectEncoded(t, ctx, other, types)
		differ := 0
		for id, b := range fromOther {
			if !bytes.Equal(b, fromStream[id]) {
				differ++
			}
		}
		if differ == 0 {
			t.Fatal("encodings under different session settings all matched the stream")
		}
	})
}

func derefAll(row sqlRow) []string {
	out := make([]string, len(row))
	for i, v := range row {
		if v == nil {
			out[i] = "NULL"
		} else {
			out[i] = *v
		}
	}
	return out
}

// checkRowMeaning checks that the encoded row means what was inserted, for
// the columns whose value survives Postgres unchanged.
func checkRowMeaning(t *testing.T, i int, cols []column, row sqlRow, enc []byte) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(enc, &obj); err != nil {
		t.Fatalf("row %d: encoding is not a JSON object: %v\n%s", i, err, enc)
	}
	if len(obj) != len(cols)+1 || string(obj["id"]) != strconv.Itoa(i) {
		t.Fatalf("row %d: %d keys, id %s", i, len(obj), obj["id"])
	}
	for j, c := range cols {
		got := obj[c.name]
		v := row[j]
		if v == nil {
			if string(got) != "null" {
				t.Errorf("row %d %s: NULL encoded as %s", i, c.name, got)
			}
			continue
		}
		var want any
		switch c.typ {
		case "text", "varchar", "shorttext", "mood", "uuid":
			want = *v
		case "int2", "int4", "posint":
			n, _ := strconv.ParseInt(*v, 10, 64)
			want = float64(n)
		case "int8", "xid8":
			want = *v
		case "bool":
			want = *v == "t"
		case "bytea":
			want = *v
		case "json", "jsonb":
			if strings.Contains(*v, "1e400") || strings.Contains(*v, `\u0000`) {
				continue
			}
			if err := json.Unmarshal([]byte(*v), &want); err != nil {
				t.Fatalf("row %d %s: generated bad json %q", i, c.name, *v)
			}
		case "float4", "float8":
			switch *v {
			case "NaN", "Infinity", "-Infinity":
				want = *v
			default:
				continue
			}
		default:
			continue
		}
		var gotV any
		if err := json.Unmarshal(got, &gotV); err != nil {
			t.Fatalf("row %d %s: %v", i, c.name, err)
		}
		if !reflect.DeepEqual(gotV, want) {
			t.Errorf("row %d %s: inserted %q, encoded %s", i, c.name, *v, got)
		}
	}
}

package catchup

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ripple-sync/ripple/schema"
)

// ErrBadColumns is returned for a column list that names a column the table
// does not have (or Ripple's own xid column).
var ErrBadColumns = errors.New("catchup: unknown column")

// ErrBadRow is returned by Projection.Apply for bytes that are not a JSON
// object.
var ErrBadRow = errors.New("catchup: row is not a JSON object")

// Projection is a column list resolved against a table: the requested
// columns plus every primary key column, in the table's attribute order. A
// snapshot with a column list encodes exactly these columns; the gateway
// applies the same Projection to live rows (Apply) so that a row reaches a
// client with the same bytes whichever way it came.
//
// A Projection is immutable and safe for concurrent use.
type Projection struct {
	table *schema.Table
	cols  []schema.Column
	keep  map[string]struct{}
	all   bool
}

// NewProjection resolves columns against table. nil means every column; any
// other list (even an empty one) is the named columns plus the primary key.
// Duplicates are ignored. An unknown column gives an error wrapping
// ErrBadColumns that names it.
func NewProjection(table *schema.Table, columns []string) (*Projection, error) {
	p := &Projection{table: table}
	if columns == nil {
		p.all = true
		p.cols = table.Columns
		return p, nil
	}
	want := make(map[string]struct{}, len(columns)+len(table.PrimaryKey))
	for _, c := range table.PrimaryKey {
		want[c] = struct{}{}
	}
	for _, c := range columns {
		if !hasColumn(table, c) {
			return nil, fmt.Errorf("%w: %q is not a column of %s", ErrBadColumns, c, table.Name)
		}
		want[c] = struct{}{}
	}
	p.keep = want
	for _, c := range table.Columns {
		if _, ok := want[c.Name]; ok {
			p.cols = append(p.cols, c)
		}
	}
	p.all = len(p.cols) == len(table.Columns)
	if p.all {
		p.keep = nil
	}
	return p, nil
}

func hasColumn(t *schema.Table, name string) bool {
	for _, c := range t.Columns {
		if c.Name == name {
			return true
		}
	}
	return false
}

// Table returns the table the projection belongs to.
func (p *Projection) Table() *schema.Table { return p.table }

// All reports whether the projection keeps every column; Apply then returns
// rows unchanged.
func (p *Projection) All() bool { return p.all }

// Columns returns the projected columns in table order. The caller must not
// modify them.
func (p *Projection) Columns() []schema.Column { return p.cols }

// ColumnNames returns the names of the projected columns in table order.
func (p *Projection) ColumnNames() []string {
	names := make([]string, len(p.cols))
	for i, c := range p.cols {
		names[i] = c.Name
	}
	return names
}

// Apply returns row (a JSON object as the codec encodes it: every column in
// table order) restricted to the projection's columns. When the projection
// keeps every column it returns row itself. The result of projecting a row
// the ingest encoded is byte for byte what a snapshot with this projection
// encodes for the same row.
func (p *Projection) Apply(row json.RawMessage) (json.RawMessage, error) {
	if p.all {
		return row, nil
	}
	return p.AppendApply(make([]byte, 0, len(row)), row)
}

// AppendApply appends row restricted to the projection's columns to dst (see
// Apply). Members are copied as they are, in the order they appear in row.
func (p *Projection) AppendApply(dst []byte, row []byte) ([]byte, error) {
	if p.all {
		if err := checkObject(row); err != nil {
			return dst, err
		}
		return append(dst, row...), nil
	}
	n := len(dst)
	dst = append(dst, '{')
	first := true
	err := eachMember(row, func(key []byte, member []byte) {
		if _, ok := p.keep[string(key)]; !ok {
			return
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, member...)
	})
	if err != nil {
		return dst[:n], err
	}
	return append(dst, '}'), nil
}

// ApplyOp projects one operation: inserts and updates get their row
// projected into buf (returned grown); deletes carry only the primary key,
// which every projection keeps, and are returned unchanged.
func (p *Projection) ApplyOp(buf []byte, op schema.Op) (schema.Op, []byte, error) {
	if p.all || op.Row == nil {
		return op, buf, nil
	}
	start := len(buf)
	buf, err := p.AppendApply(buf, op.Row)
	if err != nil {
		return op, buf, err
	}
	op.Row = json.RawMessage(buf[start:len(buf):len(buf)])
	return op, buf, nil
}

func checkObject(row []byte) error {
	return eachMember(row, func([]byte, []byte) {})
}

// eachMember calls fn for every member of the JSON object in b with the
// member's decoded key and its raw bytes `"key":value` (without surrounding
// whitespace around the member). Keys are decoded only when they contain
// escapes. It returns ErrBadRow for anything that is not one JSON object.
func eachMember(b []byte, fn func(key, member []byte)) error {
	s := scanner{b: b}
	s.ws()
	if !s.eat('{') {
		return s.fail("expected '{'")
	}
	s.ws()
	if s.eat('}') {
		return s.end()
	}
	var keyBuf []byte
	for {
		s.ws()
		start := s.i
		key, err := s.str(&keyBuf)
		if err != nil {
			return err
		}
		s.ws()
		if !s.eat(':') {
			return s.fail("expected ':'")
		}
		s.ws()
		if err := s.value(0); err != nil {
			return err
		}
		fn(key, b[start:s.i])
		s.ws()
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			return s.end()
		}
		return s.fail("expected ',' or '}'")
	}
}

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 10000

type scanner struct {
	b []byte
	i int
}

func (s *scanner) fail(msg string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrBadRow, msg, s.i)
}

func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return s.fail("trailing data")
	}
	return nil
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// str scans a JSON string and returns its contents: a sub-slice of the input
// when it has no escapes, otherwise the decoded text in *buf.
func (s *scanner) str(buf *[]byte) ([]byte, error) {
	if !s.eat('"') {
		return nil, s.fail("expected string")
	}
	start := s.i
	escaped := false
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw := s.b[start:s.i]
			s.i++
			if !escaped {
				return raw, nil
			}
			var out string
			if err := json.Unmarshal(s.b[start-1:s.i], &out); err != nil {
				return nil, s.fail("bad string escape")
			}
			*buf = append((*buf)[:0], out...)
			return *buf, nil
		case c == '\\':
			escaped = true
			if !s.escape() {
				return nil, s.fail("bad string escape")
			}
		case c < 0x20:
			return nil, s.fail("control character in string")
		default:
			s.i++
		}
	}
	return nil, s.fail("unterminated string")
}

// escape checks the escape sequence at s.i (a backslash) and moves past it.
func (s *scanner) escape() bool {
	if s.i+1 >= len(s.b) {
		return false
	}
	switch s.b[s.i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i += 2
		return true
	case 'u':
		if s.i+6 > len(s.b) {
			return false
		}
		for _, h := range s.b[s.i+2 : s.i+6] {
			if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
				return false
			}
		}
		s.i += 6
		return true
	}
	return false
}

// value skips one JSON value.
func (s *scanner) value(depth int) error {
	if depth > maxDepth {
		return s.fail("nested too deeply")
	}
	if s.i >= len(s.b) {
		return s.fail("expected value")
	}
	switch c := s.b[s.i]; {
	case c == '"':
		var buf []byte
		_, err := s.str(&buf)
		return err
	case c == '{':
		s.i++
		s.ws()
		if s.eat('}') {
			return nil
		}
		var buf []byte
		for {
			s.ws()
			if _, err := s.str(&buf); err != nil {
				return err
			}
			s.ws()
			if !s.eat(':') {
				return s.fail("expected ':'")
			}
			s.ws()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if s.eat('}') {
				return nil
			}
			return s.fail("expected ',' or '}'")
		}
	case c == '[':
		s.i++
		s.ws()
		if s.eat(']') {
			return nil
		}
		for {
			s.ws()
			if err := s.value(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if s.eat(']') {
				return nil
			}
			return s.fail("expected ',' or ']'")
		}
	default:
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r', ':', '{', '[', '"':
				goto done
			}
			s.i++
		}
	done:
		if !json.Valid(s.b[start:s.i]) {
			return s.fail("bad literal")
		}
		return nil
	}
}

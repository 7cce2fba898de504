package writer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// jsonTypeOIDs are json and jsonb: values of these columns are passed as
// their raw JSON text.
func isJSONType(oid uint32) bool { return oid == 114 || oid == 3802 }

// textParam turns the JSON value given for a column into the text form
// Postgres parses for it (the statement casts $n::text to the column type).
// It returns nil for JSON null (SQL NULL). Strings pass as they are, numbers
// and booleans as their literal, JSON arrays become Postgres array literals
// for array columns, and json/jsonb columns take any JSON value as its text.
func textParam(col column, raw json.RawMessage) (*string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("column %q: empty value", col.name)
	}
	if string(raw) == "null" {
		return nil, nil
	}
	if isJSONType(col.typeOID) {
		if !json.Valid(raw) {
			return nil, fmt.Errorf("column %q: invalid JSON", col.name)
		}
		s := string(raw)
		return &s, nil
	}
	if s, ok := scalarText(raw); ok {
		return &s, nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("column %q: invalid JSON value", col.name)
	}
	switch x := v.(type) {
	case string:
		return &x, nil
	case json.Number:
		s := x.String()
		return &s, nil
	case bool:
		s := "false"
		if x {
			s = "true"
		}
		return &s, nil
	case []any:
		if !col.isArray {
			return nil, fmt.Errorf("column %q (%s): an array is not a valid value", col.name, col.cast)
		}
		var b strings.Builder
		if err := appendArrayLiteral(&b, x); err != nil {
			return nil, fmt.Errorf("column %q (%s): %w", col.name, col.cast, err)
		}
		s := b.String()
		return &s, nil
	default:
		return nil, fmt.Errorf("column %q (%s): an object is not a valid value", col.name, col.cast)
	}
}

// scalarText is textParam's fast path for the common values: a string
// without escapes, a number or a boolean, returned as textParam's general
// path would return them (ok false: take that path).
func scalarText(raw []byte) (string, bool) {
	switch c := raw[0]; {
	case c == '"':
		if bytes.IndexByte(raw, '\\') >= 0 || !utf8.Valid(raw) || !json.Valid(raw) {
			return "", false
		}
		return string(raw[1 : len(raw)-1]), true
	case c == '-' || ('0' <= c && c <= '9'):
		if !json.Valid(raw) {
			return "", false
		}
		return string(raw), true
	case string(raw) == "true" || string(raw) == "false":
		return string(raw), true
	}
	return "", false
}

// appendArrayLiteral writes a Postgres array literal ({a,"b c",NULL}) for a
// decoded JSON array. Nested arrays become nested dimensions.
func appendArrayLiteral(b *strings.Builder, arr []any) error {
	b.WriteByte('{')
	for i, e := range arr {
		if i > 0 {
			b.WriteByte(',')
		}
		switch x := e.(type) {
		case nil:
			b.WriteString("NULL")
		case string:
			quoteArrayElem(b, x)
		case json.Number:
			b.WriteString(x.String())
		case bool:
			if x {
				b.WriteString("true")
			} else {
				b.WriteString("false")
			}
		case []any:
			if err := appendArrayLiteral(b, x); err != nil {
				return err
			}
		default:
			// An object inside an array (json[] / jsonb[]): its JSON text.
			j, err := json.Marshal(x)
			if err != nil {
				return fmt.Errorf("array element: %w", err)
			}
			quoteArrayElem(b, string(j))
		}
	}
	b.WriteByte('}')
	return nil
}

func quoteArrayElem(b *strings.Builder, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
}

// decodeObject decodes a JSON object into its members, keeping each value
// raw (its exact bytes). Duplicate keys are an error (which one would win is
// unclear).
func decodeObject(raw json.RawMessage, what string) (map[string]json.RawMessage, []string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, nil, fmt.Errorf("%s must be a JSON object", what)
	}
	if !json.Valid(raw) {
		// Let encoding/json say what is wrong.
		var v any
		err := json.Unmarshal(raw, &v)
		if err == nil {
			err = errors.New("invalid JSON")
		}
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	// raw is one valid JSON object: walk its members.
	m := map[string]json.RawMessage{}
	var keys []string
	i := skipSpace(raw, 1)
	for raw[i] != '}' {
		end := stringEnd(raw, i)
		k, err := unquoteKey(raw[i:end])
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		i = skipSpace(raw, skipSpace(raw, end)+1) // past the colon
		end = valueEnd(raw, i)
		if _, dup := m[k]; dup {
			return nil, nil, fmt.Errorf("%s: duplicate key %q", what, k)
		}
		m[k] = raw[i:end:end]
		keys = append(keys, k)
		i = skipSpace(raw, end)
		if raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return m, keys, nil
}

// The helpers below walk JSON already known to be valid.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the string starting at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// valueEnd returns the index just past the value starting at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}

// unquoteKey decodes a JSON string (an object key) as encoding/json does.
func unquoteKey(q []byte) (string, error) {
	if bytes.IndexByte(q, '\\') < 0 && utf8.Valid(q) {
		return string(q[1 : len(q)-1]), nil
	}
	var k string
	err := json.Unmarshal(q, &k)
	return k, err
}

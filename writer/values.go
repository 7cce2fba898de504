package writer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
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
// raw. Duplicate keys are an error (which one would win is unclear).
func decodeObject(raw json.RawMessage, what string) (map[string]json.RawMessage, []string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, nil, fmt.Errorf("%s must be a JSON object", what)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	m := map[string]json.RawMessage{}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		k, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		if _, dup := m[k]; dup {
			return nil, nil, fmt.Errorf("%s: duplicate key %q", what, k)
		}
		m[k] = v
		keys = append(keys, k)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, fmt.Errorf("%s: trailing data after the object", what)
	}
	return m, keys, nil
}

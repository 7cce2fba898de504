package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// Row is one row as the gateway sends it: column name to value. Values are
// what encoding/json produces with UseNumber: string, json.Number, bool, nil,
// []any and map[string]any. Following the protocol, int8, numeric and xid8
// values are strings and int2/int4/float values are json.Number.
//
// Rows returned by a Subscription are shared, read-only values: do not
// modify them (copy with Clone first).
type Row map[string]any

// Clone returns a shallow copy of the row.
func (r Row) Clone() Row {
	if r == nil {
		return nil
	}
	return maps.Clone(r)
}

// ErrBadRow is returned for a row or key that is not a JSON object or lacks a
// primary key column.
var ErrBadRow = errors.New("client: malformed row")

// decodeRow decodes a JSON object into a Row, keeping numbers exact.
func decodeRow(b []byte) (Row, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var r Row
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRow, err)
	}
	if r == nil {
		return nil, fmt.Errorf("%w: not an object", ErrBadRow)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrBadRow)
	}
	return r, nil
}

// normalizeRow turns an application value (a Row, a map, a struct) into a Row
// holding the same values a gateway would send (numbers as json.Number).
func normalizeRow(v any) (Row, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRow, err)
	}
	return decodeRow(b)
}

// rowKey returns the canonical identity of a row: the JSON array of its
// primary key values in key order.
func rowKey(r Row, keyCols []string) (string, error) {
	vals := make([]any, len(keyCols))
	for i, c := range keyCols {
		v, ok := r[c]
		if !ok {
			return "", fmt.Errorf("%w: primary key column %q missing", ErrBadRow, c)
		}
		vals[i] = v
	}
	return keyOf(vals...)
}

// keyOf returns the canonical key of primary key values given in key order.
func keyOf(vals ...any) (string, error) {
	b, err := json.Marshal(vals)
	if err != nil {
		return "", fmt.Errorf("%w: key: %v", ErrBadRow, err)
	}
	return string(b), nil
}

// keyObject returns the primary key columns of a row as a Row.
func keyObject(r Row, keyCols []string) Row {
	k := make(Row, len(keyCols))
	for _, c := range keyCols {
		k[c] = r[c]
	}
	return k
}

// project returns r restricted to cols (plus the key columns); nil cols means
// every column.
func project(r Row, cols, keyCols []string) Row {
	if r == nil || cols == nil {
		return r
	}
	out := make(Row, len(cols)+len(keyCols))
	for _, c := range keyCols {
		if v, ok := r[c]; ok {
			out[c] = v
		}
	}
	for _, c := range cols {
		if v, ok := r[c]; ok {
			out[c] = v
		}
	}
	return out
}

// rowsEqual reports whether two rows hold the same values.
func rowsEqual(a, b Row) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || !valuesEqual(va, vb) {
			return false
		}
	}
	return true
}

func valuesEqual(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case json.Number:
		y, ok := b.(json.Number)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case nil:
		return b == nil
	case []any:
		y, ok := b.([]any)
		return ok && slices.EqualFunc(x, y, valuesEqual)
	case map[string]any:
		y, ok := b.(map[string]any)
		return ok && rowsEqual(x, y)
	default:
		ja, err1 := json.Marshal(a)
		jb, err2 := json.Marshal(b)
		return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
	}
}

// sortedKeys returns the keys of m in ascending order.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

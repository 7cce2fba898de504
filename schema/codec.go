package schema

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrBadValue is returned when a text-format value is not what its type's
// output function produces (a malformed number, boolean, JSON document or
// array).
var ErrBadValue = errors.New("schema: malformed value")

// appendValue appends the JSON encoding of the non-NULL text-format value v of
// kind k (elem is the element kind of arrays).
func appendValue(dst []byte, k, elem kind, v []byte) ([]byte, error) {
	switch k {
	case kindString:
		return appendJSONString(dst, v), nil
	case kindArray:
		return appendArray(dst, elem, v)
	default:
		return appendScalar(dst, k, v)
	}
}

// appendScalar appends the JSON encoding of the non-NULL text-format value v
// of the scalar kind k.
func appendScalar(dst []byte, k kind, v []byte) ([]byte, error) {
	switch k {
	case kindString:
		return appendJSONString(dst, v), nil
	case kindInt:
		if !isJSONInt(v) {
			return dst, badValue("integer", v)
		}
		return append(dst, v...), nil
	case kindFloat:
		if isJSONNumber(v) {
			return append(dst, v...), nil
		}
		switch string(v) {
		case "NaN", "Infinity", "-Infinity":
			dst = append(dst, '"')
			dst = append(dst, v...)
			return append(dst, '"'), nil
		}
		return dst, badValue("float", v)
	case kindBool:
		if len(v) == 1 {
			switch v[0] {
			case 't':
				return append(dst, "true"...), nil
			case 'f':
				return append(dst, "false"...), nil
			}
		}
		return dst, badValue("boolean", v)
	case kindJSON:
		if !json.Valid(v) {
			return dst, badValue("json", v)
		}
		if utf8.Valid(v) {
			return append(dst, v...), nil
		}
		// Invalid UTF-8 can only sit inside strings of a valid document
		// (a SQL_ASCII database); replace it as appendJSONString does.
		return appendReplacingInvalidUTF8(dst, v), nil
	}
	return dst, ErrUnsupportedType
}

func badValue(what string, v []byte) error {
	const max = 64
	s := v
	if len(s) > max {
		s = s[:max]
	}
	return fmt.Errorf("%w: not a %s: %q", ErrBadValue, what, s)
}

// isJSONInt reports whether v is -?(0|[1-9][0-9]*).
func isJSONInt(v []byte) bool {
	i := 0
	if len(v) > 0 && v[0] == '-' {
		i = 1
	}
	if i >= len(v) {
		return false
	}
	if v[i] == '0' {
		return i+1 == len(v)
	}
	for ; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// isJSONNumber reports whether v matches the JSON number grammar
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(v []byte) bool {
	i := 0
	n := len(v)
	if i < n && v[i] == '-' {
		i++
	}
	if i >= n {
		return false
	}
	if v[i] == '0' {
		i++
	} else if v[i] >= '1' && v[i] <= '9' {
		for i < n && v[i] >= '0' && v[i] <= '9' {
			i++
		}
	} else {
		return false
	}
	if i < n && v[i] == '.' {
		i++
		s := i
		for i < n && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		if i == s {
			return false
		}
	}
	if i < n && (v[i] == 'e' || v[i] == 'E') {
		i++
		if i < n && (v[i] == '+' || v[i] == '-') {
			i++
		}
		s := i
		for i < n && v[i] >= '0' && v[i] <= '9' {
			i++
		}
		if i == s {
			return false
		}
	}
	return i == n
}

// safeASCII marks the ASCII bytes that appear unescaped inside a JSON string.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Quotes, backslashes and control
// characters are escaped; invalid UTF-8 bytes become \ufffd, so the output is
// always valid UTF-8 and valid JSON.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendReplacingInvalidUTF8 appends v with every invalid UTF-8 byte replaced
// by U+FFFD.
func appendReplacingInvalidUTF8(dst, v []byte) []byte {
	for len(v) > 0 {
		r, size := utf8.DecodeRune(v)
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, v[:size]...)
		}
		v = v[size:]
	}
	return dst
}

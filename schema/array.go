package schema

import "fmt"

// maxArrayDims is PostgreSQL's MAXDIM: arrays have at most 6 dimensions.
const maxArrayDims = 6

// appendArray appends the JSON encoding of the Postgres array text s (as
// array_out prints it) whose elements are of kind elem: nested JSON arrays,
// one level per dimension, NULL elements as null, every other element encoded
// by its type's rule. A leading dimension decoration such as "[0:2]=" (printed
// when a lower bound is not 1) is checked and dropped: JSON arrays start at 0.
//
// The parser accepts exactly what array_out produces for element types whose
// delimiter is ',' and rejects anything else with ErrBadValue; it never reads
// past s and its recursion is bounded by maxArrayDims.
func appendArray(dst []byte, elem kind, s []byte) ([]byte, error) {
	p := arrayParser{s: s, elem: elem}
	dims := 0
	if len(s) > 0 && s[0] == '[' {
		var err error
		if dims, err = p.dimensions(); err != nil {
			return dst, err
		}
	}
	if p.i >= len(s) || s[p.i] != '{' {
		return dst, p.errorf("expected '{'")
	}
	dst, err := p.array(dst, 1)
	if err != nil {
		return dst, err
	}
	if p.i != len(s) {
		return dst, p.errorf("trailing characters")
	}
	if dims != 0 && dims != p.maxDepth {
		return dst, p.errorf(fmt.Sprintf("%d dimensions declared, %d found", dims, p.maxDepth))
	}
	return dst, nil
}

// ParseArray appends the JSON encoding of a Postgres text-format array of
// elemOID values to dst, the way AppendValue encodes a value of the array
// type. It exists for tests and tools; encoders use AppendValue/RowEncoder.
func (t *Types) ParseArray(dst []byte, elemOID uint32, text []byte) ([]byte, error) {
	ti, err := t.lookup(elemOID)
	if err != nil {
		return dst, err
	}
	if ti.kind == kindArray {
		return dst, fmt.Errorf("%w: element type %s is an array", ErrUnsupportedType, ti.name)
	}
	n := len(dst)
	out, err := appendArray(dst, ti.kind, text)
	if err != nil {
		return dst[:n], err
	}
	return out, nil
}

type arrayParser struct {
	s        []byte
	i        int
	elem     kind
	maxDepth int
	scratch  []byte // unescaped quoted element
}

func (p *arrayParser) errorf(msg string) error {
	return fmt.Errorf("%w: array: %s at offset %d", ErrBadValue, msg, p.i)
}

// dimensions parses "[lb:ub][lb:ub]...=" and returns the number of dimensions.
func (p *arrayParser) dimensions() (int, error) {
	n := 0
	for p.i < len(p.s) && p.s[p.i] == '[' {
		p.i++
		if !p.integer() {
			return 0, p.errorf("bad lower bound")
		}
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return 0, p.errorf("expected ':'")
		}
		p.i++
		if !p.integer() {
			return 0, p.errorf("bad upper bound")
		}
		if p.i >= len(p.s) || p.s[p.i] != ']' {
			return 0, p.errorf("expected ']'")
		}
		p.i++
		if n++; n > maxArrayDims {
			return 0, p.errorf("too many dimensions")
		}
	}
	if p.i >= len(p.s) || p.s[p.i] != '=' {
		return 0, p.errorf("expected '='")
	}
	p.i++
	return n, nil
}

// integer skips an optionally signed decimal of at most 10 digits.
func (p *arrayParser) integer() bool {
	if p.i < len(p.s) && (p.s[p.i] == '-' || p.s[p.i] == '+') {
		p.i++
	}
	start := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	return p.i > start && p.i-start <= 10
}

// array parses the '{...}' starting at p.i, at nesting level depth (1-based).
func (p *arrayParser) array(dst []byte, depth int) ([]byte, error) {
	if depth > maxArrayDims {
		return dst, p.errorf("too many dimensions")
	}
	if depth > p.maxDepth {
		p.maxDepth = depth
	}
	p.i++ // '{'
	dst = append(dst, '[')
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return append(dst, ']'), nil
	}
	// A level holds either sub-arrays or elements, never both.
	nested := p.i < len(p.s) && p.s[p.i] == '{'
	var err error
	for first := true; ; first = false {
		if !first {
			dst = append(dst, ',')
		}
		if p.i >= len(p.s) {
			return dst, p.errorf("unterminated array")
		}
		if nested {
			if p.s[p.i] != '{' {
				return dst, p.errorf("expected '{'")
			}
			if dst, err = p.array(dst, depth+1); err != nil {
				return dst, err
			}
		} else if dst, err = p.element(dst); err != nil {
			return dst, err
		}
		if p.i >= len(p.s) {
			return dst, p.errorf("unterminated array")
		}
		switch p.s[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return append(dst, ']'), nil
		default:
			return dst, p.errorf("expected ',' or '}'")
		}
	}
}

// element parses one element (quoted, NULL or unquoted) starting at p.i and
// appends its encoding.
func (p *arrayParser) element(dst []byte) ([]byte, error) {
	s := p.s
	if s[p.i] == '"' {
		p.i++
		start := p.i
		escaped := false
		for {
			if p.i >= len(s) {
				return dst, p.errorf("unterminated quoted element")
			}
			c := s[p.i]
			if c == '"' {
				break
			}
			if c == '\\' {
				escaped = true
				if p.i++; p.i >= len(s) {
					return dst, p.errorf("unterminated quoted element")
				}
			}
			p.i++
		}
		v := s[start:p.i]
		p.i++ // closing quote
		if escaped {
			p.scratch = unescapeArrayElement(p.scratch[:0], v)
			v = p.scratch
		}
		return p.scalar(dst, v)
	}
	start := p.i
	for p.i < len(s) {
		c := s[p.i]
		if c == ',' || c == '}' {
			break
		}
		if c == '"' || c == '{' || c == '\\' {
			return dst, p.errorf(fmt.Sprintf("unexpected %q in unquoted element", c))
		}
		p.i++
	}
	v := s[start:p.i]
	if len(v) == 0 {
		return dst, p.errorf("empty unquoted element")
	}
	if isNULL(v) {
		return append(dst, "null"...), nil
	}
	return p.scalar(dst, v)
}

func (p *arrayParser) scalar(dst []byte, v []byte) ([]byte, error) {
	out, err := appendScalar(dst, p.elem, v)
	if err != nil {
		return dst, fmt.Errorf("array element at offset %d: %w", p.i, err)
	}
	return out, nil
}

// isNULL reports whether v is "NULL" in any case (array_in's rule; array_out
// quotes any element that would read as NULL).
func isNULL(v []byte) bool {
	return len(v) == 4 && v[0]|0x20 == 'n' && v[1]|0x20 == 'u' && v[2]|0x20 == 'l' && v[3]|0x20 == 'l'
}

// unescapeArrayElement appends v with every backslash escape "\c" replaced by c.
func unescapeArrayElement(dst, v []byte) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			i++
		}
		dst = append(dst, v[i])
	}
	return dst
}

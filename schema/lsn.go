package schema

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadLSN is returned when a string is not an LSN of the form "X/X".
var ErrBadLSN = errors.New("schema: malformed LSN")

// ErrBadXID is returned when a string is not a decimal xid8.
var ErrBadXID = errors.New("schema: malformed xid8")

// LSN is a PostgreSQL write-ahead log position. Everywhere in Ripple "the LSN
// of a commit" is its end LSN (pgoutput's Commit TransactionEndLSN).
// It marshals to JSON as the string Postgres prints, e.g. "0/16B3748".
type LSN uint64

// ParseLSN parses the Postgres text form "XXXXXXXX/XXXXXXXX".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("%w: %q", ErrBadLSN, s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrBadLSN, s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrBadLSN, s)
	}
	return LSN(h<<32 | l), nil
}

// String returns the Postgres text form of the LSN.
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l))
}

// MarshalText implements encoding.TextMarshaler.
func (l LSN) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (l *LSN) UnmarshalText(b []byte) error {
	v, err := ParseLSN(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// XID8 is a 64-bit PostgreSQL transaction id (pg_current_xact_id()). It
// marshals to JSON as a decimal string.
type XID8 uint64

// ParseXID8 parses a decimal xid8.
func ParseXID8(s string) (XID8, error) {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q", ErrBadXID, s)
	}
	return XID8(v), nil
}

// String returns the decimal form.
func (x XID8) String() string { return strconv.FormatUint(uint64(x), 10) }

// MarshalText implements encoding.TextMarshaler.
func (x XID8) MarshalText() ([]byte, error) { return []byte(x.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (x *XID8) UnmarshalText(b []byte) error {
	v, err := ParseXID8(string(b))
	if err != nil {
		return err
	}
	*x = v
	return nil
}

package ingest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unsafe"
)

// ErrMalformed is returned (wrapped) by the decoder for any replication
// message it cannot parse. The replication session is torn down and resumed
// from the slot's confirmed position.
var ErrMalformed = errors.New("ingest: malformed replication message")

// Kinds of decoded messages. The pgoutput kinds use the protocol's own
// message bytes; kindKeepalive is the walsender's primary keepalive.
const (
	kindKeepalive byte = 'k'
	kindBegin     byte = 'B'
	kindCommit    byte = 'C'
	kindOrigin    byte = 'O'
	kindRelation  byte = 'R'
	kindType      byte = 'Y'
	kindInsert    byte = 'I'
	kindUpdate    byte = 'U'
	kindDelete    byte = 'D'
	kindTruncate  byte = 'T'
	kindMessage   byte = 'M'
)

// Tuple column kinds (pgoutput TupleData).
const (
	colNull      byte = 'n'
	colUnchanged byte = 'u' // unchanged TOASTed value, not sent
	colText      byte = 't'
	colBinary    byte = 'b'
)

// pgEpoch is the Postgres timestamp epoch (2000-01-01 UTC).
var pgEpochUnix = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// tupleCol is one column of a decoded tuple. Data aliases the message's own
// copy of the CopyData payload.
type tupleCol struct {
	Kind byte
	Data []byte
}

// relColumn is one column of a Relation message.
type relColumn struct {
	Key     bool
	Name    string
	TypeOID uint32
	TypMod  int32
}

// relation is a decoded Relation message.
type relation struct {
	ID        uint32
	Namespace string
	Name      string
	Identity  byte
	Columns   []relColumn
}

// walMessage is one decoded replication message: a keepalive or one
// pgoutput message carried in an XLogData frame. Which fields are set depends
// on Kind.
// footprint estimates the memory a decoded message holds: raw bytes of
// the message it aliases, plus the message and its column slices. (Counting
// only raw bytes let a reader that ran ahead of a starved main loop queue
// several times its budget: a row of a few short columns decodes into
// objects larger than its bytes.)
func (m *walMessage) footprint(raw int) int64 {
	return int64(raw) + int64(unsafe.Sizeof(*m)) + int64(len(m.Old)+len(m.New))*int64(unsafe.Sizeof(tupleCol{}))
}

type walMessage struct {
	Kind byte

	// WALStart is the XLogData start position; WALEnd the server's WAL end
	// (XLogData and keepalive).
	WALStart uint64
	WALEnd   uint64
	// ReplyRequested is set on keepalives that ask for a status update now.
	ReplyRequested bool

	// Begin / Commit.
	XID        uint32
	FinalLSN   uint64 // Begin: the commit's end LSN as announced by BEGIN
	CommitLSN  uint64 // Commit: the commit record's LSN
	EndLSN     uint64 // Commit: TransactionEndLSN, THE LSN of the commit (rule 0)
	CommitTime time.Time

	// Relation.
	Rel *relation

	// Insert / Update / Delete.
	RelID   uint32
	OldKind byte // 0, 'K' or 'O'
	Old     []tupleCol
	New     []tupleCol

	// Truncate.
	TruncateOptions byte
	RelIDs          []uint32

	// Origin / Type / Message carry nothing the ingest uses.
}

// decodeCopyData decodes the payload of one CopyData message received in
// replication mode ('w' XLogData or 'k' primary keepalive). The returned
// message aliases buf: the caller must pass a buffer it owns. Malformed
// input yields an error wrapping ErrMalformed, never a panic.
func decodeCopyData(buf []byte) (*walMessage, error) {
	if len(buf) == 0 {
		return nil, fmt.Errorf("%w: empty CopyData", ErrMalformed)
	}
	r := reader{b: buf[1:]}
	switch buf[0] {
	case 'k':
		m := &walMessage{Kind: kindKeepalive}
		m.WALEnd = r.u64()
		_ = r.u64() // server time
		m.ReplyRequested = r.u8() != 0
		if r.err != nil || len(r.b) != 0 {
			return nil, fmt.Errorf("%w: keepalive of %d bytes", ErrMalformed, len(buf))
		}
		return m, nil
	case 'w':
		start := r.u64()
		end := r.u64()
		_ = r.u64() // server time
		if r.err != nil {
			return nil, fmt.Errorf("%w: short XLogData header", ErrMalformed)
		}
		m, err := decodePgoutput(r.b)
		if err != nil {
			return nil, err
		}
		m.WALStart, m.WALEnd = start, end
		return m, nil
	default:
		return nil, fmt.Errorf("%w: unknown CopyData type %q", ErrMalformed, buf[0])
	}
}

// decodePgoutput decodes one pgoutput (protocol version 1) message.
func decodePgoutput(b []byte) (*walMessage, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty pgoutput message", ErrMalformed)
	}
	m := &walMessage{Kind: b[0]}
	r := reader{b: b[1:]}
	switch m.Kind {
	case kindBegin:
		m.FinalLSN = r.u64()
		m.CommitTime = r.time()
		m.XID = r.u32()
	case kindCommit:
		_ = r.u8() // flags, unused
		m.CommitLSN = r.u64()
		m.EndLSN = r.u64()
		m.CommitTime = r.time()
	case kindOrigin:
		_ = r.u64()
		_ = r.str()
	case kindRelation:
		rel := &relation{}
		rel.ID = r.u32()
		rel.Namespace = r.str()
		rel.Name = r.str()
		rel.Identity = r.u8()
		n := int(r.u16())
		if r.err == nil && n > len(r.b)/10 { // each column takes >= 10 bytes
			return nil, fmt.Errorf("%w: relation claims %d columns in %d bytes", ErrMalformed, n, len(r.b))
		}
		rel.Columns = make([]relColumn, 0, n)
		for i := 0; i < n && r.err == nil; i++ {
			var c relColumn
			c.Key = r.u8()&1 == 1
			c.Name = r.str()
			c.TypeOID = r.u32()
			c.TypMod = int32(r.u32())
			rel.Columns = append(rel.Columns, c)
		}
		m.Rel = rel
	case kindType:
		_ = r.u32()
		_ = r.str()
		_ = r.str()
	case kindInsert:
		m.RelID = r.u32()
		if t := r.u8(); r.err == nil && t != 'N' {
			return nil, fmt.Errorf("%w: insert tuple type %q", ErrMalformed, t)
		}
		m.New = r.tuple()
	case kindUpdate:
		m.RelID = r.u32()
		t := r.u8()
		if r.err == nil && (t == 'K' || t == 'O') {
			m.OldKind = t
			m.Old = r.tuple()
			t = r.u8()
		}
		if r.err == nil && t != 'N' {
			return nil, fmt.Errorf("%w: update tuple type %q", ErrMalformed, t)
		}
		m.New = r.tuple()
	case kindDelete:
		m.RelID = r.u32()
		t := r.u8()
		if r.err == nil && t != 'K' && t != 'O' {
			return nil, fmt.Errorf("%w: delete tuple type %q", ErrMalformed, t)
		}
		m.OldKind = t
		m.Old = r.tuple()
	case kindTruncate:
		n := r.u32()
		m.TruncateOptions = r.u8()
		if r.err == nil && uint64(n)*4 != uint64(len(r.b)) {
			return nil, fmt.Errorf("%w: truncate of %d relations in %d bytes", ErrMalformed, n, len(r.b))
		}
		m.RelIDs = make([]uint32, 0, n)
		for i := uint32(0); i < n && r.err == nil; i++ {
			m.RelIDs = append(m.RelIDs, r.u32())
		}
	case kindMessage:
		_ = r.u8()
		_ = r.u64()
		_ = r.str()
		n := r.u32()
		_ = r.bytes(int(n))
	default:
		return nil, fmt.Errorf("%w: unknown pgoutput message %q", ErrMalformed, m.Kind)
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %q message: %v", ErrMalformed, m.Kind, r.err)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %q message has %d trailing bytes", ErrMalformed, m.Kind, len(r.b))
	}
	return m, nil
}

var errShort = errors.New("message too short")

// reader is a bounds-checked big-endian reader; after the first error every
// read returns zero values and err stays set.
type reader struct {
	b   []byte
	err error
}

func (r *reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.b) < n {
		r.err = errShort
		return false
	}
	return true
}

func (r *reader) u8() byte {
	if !r.need(1) {
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) time() time.Time {
	us := int64(r.u64())
	return time.Unix(pgEpochUnix+us/1e6, (us%1e6)*1e3).UTC()
}

func (r *reader) bytes(n int) []byte {
	if !r.need(n) {
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// str reads a NUL-terminated string.
func (r *reader) str() string {
	if r.err != nil {
		return ""
	}
	for i, c := range r.b {
		if c == 0 {
			s := string(r.b[:i])
			r.b = r.b[i+1:]
			return s
		}
	}
	r.err = errors.New("unterminated string")
	return ""
}

// tuple reads a TupleData.
func (r *reader) tuple() []tupleCol {
	n := int(r.u16())
	if r.err != nil {
		return nil
	}
	if n > len(r.b) { // each column takes at least one byte
		r.err = fmt.Errorf("tuple claims %d columns in %d bytes", n, len(r.b))
		return nil
	}
	cols := make([]tupleCol, n)
	for i := range cols {
		k := r.u8()
		switch k {
		case colNull, colUnchanged:
		case colText, colBinary:
			l := r.u32()
			if r.err == nil && uint64(l) > uint64(len(r.b)) {
				r.err = fmt.Errorf("column %d claims %d bytes, %d left", i, l, len(r.b))
			}
			cols[i].Data = r.bytes(int(l))
		default:
			if r.err == nil {
				r.err = fmt.Errorf("column %d has unknown kind %q", i, k)
			}
		}
		if r.err != nil {
			return nil
		}
		cols[i].Kind = k
	}
	return cols
}

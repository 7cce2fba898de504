package ingest

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// Builders of replication messages in the exact wire format the walsender
// and pgoutput (protocol version 1) produce.

func be16(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }
func be32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
func be64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func cstr(b []byte, s string) []byte { return append(append(b, s...), 0) }

func xlog(start, end uint64, body []byte) []byte {
	b := be64(be64(be64([]byte{'w'}, start), end), 0x2b5c7e1d3a40)
	return append(b, body...)
}

func keepalive(end uint64, reply bool) []byte {
	b := be64(be64([]byte{'k'}, end), 0x2b5c7e1d3a40)
	if reply {
		return append(b, 1)
	}
	return append(b, 0)
}

func beginMsg(final uint64, xid uint32) []byte {
	return be32(be64(be64([]byte{'B'}, final), 784000000000000), xid)
}

func commitMsg(lsn, end uint64) []byte {
	return be64(be64(be64([]byte{'C', 0}, lsn), end), 784000000000000)
}

func relationMsg(id uint32, nsp, name string, cols ...relColumn) []byte {
	b := cstr(cstr(be32([]byte{'R'}, id), nsp), name)
	b = be16(append(b, 'f'), uint16(len(cols)))
	for _, c := range cols {
		flag := byte(0)
		if c.Key {
			flag = 1
		}
		b = be32(be32(cstr(append(b, flag), c.Name), c.TypeOID), uint32(c.TypMod))
	}
	return b
}

// tupleBytes encodes a TupleData; a nil value is NULL, "\x00u" marks an
// unchanged TOAST value.
func tupleBytes(vals ...[]byte) []byte {
	b := be16(nil, uint16(len(vals)))
	for _, v := range vals {
		switch {
		case v == nil:
			b = append(b, 'n')
		case string(v) == "\x00u":
			b = append(b, 'u')
		default:
			b = append(be32(append(b, 't'), uint32(len(v))), v...)
		}
	}
	return b
}

func insertMsg(rel uint32, vals ...[]byte) []byte {
	return append(append(be32([]byte{'I'}, rel), 'N'), tupleBytes(vals...)...)
}

func updateMsg(rel uint32, old, new [][]byte) []byte {
	b := be32([]byte{'U'}, rel)
	if old != nil {
		b = append(append(b, 'O'), tupleBytes(old...)...)
	}
	return append(append(b, 'N'), tupleBytes(new...)...)
}

func deleteMsg(rel uint32, old ...[]byte) []byte {
	return append(append(be32([]byte{'D'}, rel), 'O'), tupleBytes(old...)...)
}

func truncateMsg(rels ...uint32) []byte {
	b := append(be32([]byte{'T'}, uint32(len(rels))), 0)
	for _, r := range rels {
		b = be32(b, r)
	}
	return b
}

func seedMessages() [][]byte {
	cols := []relColumn{{Key: true, Name: "org_id", TypeOID: 25, TypMod: -1}, {Key: true, Name: "id", TypeOID: 20, TypMod: -1},
		{Name: "title", TypeOID: 25, TypMod: -1}, {Name: "ripple_xid", TypeOID: 5069, TypMod: -1}}
	row := [][]byte{[]byte("acme"), []byte("1"), []byte("hello"), []byte("745")}
	row2 := [][]byte{[]byte("acme"), []byte("1"), []byte("\x00u"), []byte("746")}
	return [][]byte{
		keepalive(0x16B3748, true),
		keepalive(0x16B3748, false),
		xlog(1, 2, beginMsg(0x16B3700, 745)),
		xlog(1, 2, commitMsg(0x16B3700, 0x16B3748)),
		xlog(1, 2, relationMsg(16384, "public", "todos", cols...)),
		xlog(1, 2, insertMsg(16384, row...)),
		xlog(1, 2, updateMsg(16384, row, row2)),
		xlog(1, 2, updateMsg(16384, nil, row)),
		xlog(1, 2, deleteMsg(16384, row...)),
		xlog(1, 2, insertMsg(16384, nil, []byte{}, []byte("x"))),
		xlog(1, 2, truncateMsg(16384, 16385)),
		xlog(1, 2, cstr(be64([]byte{'O'}, 7), "origin")),
		xlog(1, 2, cstr(cstr(be32([]byte{'Y'}, 99999), "public"), "mood")),
		xlog(1, 2, append(be32(cstr(be64([]byte{'M', 1}, 9), "prefix"), 3), "abc"...)),
	}
}

func TestDecode(t *testing.T) {
	seeds := seedMessages()
	tests := []struct {
		name  string
		in    []byte
		check func(*walMessage) bool
	}{
		{"keepalive", seeds[0], func(m *walMessage) bool { return m.Kind == kindKeepalive && m.WALEnd == 0x16B3748 && m.ReplyRequested }},
		{"begin", seeds[2], func(m *walMessage) bool {
			return m.Kind == kindBegin && m.XID == 745 && m.FinalLSN == 0x16B3700 &&
				m.CommitTime.Equal(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).Add(784000000000000*time.Microsecond))
		}},
		{"commit", seeds[3], func(m *walMessage) bool {
			return m.Kind == kindCommit && m.EndLSN == 0x16B3748 && m.CommitLSN == 0x16B3700
		}},
		{"relation", seeds[4], func(m *walMessage) bool {
			return m.Rel.ID == 16384 && m.Rel.Namespace == "public" && m.Rel.Name == "todos" && len(m.Rel.Columns) == 4 &&
				m.Rel.Columns[1].Name == "id" && m.Rel.Columns[1].TypeOID == 20 && m.Rel.Columns[1].Key && !m.Rel.Columns[2].Key
		}},
		{"insert", seeds[5], func(m *walMessage) bool {
			return m.RelID == 16384 && len(m.New) == 4 && string(m.New[2].Data) == "hello" && m.New[2].Kind == colText
		}},
		{"update with unchanged toast", seeds[6], func(m *walMessage) bool {
			return m.OldKind == 'O' && len(m.Old) == 4 && m.New[2].Kind == colUnchanged && string(m.New[3].Data) == "746"
		}},
		{"update without old", seeds[7], func(m *walMessage) bool { return m.OldKind == 0 && m.Old == nil && len(m.New) == 4 }},
		{"delete", seeds[8], func(m *walMessage) bool { return m.Kind == kindDelete && m.OldKind == 'O' && len(m.Old) == 4 }},
		{"null and empty", seeds[9], func(m *walMessage) bool {
			return m.New[0].Kind == colNull && m.New[1].Kind == colText && m.New[1].Data != nil && len(m.New[1].Data) == 0
		}},
		{"truncate", seeds[10], func(m *walMessage) bool { return len(m.RelIDs) == 2 && m.RelIDs[1] == 16385 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeCopyData(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(m) {
				t.Fatalf("unexpected decode: %+v", m)
			}
		})
	}
	bad := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"unknown copydata", []byte{'x', 1}},
		{"short keepalive", keepalive(1, false)[:10]},
		{"long keepalive", append(keepalive(1, false), 0)},
		{"short xlog header", xlog(1, 2, nil)[:20]},
		{"empty pgoutput", xlog(1, 2, nil)},
		{"unknown pgoutput", xlog(1, 2, []byte{'Z'})},
		{"truncated begin", xlog(1, 2, beginMsg(1, 2)[:10])},
		{"trailing bytes", xlog(1, 2, append(commitMsg(1, 2), 0))},
		{"unterminated string", xlog(1, 2, []byte{'R', 0, 0, 0, 1, 'p', 'u', 'b'})},
		{"column count too large", xlog(1, 2, append(be32([]byte{'I'}, 1), 'N', 0xff, 0xff, 'n'))},
		{"column length too large", xlog(1, 2, append(be32([]byte{'I'}, 1), 'N', 0, 1, 't', 0x7f, 0xff, 0xff, 0xff, 'a'))},
		{"bad column kind", xlog(1, 2, append(be32([]byte{'I'}, 1), 'N', 0, 1, 'q'))},
		{"bad insert tuple type", xlog(1, 2, append(be32([]byte{'I'}, 1), 'X', 0, 0))},
		{"bad delete tuple type", xlog(1, 2, append(be32([]byte{'D'}, 1), 'N', 0, 0))},
		{"truncate count mismatch", xlog(1, 2, append(be32([]byte{'T'}, 1000), 0, 0, 0, 0, 1))},
		{"relation claims too many columns", xlog(1, 2, append(cstr(cstr(be32([]byte{'R'}, 1), "a"), "b"), 'f', 0xff, 0xff))},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeCopyData(tt.in); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

// FuzzDecode: arbitrary bytes give an error or a message, never a panic.
func FuzzDecode(f *testing.F) {
	for _, s := range seedMessages() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeCopyData(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if m == nil {
			t.Fatal("nil message without error")
		}
	})
}

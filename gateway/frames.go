package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// errBadFrame is wrapped by DecodeClientFrame for every rejected frame.
var errBadFrame = errors.New("bad frame")

const (
	maxIDLen       = 256
	maxNameLen     = 1024
	maxColumns     = 1600
	maxClientIDLen = 256
)

// DecodeClientFrame parses one client frame and checks that the fields its
// type needs are present and well formed. Unknown fields are ignored; an
// unknown type, malformed JSON or a missing field is an error (protocol
// code bad_frame).
func DecodeClientFrame(b []byte) (schema.ClientFrame, error) {
	var f schema.ClientFrame
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return f, fmt.Errorf("%w: not a JSON object", errBadFrame)
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return schema.ClientFrame{}, fmt.Errorf("%w: %v", errBadFrame, err)
	}
	bad := func(format string, a ...any) (schema.ClientFrame, error) {
		return schema.ClientFrame{}, fmt.Errorf("%w: "+format, append([]any{errBadFrame}, a...)...)
	}
	if len(f.ID) > maxIDLen {
		return bad("id longer than %d bytes", maxIDLen)
	}
	switch f.Type {
	case schema.FrameAuth:
		if f.Token == "" {
			return bad("auth without token")
		}
	case schema.FrameSubscribe:
		switch {
		case f.ID == "":
			return bad("subscribe without id")
		case f.Table == "" || len(f.Table) > maxNameLen:
			return bad("subscribe without table")
		case f.Org == "" || len(f.Org) > maxNameLen:
			return bad("subscribe without org")
		case len(f.Columns) > maxColumns:
			return bad("too many columns")
		case f.Cursor == nil && f.LSN != nil:
			return bad("lsn without cursor")
		}
		for _, c := range f.Columns {
			if c == "" {
				return bad("empty column name")
			}
		}
	case schema.FrameUnsubscribe:
		if f.ID == "" {
			return bad("unsubscribe without id")
		}
	case schema.FramePing:
	case schema.FrameMutate:
		switch {
		case f.ClientID == "" || len(f.ClientID) > maxClientIDLen:
			return bad("mutate without client_id")
		case f.MutationID <= 0:
			return bad("mutate needs a positive mutation_id")
		case f.Mutator == "" || len(f.Mutator) > maxNameLen:
			return bad("mutate without mutator")
		}
		if len(f.Args) == 0 {
			f.Args = json.RawMessage("{}")
		}
	case "":
		return bad("missing type")
	default:
		return bad("unknown type %q", f.Type)
	}
	return f, nil
}

// Frame encoders. Frames are built by hand: they are on the hot path and
// their shapes are fixed (they decode to schema.ServerFrame).

func appendStr(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // strings never fail
	return append(b, q...)
}

func appendField(b []byte, name, val string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendStr(b, val)
}

func frameStart(typ string) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	return append(b, '"')
}

// encodePart builds a part frame from a raw part (id "" for the shared
// frame) with ops as given.
func encodePart(id string, p *schema.RawPart, ops []byte) []byte {
	b := make([]byte, 0, 96+len(p.Table)+len(p.Org)+len(ops))
	b = append(b, `{"type":"part"`...)
	if id != "" {
		b = appendField(b, "id", id)
	}
	b = appendField(b, "table", p.Table)
	b = appendField(b, "org", p.Org)
	b = append(b, `,"xid":"`...)
	b = strconv.AppendUint(b, uint64(p.XID), 10)
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, int64(p.Seq), 10)
	if p.Last {
		b = append(b, `,"last":true`...)
	}
	b = append(b, `,"ops":`...)
	if len(ops) == 0 {
		ops = []byte("[]")
	}
	b = append(b, ops...)
	return append(b, '}')
}

// encodeCommit builds a commit frame; id is set for commits that complete a
// subscription's catch-up.
func encodeCommit(id string, xid schema.XID8, lsn schema.LSN, t time.Time, confirmed []int64) []byte {
	b := frameStart(schema.FrameCommit)
	if id != "" {
		b = appendField(b, "id", id)
	}
	b = append(b, `,"xid":"`...)
	b = strconv.AppendUint(b, uint64(xid), 10)
	b = append(b, `","lsn":"`...)
	b = append(b, lsn.String()...)
	b = append(b, '"')
	if !t.IsZero() {
		b = append(b, `,"time":"`...)
		b = t.UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if len(confirmed) > 0 {
		b = append(b, `,"confirmed":[`...)
		for i, c := range confirmed {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, c, 10)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// encodeCheckpoint builds a checkpoint frame; lsn and cursor are the
// checkpoint's LSN and cursor as strings (shared by every subscription).
func encodeCheckpoint(id, lsn, cursor string) []byte {
	b := make([]byte, 0, 64+len(id)+len(lsn)+len(cursor))
	b = append(b, `{"type":"checkpoint"`...)
	if id != "" {
		b = appendField(b, "id", id)
	}
	b = append(b, `,"lsn":"`...)
	b = append(b, lsn...)
	b = append(b, `","cursor":"`...)
	b = append(b, cursor...)
	return append(b, `"}`...)
}

// encodeSnapshot builds a snapshot batch frame.
func encodeSnapshot(id string, ops []schema.Op) []byte {
	n := 64
	for _, op := range ops {
		n += len(op.Row) + len(op.Key) + 24
	}
	b := make([]byte, 0, n)
	b = append(b, `{"type":"snapshot"`...)
	b = appendField(b, "id", id)
	b = append(b, `,"ops":`...)
	b = appendOps(b, ops)
	return append(b, '}')
}

func appendOps(b []byte, ops []schema.Op) []byte {
	b = append(b, '[')
	for i, op := range ops {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"op":"`...)
		b = append(b, op.Op...)
		b = append(b, '"')
		if op.Row != nil {
			b = append(b, `,"row":`...)
			b = append(b, op.Row...)
		}
		if op.Key != nil {
			b = append(b, `,"key":`...)
			b = append(b, op.Key...)
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

// encodeFrame marshals a generic server frame (rare frames: errors, ready,
// checkpoints...).
func encodeFrame(f schema.ServerFrame) []byte {
	b, err := json.Marshal(f)
	if err != nil {
		// Only Result could fail, and it comes from a writer as valid JSON.
		f.Result = nil
		b, _ = json.Marshal(f)
	}
	return b
}

func errorFrame(id, code, msg string) []byte {
	return encodeFrame(schema.ServerFrame{Type: schema.FrameError, ID: id, Code: code, Message: msg})
}

func xidPtr(x schema.XID8) *schema.XID8 { return &x }

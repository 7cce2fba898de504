package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ripple-sync/ripple/schema"
)

// ErrBadFrame is returned for a server frame that does not follow the
// protocol. The client drops the connection on such a frame and resumes by
// cursor on a fresh one.
var ErrBadFrame = errors.New("client: malformed server frame")

// decodeServerFrame decodes and validates one server frame. Rows inside ops
// are checked to be JSON objects; they are decoded into Rows when applied.
func decodeServerFrame(b []byte) (*schema.ServerFrame, error) {
	var f schema.ServerFrame
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if err := validateServerFrame(&f); err != nil {
		return nil, err
	}
	return &f, nil
}

func validateServerFrame(f *schema.ServerFrame) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrBadFrame, f.Type, fmt.Sprintf(format, args...))
	}
	switch f.Type {
	case schema.FrameAuthOK, schema.FramePong, schema.FrameUnsubscribed:
	case schema.FrameSnapshotBegin:
		if f.ID == "" {
			return bad("missing id")
		}
		if f.Mode != schema.SnapshotFull && f.Mode != schema.SnapshotResume {
			return bad("mode %q", f.Mode)
		}
		for _, k := range f.Key {
			if k == "" {
				return bad("empty key column")
			}
		}
	case schema.FrameSnapshot:
		if f.ID == "" {
			return bad("missing id")
		}
		if err := validateOps(f.Ops); err != nil {
			return bad("%v", err)
		}
	case schema.FrameReady:
		if f.ID == "" {
			return bad("missing id")
		}
		if f.Cursor == nil {
			return bad("missing cursor")
		}
	case schema.FrameCheckpoint:
		if f.ID == "" {
			return bad("missing id")
		}
		if f.Cursor == nil || f.LSN == 0 {
			return bad("missing lsn or cursor")
		}
	case schema.FramePart:
		if f.Table == "" || f.Org == "" {
			return bad("missing table or org")
		}
		if f.XID == 0 {
			return bad("missing xid")
		}
		if f.Seq < 0 {
			return bad("negative seq")
		}
		if err := validateOps(f.Ops); err != nil {
			return bad("%v", err)
		}
	case schema.FrameCommit:
		if f.XID == 0 || f.LSN == 0 {
			return bad("missing xid or lsn")
		}
	case schema.FrameResync:
		if f.ID == "" {
			return bad("missing id")
		}
	case schema.FrameError:
		if f.Code == "" {
			return bad("missing code")
		}
	case schema.FrameMutation:
		if f.MutationID <= 0 {
			return bad("missing mutation_id")
		}
		if f.Status != schema.MutationApplied && f.Status != schema.MutationRejected {
			return bad("status %q", f.Status)
		}
	case "":
		return fmt.Errorf("%w: missing type", ErrBadFrame)
	default:
		return fmt.Errorf("%w: unknown type %q", ErrBadFrame, f.Type)
	}
	return nil
}

func validateOps(ops []schema.Op) error {
	for i, op := range ops {
		var body json.RawMessage
		switch op.Op {
		case schema.OpInsert, schema.OpUpdate:
			body = op.Row
		case schema.OpDelete:
			body = op.Key
		default:
			return fmt.Errorf("op %d: unknown op %q", i, op.Op)
		}
		b := bytes.TrimLeft(body, " \t\r\n")
		if len(b) == 0 || b[0] != '{' {
			return fmt.Errorf("op %d: %s without an object", i, op.Op)
		}
	}
	return nil
}

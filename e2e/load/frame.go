package load

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Frame is what the load generator needs from one server frame.
type Frame struct {
	Type    string
	ID      string
	Code    string
	Message string
	Reason  string
	// Mode is a snapshot_begin frame's mode.
	Mode string
	// Time is a commit frame's commit timestamp (zero when absent).
	Time time.Time
	// Ops is the number of operations of a snapshot frame.
	Ops int
}

// ErrBadFrame is returned by ParseFrame for bytes that are not a server frame.
var ErrBadFrame = errors.New("load: bad server frame")

var (
	prefixCommit = []byte(`{"type":"commit"`)
	prefixPart   = []byte(`{"type":"part"`)
	keyTime      = []byte(`,"time":"`)
	// prefixSnapshot starts a snapshot frame as the gateway writes it.
	prefixSnapshot = []byte(`{"type":"snapshot",`)
)

type wireFrame struct {
	Type    string            `json:"type"`
	ID      string            `json:"id"`
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Reason  string            `json:"reason"`
	Mode    string            `json:"mode"`
	Time    string            `json:"time"`
	Ops     []json.RawMessage `json:"ops"`
}

// ParseFrame reads a server frame. Commit and part frames as the gateway
// writes them (type first) take a fast path that reads only the type and
// the commit time; every other frame is decoded as JSON.
func ParseFrame(b []byte) (Frame, error) {
	if bytes.HasPrefix(b, prefixPart) && len(b) > len(prefixPart) && b[len(prefixPart)] == ',' {
		return Frame{Type: "part"}, nil
	}
	if bytes.HasPrefix(b, prefixCommit) && len(b) > len(prefixCommit) && b[len(prefixCommit)] == ',' {
		if i := bytes.Index(b, keyTime); i >= 0 {
			rest := b[i+len(keyTime):]
			if j := bytes.IndexByte(rest, '"'); j > 0 && bytes.IndexByte(rest[:j], '\\') < 0 {
				if t, err := time.Parse(time.RFC3339Nano, string(rest[:j])); err == nil {
					return Frame{Type: "commit", Time: t}, nil
				}
			}
		}
	}
	var w wireFrame
	if err := json.Unmarshal(b, &w); err != nil {
		return Frame{}, fmt.Errorf("%w: %v", ErrBadFrame, err)
	}
	if w.Type == "" {
		return Frame{}, fmt.Errorf("%w: no type", ErrBadFrame)
	}
	f := Frame{Type: w.Type, ID: w.ID, Code: w.Code, Message: w.Message, Reason: w.Reason, Mode: w.Mode, Ops: len(w.Ops)}
	if w.Type == "commit" && w.Time != "" {
		t, err := time.Parse(time.RFC3339Nano, w.Time)
		if err != nil {
			return Frame{}, fmt.Errorf("%w: commit time: %v", ErrBadFrame, err)
		}
		f.Time = t
	}
	return f, nil
}

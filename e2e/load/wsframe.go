package load

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// WebSocket opcodes the raw client handles (RFC 6455, section 5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// maxServerFrame bounds one server frame the raw client accepts.
const maxServerFrame = 64 << 20

// ErrBadWSFrame is returned by nextFrame for bytes that are not a server
// WebSocket frame the raw client accepts.
var ErrBadWSFrame = errors.New("load: bad WebSocket frame")

// nextFrame parses the server frame at the start of b. It returns the
// frame's opcode and payload (aliasing b) and how many bytes of b it takes;
// n == 0 means b holds only the beginning of a frame. Server frames are
// never masked and the gateway never fragments, so masked, fragmented and
// reserved-bit frames are errors.
func nextFrame(b []byte) (op byte, payload []byte, n int, err error) {
	if len(b) < 2 {
		return 0, nil, 0, nil
	}
	if b[0]&0x80 == 0 {
		return 0, nil, 0, fmt.Errorf("%w: fragmented frame", ErrBadWSFrame)
	}
	if b[0]&0x70 != 0 {
		return 0, nil, 0, fmt.Errorf("%w: reserved bits set", ErrBadWSFrame)
	}
	if b[1]&0x80 != 0 {
		return 0, nil, 0, fmt.Errorf("%w: masked server frame", ErrBadWSFrame)
	}
	op = b[0] & 0x0F
	switch op {
	case opText, opBinary, opClose, opPing, opPong:
	default:
		return 0, nil, 0, fmt.Errorf("%w: opcode %#x", ErrBadWSFrame, op)
	}
	h, size := 2, uint64(b[1]&0x7F)
	switch size {
	case 126:
		if len(b) < 4 {
			return 0, nil, 0, nil
		}
		h, size = 4, uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return 0, nil, 0, nil
		}
		h, size = 10, binary.BigEndian.Uint64(b[2:])
	}
	if op >= opClose && size > 125 {
		return 0, nil, 0, fmt.Errorf("%w: control frame of %d bytes", ErrBadWSFrame, size)
	}
	if size > maxServerFrame {
		return 0, nil, 0, fmt.Errorf("%w: frame of %d bytes", ErrBadWSFrame, size)
	}
	if uint64(len(b)-h) < size {
		return 0, nil, 0, nil
	}
	n = h + int(size)
	return op, b[h:n], n, nil
}

// appendClientFrame appends a final client frame with opcode op, payload
// masked with mask (clients must mask, RFC 6455 section 5.3).
func appendClientFrame(dst []byte, op byte, payload []byte, mask [4]byte) []byte {
	dst = append(dst, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		dst = append(dst, 0x80|byte(n))
	case n < 1<<16:
		dst = append(dst, 0x80|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 0x80|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	dst = append(dst, mask[:]...)
	for i, c := range payload {
		dst = append(dst, c^mask[i&3])
	}
	return dst
}

package load

import (
	"bytes"
	"errors"
	"testing"
)

func TestNextFrame(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 300)
	long16 := append([]byte{0x81, 126, 0x01, 0x2C}, long...)
	tests := []struct {
		name    string
		in      []byte
		op      byte
		payload []byte
		n       int
		err     bool
	}{
		{"an empty buffer is incomplete", nil, 0, nil, 0, false},
		{"one byte is incomplete", []byte{0x81}, 0, nil, 0, false},
		{"a short text frame parses", []byte{0x81, 2, 'h', 'i', 0x81}, opText, []byte("hi"), 4, false},
		{"a text frame missing payload is incomplete", []byte{0x81, 3, 'h', 'i'}, 0, nil, 0, false},
		{"a 16-bit length frame parses", long16, opText, long, 304, false},
		{"a 16-bit length header cut short is incomplete", []byte{0x81, 126, 0x01}, 0, nil, 0, false},
		{"a 64-bit length header cut short is incomplete", []byte{0x81, 127, 0, 0, 0}, 0, nil, 0, false},
		{"a ping parses", []byte{0x89, 1, 'p'}, opPing, []byte("p"), 3, false},
		{"a close parses", []byte{0x88, 2, 0x03, 0xE8}, opClose, []byte{0x03, 0xE8}, 4, false},
		{"a fragment is refused", []byte{0x01, 1, 'a'}, 0, nil, 0, true},
		{"reserved bits are refused", []byte{0xC1, 1, 'a'}, 0, nil, 0, true},
		{"a masked server frame is refused", []byte{0x81, 0x81, 1, 2, 3, 4, 'a'}, 0, nil, 0, true},
		{"an unknown opcode is refused", []byte{0x83, 0}, 0, nil, 0, true},
		{"a long control frame is refused", []byte{0x89, 126, 0, 200}, 0, nil, 0, true},
		{"a huge frame is refused", []byte{0x81, 127, 0xFF, 0, 0, 0, 0, 0, 0, 0}, 0, nil, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, p, n, err := nextFrame(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err != nil {
				if !errors.Is(err, ErrBadWSFrame) {
					t.Fatalf("err = %v, want ErrBadWSFrame", err)
				}
				return
			}
			if op != tt.op || n != tt.n || !bytes.Equal(p, tt.payload) {
				t.Fatalf("got op %#x n %d payload %q, want op %#x n %d payload %q", op, n, p, tt.op, tt.n, tt.payload)
			}
		})
	}
}

func TestAppendClientFrameMasks(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	for _, size := range []int{0, 5, 125, 126, 70000} {
		payload := bytes.Repeat([]byte("ab"), size/2+1)[:size]
		b := appendClientFrame(nil, opText, payload, mask)
		if b[0] != 0x81 || b[1]&0x80 == 0 {
			t.Fatalf("size %d: header %x: want FIN, text and the mask bit", size, b[:2])
		}
		h := 2
		switch b[1] & 0x7F {
		case 126:
			h = 4
		case 127:
			h = 10
		}
		if !bytes.Equal(b[h:h+4], mask[:]) {
			t.Fatalf("size %d: mask %x", size, b[h:h+4])
		}
		got := b[h+4:]
		for i := range got {
			got[i] ^= mask[i&3]
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("size %d: unmasked payload differs", size)
		}
	}
}

func FuzzNextFrame(f *testing.F) {
	f.Add([]byte{0x81, 2, 'h', 'i'})
	f.Add([]byte{0x81, 126, 0x01, 0x2C})
	f.Add([]byte{0x88, 2, 0x03, 0xE8, 0x89, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		rest := b
		for len(rest) > 0 {
			op, p, n, err := nextFrame(rest)
			if err != nil || n == 0 {
				return
			}
			if n > len(rest) || len(p) > n || op == 0 {
				t.Fatalf("nextFrame(%x) = op %#x, %d payload bytes, n %d", rest, op, len(p), n)
			}
			rest = rest[n:]
		}
	})
}

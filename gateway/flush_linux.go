//go:build linux

package gateway

import (
	"errors"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// iovMax is the most buffers one writev takes (IOV_MAX on Linux).
const iovMax = 1024

// rawWriter writes buffers to a socket with one non-blocking writev(2),
// bypassing the runtime's wait for writability: a socket that cannot take
// everything at once is left to a goroutine that may block.
type rawWriter struct {
	iov []syscall.Iovec
	n   int
	err error
	fn  func(fd uintptr) bool
}

// writev writes as much of bufs as the socket takes now and reports how
// many bytes that was. A nil rc (no raw access to the socket), a full socket
// and an expired write deadline all write nothing and return no error: the
// caller hands the rest to a blocking writer.
func (w *rawWriter) writev(rc syscall.RawConn, bufs net.Buffers) (int, error) {
	if rc == nil || len(bufs) == 0 {
		return 0, nil
	}
	if w.fn == nil {
		w.fn = w.call
	}
	w.iov = w.iov[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if len(w.iov) == iovMax {
			break // the rest goes with the blocking writer
		}
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		w.iov = append(w.iov, v)
	}
	w.n, w.err = 0, nil
	err := rc.Write(w.fn)
	clear(w.iov) // do not keep the frames reachable
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil
		}
		return 0, err
	}
	return w.n, w.err
}

// call is the function handed to RawConn.Write: one writev, never a wait.
func (w *rawWriter) call(fd uintptr) bool {
	for {
		r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
		switch e {
		case 0:
			w.n = int(r)
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
		default:
			w.err = e
		}
		return true
	}
}

//go:build !linux

package gateway

import (
	"net"
	"syscall"
)

// rawWriter writes nothing on systems without the writev path: every write
// goes to the connection's blocking writer goroutine.
type rawWriter struct{}

func (*rawWriter) writev(syscall.RawConn, net.Buffers) (int, error) { return 0, nil }

//go:build linux

package load

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The raw client: in ModeRipple a connection is set up (TCP, WebSocket
// handshake, auth, subscribe, frames until ready) by a goroutine of its own
// with blocking I/O, and then handed to one of a few epoll loops that read
// every connection's frames without a goroutine per connection. Receiving
// 100,000 transactions per second over 10,000 sockets then costs the load
// generator about one read system call per delivery and no scheduler work,
// so that on a 2-core machine the generator leaves the gateway as much CPU
// as it can.

// rawReaders are the epoll loops of a Generator.
type rawReaders struct {
	eps   []int
	conns []atomic.Pointer[rawConn] // by connection index
	wg    sync.WaitGroup
	stop  atomic.Bool
}

// rawConn is one connection read by an epoll loop.
type rawConn struct {
	i    int
	f    *os.File // owns fd
	fd   int
	pend []byte // the beginning of a frame not complete yet
	done bool
}

func (g *Generator) startReaders(n int) error {
	r := &rawReaders{conns: make([]atomic.Pointer[rawConn], g.cfg.Clients)}
	for range n {
		ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			r.close()
			return fmt.Errorf("load: epoll: %w", err)
		}
		r.eps = append(r.eps, ep)
	}
	g.raw = r
	for _, ep := range r.eps {
		r.wg.Add(1)
		go g.readLoop(ep)
	}
	return nil
}

// close stops the loops, closes every connection and waits.
func (r *rawReaders) close() {
	r.stop.Store(true)
	r.wg.Wait()
	for i := range r.conns {
		if c := r.conns[i].Load(); c != nil && !c.done {
			c.done = true
			_ = c.f.Close()
		}
	}
	for _, ep := range r.eps {
		_ = syscall.Close(ep)
	}
}

// runRaw sets up connection i, reports it ready and hands it to a reader.
func (g *Generator) runRaw(ctx context.Context, i int, sem chan struct{}, readyc chan<- struct{}, errc chan<- error) {
	defer g.wg.Done()
	defer func() { <-sem }()
	c, err := g.setupRaw(ctx, i)
	if err != nil {
		if !g.closing.Load() {
			select {
			case errc <- fmt.Errorf("load: connection %d: %w", i, err):
			default:
			}
		}
		return
	}
	c.i = i
	rest, err := g.consume(c, c.pend, time.Now())
	if err != nil {
		_ = c.f.Close()
		select {
		case errc <- fmt.Errorf("load: connection %d: %w", i, err):
		default:
		}
		return
	}
	c.pend = append([]byte(nil), rest...)
	r := g.raw
	r.conns[i].Store(c)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Pad: int32(i)}
	if err := syscall.EpollCtl(r.eps[i%len(r.eps)], syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		r.conns[i].Store(nil)
		_ = c.f.Close()
		select {
		case errc <- fmt.Errorf("load: connection %d: epoll add: %w", i, err):
		default:
		}
		return
	}
	g.ready.Add(1)
	readyc <- struct{}{}
}

// setupRaw dials, upgrades, authenticates and subscribes connection i with
// blocking I/O and returns it once its subscription is ready, with the
// bytes read past the ready frame in pend.
func (g *Generator) setupRaw(ctx context.Context, i int) (*rawConn, error) {
	u, err := url.Parse(g.cfg.URL)
	if err != nil {
		return nil, err
	}
	src := &net.TCPAddr{IP: net.ParseIP(g.cfg.SourceAddrs[i%len(g.cfg.SourceAddrs)])}
	d := &net.Dialer{LocalAddr: src, Timeout: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			nc.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	defer stop()
	br, err := handshake(nc, u)
	if err != nil {
		return nil, err
	}
	org := g.cfg.Orgs[i%len(g.cfg.Orgs)]
	var out []byte
	for _, v := range []any{
		map[string]any{"type": "auth", "token": g.cfg.Token(org)},
		map[string]any{"type": "subscribe", "id": "s", "table": g.cfg.Table, "org": org},
	} {
		b, _ := json.Marshal(v)
		out = appendClientFrame(out, opText, b, newMask())
	}
	if _, err := nc.Write(out); err != nil {
		return nil, err
	}
	fr := frameReader{r: br}
	for {
		op, p, err := fr.next()
		if err != nil {
			return nil, err
		}
		switch op {
		case opPing:
			if _, err := nc.Write(appendClientFrame(nil, opPong, p, newMask())); err != nil {
				return nil, err
			}
			continue
		case opClose:
			return nil, fmt.Errorf("closed by the server during setup: %s", closeReason(p))
		case opText:
		default:
			continue
		}
		f, err := ParseFrame(p)
		if err != nil {
			return nil, err
		}
		switch f.Type {
		case "ready":
			ok = true
			return detach(nc, fr.rest(br))
		case "error":
			return nil, fmt.Errorf("gateway error %s: %s", f.Code, f.Message)
		case "commit":
			g.commits.Add(1)
		case "part":
			g.parts.Add(1)
		}
	}
}

// handshake sends the WebSocket upgrade request and checks the answer.
func handshake(nc net.Conn, u *url.URL) (*bufio.Reader, error) {
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + k + "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " + Subprotocol + "\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("handshake: %s", resp.Status)
	}
	h := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(h[:]) {
		return nil, errors.New("handshake: wrong Sec-WebSocket-Accept")
	}
	return br, nil
}

// detach takes the socket away from the runtime's poller: a duplicate
// descriptor in non-blocking mode, read by an epoll loop from now on.
func detach(nc net.Conn, pend []byte) (*rawConn, error) {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, errors.New("not a TCP connection")
	}
	f, err := tc.File()
	nc.Close()
	if err != nil {
		return nil, err
	}
	fd := int(f.Fd())
	if err := syscall.SetNonblock(fd, true); err != nil {
		f.Close()
		return nil, err
	}
	return &rawConn{f: f, fd: fd, pend: pend}, nil
}

func newMask() (m [4]byte) {
	_, _ = rand.Read(m[:])
	return m
}

func closeReason(p []byte) string {
	if len(p) < 2 {
		return "no status"
	}
	return fmt.Sprintf("%d %s", int(p[0])<<8|int(p[1]), p[2:])
}

// frameReader reads whole frames from a blocking reader.
type frameReader struct {
	r   io.Reader
	buf []byte
	off int
}

func (fr *frameReader) next() (op byte, payload []byte, err error) {
	for {
		op, p, n, err := nextFrame(fr.buf[fr.off:])
		if err != nil {
			return 0, nil, err
		}
		if n > 0 {
			fr.off += n
			return op, p, nil
		}
		if fr.off > 0 {
			fr.buf = append(fr.buf[:0], fr.buf[fr.off:]...)
			fr.off = 0
		}
		if len(fr.buf) == cap(fr.buf) {
			fr.buf = append(fr.buf, make([]byte, max(4096, len(fr.buf)))...)[:len(fr.buf)]
		}
		m, err := fr.r.Read(fr.buf[len(fr.buf):cap(fr.buf)])
		fr.buf = fr.buf[:len(fr.buf)+m]
		if m == 0 && err != nil {
			return 0, nil, err
		}
	}
}

// rest returns the unread bytes: those of fr and those br buffered.
func (fr *frameReader) rest(br *bufio.Reader) []byte {
	out := append([]byte(nil), fr.buf[fr.off:]...)
	b, _ := br.Peek(br.Buffered())
	return append(out, b...)
}

// readLoop reads the connections of epoll instance ep until the generator
// closes.
func (g *Generator) readLoop(ep int) {
	r := g.raw
	defer r.wg.Done()
	evs := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	for !r.stop.Load() {
		n, err := syscall.EpollWait(ep, evs, 100)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			g.setProblem("epoll_wait: " + err.Error())
			return
		}
		for _, ev := range evs[:n] {
			if c := r.conns[ev.Pad].Load(); c != nil && !c.done {
				g.readConn(ep, c, buf)
			}
		}
	}
}

// readConn reads what connection c has and handles its complete frames.
func (g *Generator) readConn(ep int, c *rawConn, buf []byte) {
	for {
		m, err := syscall.Read(c.fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			return
		}
		if m <= 0 {
			if err == nil {
				err = io.EOF
			}
			g.endRaw(ep, c, err)
			return
		}
		now := time.Now()
		data := buf[:m]
		if len(c.pend) > 0 {
			c.pend = append(c.pend, data...)
			data = c.pend
		}
		rest, err := g.consume(c, data, now)
		if err != nil {
			g.endRaw(ep, c, err)
			return
		}
		switch {
		case len(rest) == 0:
			c.pend = c.pend[:0]
			if cap(c.pend) > 64<<10 {
				c.pend = nil
			}
		case len(c.pend) > 0:
			c.pend = c.pend[:copy(c.pend, rest)] // rest lies within pend
		default:
			c.pend = append(c.pend[:0], rest...)
		}
		if m < len(buf) {
			return // drained: epoll tells when more arrives
		}
	}
}

// consume handles the complete frames at the start of data and returns the
// rest.
func (g *Generator) consume(c *rawConn, data []byte, now time.Time) ([]byte, error) {
	for {
		op, p, n, err := nextFrame(data)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return data, nil
		}
		data = data[n:]
		switch op {
		case opText:
			g.handle(p, now)
		case opPing:
			_, _ = syscall.Write(c.fd, appendClientFrame(nil, opPong, p, newMask()))
		case opClose:
			return nil, fmt.Errorf("closed by the server: %s", closeReason(p))
		default:
			g.other.Add(1)
		}
	}
}

// endRaw closes connection c after err.
func (g *Generator) endRaw(ep int, c *rawConn, err error) {
	c.done = true
	_ = syscall.EpollCtl(ep, syscall.EPOLL_CTL_DEL, c.fd, nil)
	_ = c.f.Close()
	if !g.closing.Load() {
		g.closed.Add(1)
		g.setProblem(fmt.Sprintf("connection %d closed: %v", c.i, err))
	}
}

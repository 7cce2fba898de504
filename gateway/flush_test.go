package gateway

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	server, client = sc.(*net.TCPConn), cc.(*net.TCPConn)
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// flushConn is a connection with only what the write path uses.
func flushConn(t *testing.T, nc *net.TCPConn) (*conn, *Gateway) {
	t.Helper()
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{cfg: Config{WriteTimeout: 10 * time.Second}, m: m, flush: newFlushers(2)}
	g.writeScratch.New = func() any { return new(writeScratch) }
	g.flush.start()
	t.Cleanup(g.flush.close)
	c := &conn{g: g, q: newQueue(1 << 20), kill: make(chan struct{}), finalDone: make(chan struct{}), netConn: nc}
	rc, err := nc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c.raw = rc
	return c, g
}

// readTextFrame reads one unmasked server text frame.
func readTextFrame(r *bufio.Reader) (string, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", err
	}
	if h[0] != 0x81 {
		return "", fmt.Errorf("frame header %#x, want a final text frame", h[0])
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return "", err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	_, err := io.ReadFull(r, p)
	return string(p), err
}

// Frames pushed while the client does not read (4 MB in each round, more
// than loopback socket buffers take) fill the socket: the
// flusher's write is partial, the rest goes on in the connection's own
// writer, and later frames go through the flushers again. Every frame
// arrives once, whole and in order, across all these hand-overs.
func TestFlushHandsOffAndKeepsOrder(t *testing.T) {
	server, client := tcpPair(t)
	c, g := flushConn(t, server)
	r := bufio.NewReader(client)
	next := 0
	frame := func(i int) []byte {
		// Sizes vary across the 7-bit, 16-bit and 64-bit length forms.
		pad := strings.Repeat("x", (i*37)%300+(i%50)*(i%3)*400)
		if i%97 == 0 {
			pad = strings.Repeat("y", 70000)
		}
		return fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, pad)
	}
	for round := range 6 {
		// Push a burst that overflows the socket buffers; every push that
		// starts a writer hands the connection to the flushers, as the hub
		// does.
		for range 400 {
			ok, start := c.q.push(frame(next))
			if !ok {
				t.Fatal("queue overflow")
			}
			if start {
				g.flush.add([]*conn{c})
			}
			next++
		}
		// Now read everything, in order.
		for i := next - 400; i < next; i++ {
			_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := readTextFrame(r)
			if err != nil {
				t.Fatalf("round %d: frame %d: %v", round, i, err)
			}
			if want := string(frame(i)); got != want {
				t.Fatalf("round %d: frame %d: got %.60q..., want %.60q...", round, i, got, want)
			}
		}
	}
	if h := testutilValue(g.m.handoffs); h < 1 {
		t.Fatalf("%v writes handed to the blocking writer, want some", h)
	}
}

// Connections with live frames are taken before connections that only have
// checkpoints waiting, and a push to a connection waiting in the lazy queue
// claims it (the lazy entry is then skipped).
func TestFlushersServeLiveFramesFirst(t *testing.T) {
	f := newFlushers(1) // not started: the test takes by hand
	mk := func() *conn { return &conn{q: newQueue(16)} }
	lazyOnly, promoted, live := mk(), mk(), mk()
	for _, c := range []*conn{lazyOnly, promoted} {
		if !c.q.pushQuiet([]byte(`{"type":"checkpoint"}`)) || !c.q.kickLazy() {
			t.Fatal("kickLazy did not take an idle queue with a frame")
		}
	}
	f.addLazy([]*conn{lazyOnly, promoted})
	if _, start := promoted.q.push([]byte(`{"type":"commit"}`)); !start {
		t.Fatal("a push to a lazily kicked queue did not claim it")
	}
	if _, start := live.q.push([]byte(`{"type":"commit"}`)); !start {
		t.Fatal("a push to an idle queue did not start a writer")
	}
	f.add([]*conn{live, promoted})

	got, lazy := f.take(nil)
	if lazy || len(got) != 2 || got[0] != live || got[1] != promoted {
		t.Fatalf("first take: lazy %v, %d connections; want the two live ones in order", lazy, len(got))
	}
	got, lazy = f.take(nil)
	if !lazy || len(got) != 2 {
		t.Fatalf("second take: lazy %v, %d connections; want the two lazy entries", lazy, len(got))
	}
	if got[0] != lazyOnly || !lazyOnly.q.takeLazy() {
		t.Fatal("the lazy-only connection is not owned by its lazy entry")
	}
	if got[1] != promoted || promoted.q.takeLazy() {
		t.Fatal("the claimed connection's lazy entry was not skipped")
	}
	if got, _ = f.take(nil); len(got) != 0 {
		t.Fatalf("third take: %d connections, want none", len(got))
	}
}

// A topic remembers the transactions of the last recentKeep, numbered in
// order, and forgets older ones (compacting its list now and then).
func TestTopicRemembersRecentCommits(t *testing.T) {
	tp := &topic{}
	t0 := time.Now()
	for i := range 100 {
		tp.remember(schema.XID8(1000+i), t0.Add(time.Duration(i)*time.Second))
	}
	kept := tp.recent[tp.recentHead:]
	// At second 99, those of seconds 89..99 are within recentKeep.
	if len(kept) != 11 || kept[0].xid != 1089 || kept[10].xid != 1099 || kept[10].n != 100 || tp.commitN != 100 {
		t.Fatalf("kept %d from xid %v to %v (n %d), commitN %d; want 11 from 1089 to 1099 (n 100)",
			len(kept), kept[0].xid, kept[len(kept)-1].xid, kept[len(kept)-1].n, tp.commitN)
	}
	if len(tp.recent) > 2*len(kept)+1 {
		t.Fatalf("the list holds %d entries for %d kept: not compacted", len(tp.recent), len(kept))
	}
}

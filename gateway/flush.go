package gateway

import (
	"net"
	"runtime"
	"sync"

	"github.com/gorilla/websocket"
)

// flushers is the pool of goroutines that write the live stream to the
// connections' sockets. The hub hands it the connections whose queues it
// filled (flushers.add); each flusher takes connections in that order, pops
// everything their queue holds and writes it with one non-blocking writev
// system call. A connection whose socket cannot take it all (the client
// reads slowly) is handed to a writer goroutine of its own (conn.writer),
// which blocks on the socket with the write deadline; the pool goes on with
// the others. So the live stream costs no goroutine start and no blocking
// per delivery, and the number of runnable goroutines stays small: the hub
// is never queued behind thousands of writers.
//
// Under load the pool falls behind the hub and a connection's queue holds
// several transactions by the time its turn comes: they leave in one system
// call. That is what keeps the gateway's cost per delivery falling as the
// load rises, instead of one write per transaction whatever the backlog.
//
// A connection is in the pool's queues at most once, but for a lazy entry a
// push skipped (queue.claim): queue.running marks it owned by a writer (a
// flusher or its own goroutine) from the push that started it until a pop
// finds the queue empty. Connections with only checkpoints to send wait in
// a lazy queue that the flushers serve when no live frames wait.
type flushers struct {
	mu     sync.Mutex
	urgent connFIFO      // connections with live frames, oldest first
	lazy   connFIFO      // connections with only frames that can wait (checkpoints)
	wake   chan struct{} // one token: work arrived
	stop   chan struct{}
	wg     sync.WaitGroup
	n      int
	batchN int
}

// connFIFO is a queue of connections.
type connFIFO struct {
	items []*conn
	head  int
}

func (q *connFIFO) len() int { return len(q.items) - q.head }

func (q *connFIFO) push(cs []*conn) { q.items = append(q.items, cs...) }

// take moves up to n connections to dst.
func (q *connFIFO) take(dst []*conn, n int) []*conn {
	n = min(q.len(), n)
	dst = append(dst, q.items[q.head:q.head+n]...)
	clear(q.items[q.head : q.head+n])
	q.head += n
	if q.head == len(q.items) {
		q.head = 0
		if cap(q.items) > 4096 {
			q.items = nil // do not keep a burst's memory
		} else {
			q.items = q.items[:0]
		}
	}
	return dst
}

// flushBatch is how many connections a flusher takes from the queue at once.
const flushBatch = 64

func newFlushers(n int) *flushers {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return &flushers{wake: make(chan struct{}, 1), stop: make(chan struct{}), n: n, batchN: flushBatch}
}

// start runs the flusher goroutines.
func (f *flushers) start() {
	for range f.n {
		f.wg.Add(1)
		go f.run()
	}
}

// close stops the flushers once the queues are empty and waits for them.
func (f *flushers) close() {
	close(f.stop)
	f.wg.Wait()
}

// add queues connections whose writer has been started (queue.push or
// claim) for a flusher. It never blocks.
func (f *flushers) add(cs []*conn) { f.enqueue(cs, false) }

// addLazy queues connections kicked by queue.kickLazy: they are written
// only when no connection with live frames waits, so that a burst of
// checkpoints to every connection never delays a transaction.
func (f *flushers) addLazy(cs []*conn) { f.enqueue(cs, true) }

func (f *flushers) enqueue(cs []*conn, lazy bool) {
	if len(cs) == 0 {
		return
	}
	f.mu.Lock()
	if lazy {
		f.lazy.push(cs)
	} else {
		f.urgent.push(cs)
	}
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// take moves up to batchN waiting connections to dst, live ones first; lazy
// reports that they came from the lazy queue.
func (f *flushers) take(dst []*conn) (_ []*conn, lazy bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.urgent.len() > 0 {
		dst = f.urgent.take(dst, f.batchN)
	} else {
		dst, lazy = f.lazy.take(dst, f.batchN), true
	}
	if f.urgent.len()+f.lazy.len() > 0 {
		// More waits: pass the wake-up on to another flusher.
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
	return dst, lazy
}

func (f *flushers) run() {
	defer f.wg.Done()
	var st flushState
	var batch []*conn
	for {
		var lazy bool
		batch, lazy = f.take(batch[:0])
		if len(batch) == 0 {
			select {
			case <-f.wake:
				continue
			case <-f.stop:
				if batch, lazy = f.take(batch[:0]); len(batch) == 0 {
					return
				}
			}
		}
		for i, c := range batch {
			if !lazy || c.q.takeLazy() {
				c.flush(&st)
			}
			batch[i] = nil
		}
	}
}

// flushState is one flusher's reusable scratch space.
type flushState struct {
	frames [][]byte
	hdrs   []byte
	bufs   net.Buffers
	raw    rawWriter
}

// flush writes what c's queue holds without blocking. Whatever the socket
// does not take at once goes on in a writer goroutine of c's own.
func (c *conn) flush(st *flushState) {
	for {
		select {
		case <-c.kill:
			go c.finalOnce.Do(c.final)
			return
		default:
		}
		st.frames = c.q.pop(st.frames[:0])
		if len(st.frames) == 0 {
			select {
			case <-c.kill:
				go c.finalOnce.Do(c.final)
			default:
			}
			return
		}
		var payload, wire int
		st.hdrs, st.bufs, payload, wire = frameBuffers(st.frames, st.hdrs[:0], st.bufs[:0])
		wrote, err := st.raw.writev(c.raw, st.bufs)
		clear(st.bufs)
		switch {
		case err != nil:
			c.cut("", "", websocket.CloseAbnormalClosure)
			clear(st.frames)
			continue // the next turn sees kill and closes
		case wrote < wire:
			// The socket is full (or has no raw access): a goroutine of
			// c's own writes the rest, blocking up to the write
			// deadline, and goes on draining the queue.
			c.g.m.handoffs.Inc()
			rest := append([][]byte(nil), st.frames...)
			clear(st.frames)
			go c.writer(rest, wrote)
			return
		}
		c.g.m.writes.Inc()
		c.g.m.messagesOut.Add(float64(len(st.frames)))
		c.g.m.bytesOut.Add(float64(payload))
		clear(st.frames)
	}
}

// frameBuffers appends to bufs the wire form of frames: JSON text frames
// get a WebSocket header (appended to hdrs), complete control frames go as
// they are. payload counts the bytes of text frames, wire every byte.
func frameBuffers(frames [][]byte, hdrs []byte, bufs net.Buffers) (_ []byte, _ net.Buffers, payload, wire int) {
	for _, f := range frames {
		wire += len(f)
		if len(f) > 0 && f[0] != '{' {
			bufs = append(bufs, f) // a complete control frame
			continue
		}
		start := len(hdrs)
		hdrs = appendHeader(hdrs, len(f))
		bufs = append(bufs, hdrs[start:len(hdrs):len(hdrs)], f)
		payload += len(f)
		wire += len(hdrs) - start
	}
	// (Earlier headers stay valid when hdrs grows: their slices keep the
	// old array.)
	return hdrs, bufs, payload, wire
}

// skipBytes drops the first n bytes of bufs.
func skipBytes(bufs net.Buffers, n int) net.Buffers {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	return bufs
}

package gateway

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// errConnClosed is returned by queue.pushWait once the connection ended.
var errConnClosed = errors.New("gateway: connection closed")

// errStale is returned by queue.pushWait for a frame of a catch-up that was
// cancelled or replaced.
var errStale = errors.New("gateway: catch-up replaced")

// queue is a connection's bounded outbound frame queue. The live stream
// pushes without waiting (push reports overflow and the caller cuts the
// client); catch-ups push with pushWait, which waits while the queue is half
// full so that a snapshot never crowds out live frames. One writer goroutine
// drains it; it runs only while there is something to write (running), so
// an idle connection holds neither queue memory nor a writer goroutine.
type queue struct {
	mu      sync.Mutex
	frames  [][]byte
	limit   int
	extra   int // frames of a catch-up's tail queued beyond limit (pushBulk), until the next pop
	closed  bool
	running bool          // a writer (a flusher or the connection's goroutine) owns the queue
	lazy    bool          // owned by a lazy kick, still waiting in the flushers' lazy queue
	space   chan struct{} // to snapshot producers: the queue drained
	done    chan struct{} // closed by close
}

func newQueue(limit int) *queue {
	return &queue{limit: limit, space: make(chan struct{}, 1), done: make(chan struct{})}
}

// push appends b; ok is false when the queue is full (not when it is
// closed). start tells the caller to start a writer goroutine.
func (q *queue) push(b []byte) (ok, start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true, false
	}
	if len(q.frames) >= q.limit+q.extra {
		return false, false
	}
	q.frames = append(q.frames, b)
	return true, q.claim()
}

// pushBulk appends frames whatever the limit: the end of a catch-up (the
// live commits buffered while the snapshot was read, and ready), bounded by
// Config.SnapshotBufferLimit rather than by the queue. Until the next pop
// they do not count against the limit of the live stream pushed after
// them. start tells the caller to start a writer.
func (q *queue) pushBulk(frames [][]byte) (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || len(frames) == 0 {
		return false
	}
	q.frames = append(q.frames, frames...)
	q.extra += len(frames)
	return q.claim()
}

// claim reports whether the caller must start a writer for frames just
// queued: none runs, or the queue waits in the flushers' lazy queue behind
// other connections' checkpoints (it is taken out of it: the new writer
// owns it, and the lazy entry is skipped). q.mu is held.
func (q *queue) claim() bool {
	switch {
	case !q.running:
		q.running = true
		return true
	case q.lazy:
		q.lazy = false
		return true
	}
	return false
}

// pushQuiet appends b like push but starts no writer: b leaves with the
// next frame pushed, or once kick starts a writer. ok is false when the
// queue is full.
func (q *queue) pushQuiet(b []byte) (ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true
	}
	if len(q.frames) >= q.limit+q.extra {
		return false
	}
	q.frames = append(q.frames, b)
	return true
}

// kickLazy tells the caller to hand the queue to the flushers' lazy queue
// for frames that wait without a writer (pushQuiet). A push before a
// flusher takes it moves it ahead (claim).
func (q *queue) kickLazy() (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.running || q.closed || len(q.frames) == 0 {
		return false
	}
	q.running, q.lazy = true, true
	return true
}

// takeLazy reports whether a flusher that took the queue from the lazy
// queue owns it: false when a push claimed it meanwhile.
func (q *queue) takeLazy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	own := q.lazy
	q.lazy = false
	return own
}

// pushWait appends b once the queue is less than half full, provided
// gen still holds want when it does (a cancelled catch-up's frames never
// follow its successor's). start tells the caller to start a writer
// goroutine.
func (q *queue) pushWait(ctx context.Context, b []byte, gen *atomic.Int64, want int64) (start bool, err error) {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return false, errConnClosed
		}
		if gen.Load() != want {
			q.mu.Unlock()
			return false, errStale
		}
		if len(q.frames) < q.limit/2 {
			q.frames = append(q.frames, b)
			room := len(q.frames) < q.limit/2
			start = q.claim()
			q.mu.Unlock()
			if room { // pass the turn on to another waiting producer
				select {
				case q.space <- struct{}{}:
				default:
				}
			}
			return start, nil
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-q.done:
			return false, errConnClosed
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// pop moves every queued frame to dst. When there is none it marks the
// writer stopped and returns dst empty: the writer goroutine exits.
func (q *queue) pop(dst [][]byte) [][]byte {
	q.mu.Lock()
	if len(q.frames) == 0 {
		q.running = false
		q.mu.Unlock()
		return dst
	}
	dst = append(dst, q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	q.extra = 0
	if cap(q.frames) > 64 {
		q.frames = nil // do not keep a burst's memory while idle
	}
	q.mu.Unlock()
	select {
	case q.space <- struct{}{}:
	default:
	}
	return dst
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.frames)
}

// close discards the queue. start tells the caller to start a writer
// goroutine (to write the final frames) because none runs.
func (q *queue) close() (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.frames = nil
		close(q.done)
	}
	return q.claim()
}

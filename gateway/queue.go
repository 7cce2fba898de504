package gateway

import (
	"context"
	"errors"
	"sync"
)

// errConnClosed is returned by queue.pushWait once the connection ended.
var errConnClosed = errors.New("gateway: connection closed")

// queue is a connection's bounded outbound frame queue. The live stream
// pushes without waiting (push reports overflow and the caller cuts the
// client); catch-ups push with pushWait, which waits while the queue is half
// full so that a snapshot never crowds out live frames. One writer goroutine
// drains it. It holds no memory while idle.
type queue struct {
	mu     sync.Mutex
	frames [][]byte
	limit  int
	closed bool
	wake   chan struct{} // to the writer: frames available
	space  chan struct{} // to snapshot producers: the queue drained
	done   chan struct{} // closed by close
}

func newQueue(limit int) *queue {
	return &queue{limit: limit, wake: make(chan struct{}, 1), space: make(chan struct{}, 1), done: make(chan struct{})}
}

// push appends b; it returns false when the queue is full or closed.
func (q *queue) push(b []byte) bool {
	q.mu.Lock()
	if q.closed || len(q.frames) >= q.limit {
		closed := q.closed
		q.mu.Unlock()
		return closed // a closed queue is not an overflow
	}
	q.frames = append(q.frames, b)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return true
}

// pushWait appends b once the queue is less than half full.
func (q *queue) pushWait(ctx context.Context, b []byte) error {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return errConnClosed
		}
		if len(q.frames) < q.limit/2 {
			q.frames = append(q.frames, b)
			room := len(q.frames) < q.limit/2
			q.mu.Unlock()
			select {
			case q.wake <- struct{}{}:
			default:
			}
			if room { // pass the turn on to another waiting producer
				select {
				case q.space <- struct{}{}:
				default:
				}
			}
			return nil
		}
		q.mu.Unlock()
		select {
		case <-q.space:
		case <-q.done:
			return errConnClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// pop moves every queued frame to dst.
func (q *queue) pop(dst [][]byte) [][]byte {
	q.mu.Lock()
	dst = append(dst, q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
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

func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.frames = nil
		close(q.done)
	}
}

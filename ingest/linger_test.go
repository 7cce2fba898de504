package ingest

import (
	"io"
	"testing"
)

// sizedReader returns reads of the given sizes, then EOF.
type sizedReader struct{ sizes []int }

func (r *sizedReader) Read(p []byte) (int, error) {
	if len(r.sizes) == 0 {
		return 0, io.EOF
	}
	n := min(r.sizes[0], len(p))
	r.sizes = r.sizes[1:]
	return n, nil
}

// TestLingerReader: a burst of small reads starts lingering, which lasts
// while each wait gathers a good amount of input and stops when the stream
// slows down or the reader falls behind (full reads).
func TestLingerReader(t *testing.T) {
	const bufSize = 256 << 10
	small := make([]int, lingerReads)
	for i := range small {
		small[i] = 100
	}
	cases := []struct {
		name  string
		sizes []int
		want  []bool // linger after each read
	}{
		{"few small reads", small[:lingerReads-1], make([]bool, lingerReads-1)},
		{"burst of small reads", small, append(make([]bool, lingerReads-1), true)},
		{"lingering gathers input", append(small, 8<<10, 16<<10),
			append(make([]bool, lingerReads-1), true, true, true)},
		{"stream slows down", append(small, 8<<10, 100),
			append(make([]bool, lingerReads-1), true, true, false)},
		{"reader falls behind", append(small, bufSize),
			append(make([]bool, lingerReads-1), true, false)},
		{"full reads never linger", []int{bufSize, bufSize, bufSize, bufSize, bufSize, bufSize, bufSize, bufSize, bufSize},
			make([]bool, 9)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := &lingerReader{r: &sizedReader{sizes: c.sizes}}
			buf := make([]byte, bufSize)
			for i, want := range c.want {
				if _, err := l.Read(buf); err != nil {
					t.Fatal(err)
				}
				if l.linger != want {
					t.Fatalf("after read %d (%d bytes): linger %v, want %v", i, c.sizes[i], l.linger, want)
				}
			}
		})
	}
}

// TestQueueWakeUps: changes of an open transaction wait in the queue
// without waking the main loop; a commit, a keepalive or a long batch wake
// it, and nothing wakes it while more input is buffered.
func TestQueueWakeUps(t *testing.T) {
	cases := []struct {
		name  string
		kinds []byte
		more  bool
		want  bool
	}{
		{"begin and changes", []byte{kindBegin, kindInsert, kindUpdate, kindDelete}, false, false},
		{"commit", []byte{kindBegin, kindInsert, kindCommit}, false, true},
		{"keepalive", []byte{kindKeepalive}, false, true},
		{"relation", []byte{kindRelation}, false, true},
		{"commit with more buffered", []byte{kindBegin, kindInsert, kindCommit}, true, false},
		{"long batch", append([]byte{kindBegin}, make([]byte, 255)...), true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			q := &queue{signal: make(chan struct{}, 1)}
			for _, k := range c.kinds {
				if k == 0 {
					k = kindInsert
				}
				q.put(inMsg{m: &walMessage{Kind: k}}, c.more)
			}
			woken := false
			select {
			case <-q.signal:
				woken = true
			default:
			}
			if woken != c.want {
				t.Fatalf("woken %v, want %v", woken, c.want)
			}
			if got := len(q.take()); got != len(c.kinds) {
				t.Fatalf("took %d messages, want %d", got, len(c.kinds))
			}
		})
	}
}

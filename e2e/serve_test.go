package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ripple-sync/ripple/client"
	"github.com/ripple-sync/ripple/gateway"
	"github.com/ripple-sync/ripple/schema"
)

// rawConn is a bare WebSocket connection to a gateway, for input the Go
// client never sends and for a client that stops reading.
type rawConn struct {
	t      testing.TB
	ws     *websocket.Conn
	frames chan schema.ServerFrame
	closed chan struct{}
	err    error // the read error that ended the connection
}

func dialRaw(t testing.TB, url string, readBuf int) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{schema.ProtocolName}}
	if readBuf > 0 {
		d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(readBuf)
			}
			return c, err
		}
	}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// newRaw connects and reads frames in the background.
func newRaw(t testing.TB, url string) *rawConn {
	r := &rawConn{t: t, ws: dialRaw(t, url, 0), frames: make(chan schema.ServerFrame, 4096), closed: make(chan struct{})}
	go func() {
		defer close(r.closed)
		for {
			_, b, err := r.ws.ReadMessage()
			if err != nil {
				r.err = err
				return
			}
			var f schema.ServerFrame
			if err := json.Unmarshal(b, &f); err != nil {
				r.err = fmt.Errorf("undecodable frame %q: %w", b, err)
				return
			}
			r.frames <- f
		}
	}()
	return r
}

func (r *rawConn) send(v any) {
	r.t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		b, _ = json.Marshal(v)
	}
	if err := r.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// wait returns the first frame matching pred within 10 s; frames before it
// are discarded.
func (r *rawConn) wait(what string, pred func(schema.ServerFrame) bool) schema.ServerFrame {
	r.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case f := <-r.frames:
			if pred(f) {
				return f
			}
		case <-r.closed:
			// drain what was read before the close
			for {
				select {
				case f := <-r.frames:
					if pred(f) {
						return f
					}
					continue
				default:
				}
				break
			}
			r.t.Fatalf("connection closed (%v) before %s", r.err, what)
		case <-timeout:
			r.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func isError(id, code string) func(schema.ServerFrame) bool {
	return func(f schema.ServerFrame) bool { return f.Type == schema.FrameError && f.ID == id && f.Code == code }
}

func isType(typ, id string) func(schema.ServerFrame) bool {
	return func(f schema.ServerFrame) bool { return f.Type == typ && f.ID == id }
}

// closeCode waits until the connection is closed and returns the close code.
func (r *rawConn) closeCode() int {
	r.t.Helper()
	select {
	case <-r.closed:
	case <-time.After(10 * time.Second):
		r.t.Fatal("connection not closed")
	}
	var ce *websocket.CloseError
	if errors.As(r.err, &ce) {
		return ce.Code
	}
	return -1
}

// TestStalledClientCut: a client that stops reading is cut off (slow_client)
// while 100 Go clients keep receiving every commit with p99
// commit-to-receive latency under 100 ms.
func TestStalledClientCut(t *testing.T) {
	tp := Start(t, Options{Gateway: func(c *gateway.Config) { c.OutboundQueue = 64 }})
	gw := tp.Gateways[0]
	tok := Token(t, schema.Claims{Orgs: []string{"acme", "big"}})
	var committed sync.Map // row id -> time just before COMMIT was sent
	var mu sync.Mutex
	var lat []time.Duration // receive - commit, for the current phase
	var subs []*client.Subscription
	for i := 0; i < 100; i++ {
		c := Dial(t, gw.URL, tok)
		subs = append(subs, Subscribe(t, c, "items", "acme", client.OnChangeFunc(func(ch client.Change) {
			at := time.Now()
			if ch.Row == nil {
				return
			}
			if t0, ok := committed.Load(ch.Row["id"]); ok {
				mu.Lock()
				lat = append(lat, at.Sub(t0.(time.Time)))
				mu.Unlock()
			}
		})))
	}
	ctx := context.Background()
	insert := func(org string, id int, title string, measure bool) {
		t.Helper()
		tx, err := tp.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `INSERT INTO items (org, id, title) VALUES ($1, $2, $3)`, org, id, title); err != nil {
			t.Fatal(err)
		}
		if measure {
			committed.Store(fmt.Sprint(id), time.Now())
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	stalled := dialRaw(t, gw.URL, 4096)
	for _, f := range []schema.ClientFrame{{Type: schema.FrameAuth, Token: tok},
		{Type: schema.FrameSubscribe, ID: "big", Table: "items", Org: "big"},
		{Type: schema.FrameSubscribe, ID: "acme", Table: "items", Org: "acme"}} {
		if err := stalled.WriteJSON(f); err != nil {
			t.Fatal(err)
		}
	}
	slowCuts := func() float64 {
		return gw.Counter(t, "ripple_gateway_cut_clients_total", map[string]string{"code": schema.ErrCodeSlowClient})
	}
	// Big rows at 100 commits/s (3.2 MB/s) for the stalled client, paced so
	// that the pipeline is not saturated, and a small row for everyone else
	// every fifth commit.
	big := strings.Repeat("x", 32<<10)
	bigTick := time.NewTicker(10 * time.Millisecond)
	defer bigTick.Stop()
	n := 0
	for ; slowCuts() < 1; n++ {
		if n > 2000 {
			t.Fatal("stalled client never cut")
		}
		<-bigTick.C
		insert("big", n, big, false)
		if n%5 == 0 {
			insert("acme", n, "during", true)
		}
	}
	report := func(phase string, want int) time.Duration {
		t.Helper()
		for _, s := range subs {
			tp.WaitConverged(s, 20*time.Second)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(lat) != want {
			t.Fatalf("%s: %d deliveries measured, want %d", phase, len(lat), want)
		}
		slices.Sort(lat)
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		t.Logf("%s: %d deliveries: p50 %v, p99 %v, max %v", phase, len(lat), p50, p99, lat[len(lat)-1])
		lat = lat[:0]
		return p99
	}
	duringP99 := report(fmt.Sprintf("while the stalled client is cut (%d big rows)", n), 100*((n+4)/5))
	// After the cut: 100 commits paced at 50/s (50 at 10/s under the race
	// detector), each delivered to 100 clients.
	every, commits := 20*time.Millisecond, 100
	if raceEnabled {
		every, commits = 100*time.Millisecond, 50
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for i := 0; i < commits; i++ {
		<-tick.C
		insert("acme", 100000+i, "after", true)
	}
	p99 := max(duringP99, report("after the cut", 100*commits))
	t.Logf("resyncs %v, catch-ups %v, load average %s", gw.Counter(t, "ripple_gateway_resyncs_total", nil),
		gw.Counter(t, "ripple_gateway_catchups_total", nil), loadAvg())
	if got := gw.Counter(t, "ripple_gateway_cut_clients_total", nil); got != 1 {
		t.Fatalf("%v connections cut, want only the stalled one", got)
	}
	limit := 100 * time.Millisecond
	if raceEnabled {
		limit = time.Second // the race detector's 5-10x CPU on 2 shared cores
	}
	// On a machine busier than its cores (other test binaries), the tail
	// is CPU starvation: scale the bound by load/cores. A client blocking
	// the others shows seconds, not tens of milliseconds.
	if f := loadPerCPU(); f > 1 {
		limit = time.Duration(float64(limit) * f)
	}
	if p99 > limit {
		t.Fatalf("p99 commit-to-receive latency %v over %v (load average %s)", p99, limit, loadAvg())
	}
}

func loadPerCPU() float64 {
	var l float64
	fmt.Sscan(loadAvg(), &l)
	return l / float64(runtime.NumCPU())
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// TestBadInput: forbidden organisation, bad token, expired token, malformed
// frame, unknown table and oversized frame each get their error code over
// the real gateway, and other subscriptions keep working.
func TestBadInput(t *testing.T) {
	tp := Start(t, Options{})
	gw := tp.Gateways[0]
	tok := Token(t, schema.Claims{Orgs: []string{"acme"}})
	expired := Token(t, schema.Claims{Orgs: []string{"acme"}, Expires: time.Now().Add(-time.Minute)})
	next := 0
	// stillLive inserts a row and waits until s shows it.
	stillLive := func(s *client.Subscription) {
		t.Helper()
		next++
		tp.Exec(`INSERT INTO items (org, id, title) VALUES ('acme', $1, 'alive')`, next)
		waitFor(t, 10*time.Second, "live row", func() bool { _, ok := s.Get("acme", fmt.Sprint(next)); return ok })
	}
	c := Dial(t, gw.URL, tok)
	good := Subscribe(t, c, "items", "acme")

	t.Run("go client", func(t *testing.T) {
		for _, tc := range []struct{ name, table, org, code string }{
			{"forbidden org", "items", "globex", schema.ErrCodeForbidden},
			{"unknown table", "nope", "acme", schema.ErrCodeUnknownTable},
			// The mutation log is replicated but never subscribable.
			{"mutation log", "ripple.mutations", "acme", schema.ErrCodeForbidden},
		} {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				s, err := c.Subscribe(ctx, tc.table, tc.org)
				if err == nil {
					err = s.WaitReady(ctx)
				}
				var se *client.ServerError
				if !errors.As(err, &se) || se.Code != tc.code {
					t.Fatalf("got %v, want server error %s", err, tc.code)
				}
				if s != nil && len(s.Rows()) != 0 {
					t.Fatalf("refused subscription shows rows")
				}
				stillLive(good)
			})
		}
		for _, tc := range []struct {
			name, token string
		}{{"bad token", "not-a-jwt"}, {"expired token", expired},
			{"wrong secret", strings.Join(strings.Split(tok, ".")[:2], ".") + ".c2lnbmF0dXJl"}} {
			t.Run(tc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				bad, err := client.Dial(ctx, client.Config{URL: gw.URL, Token: tc.token, Logger: newLogger(t)})
				if err == nil {
					bad.Close()
					t.Fatal("dial with a bad token succeeded")
				}
				if !errors.Is(err, client.ErrUnauthorized) && !errors.Is(err, client.ErrTokenExpired) {
					t.Fatalf("dial: %v, want unauthorized", err)
				}
				stillLive(good)
			})
		}
	})

	t.Run("raw", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			token string
			code  string
			close int
		}{
			{"bad token", "garbage", schema.ErrCodeUnauthorized, 4001},
			{"expired token", expired, schema.ErrCodeTokenExpired, 4003},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := newRaw(t, gw.URL)
				r.send(schema.ClientFrame{Type: schema.FrameAuth, Token: tc.token})
				r.wait(tc.code, isError("", tc.code))
				if got := r.closeCode(); got != tc.close {
					t.Fatalf("close code %d, want %d", got, tc.close)
				}
			})
		}
		t.Run("frames", func(t *testing.T) {
			r := newRaw(t, gw.URL)
			r.send(schema.ClientFrame{Type: schema.FrameAuth, Token: tok})
			r.wait("auth_ok", isType(schema.FrameAuthOK, ""))
			r.send(schema.ClientFrame{Type: schema.FrameSubscribe, ID: "s1", Table: "items", Org: "acme"})
			r.wait("ready", isType(schema.FrameReady, "s1"))
			for _, tc := range []struct{ name, frame, id, code string }{
				{"not json", `{"type":"subscribe"`, "", schema.ErrCodeBadFrame},
				{"unknown type", `{"type":"bogus"}`, "", schema.ErrCodeBadFrame},
				{"missing fields", `{"type":"subscribe","id":"s2"}`, "", schema.ErrCodeBadFrame},
				{"forbidden org", `{"type":"subscribe","id":"s3","table":"items","org":"globex"}`, "s3", schema.ErrCodeForbidden},
				{"unknown table", `{"type":"subscribe","id":"s4","table":"nope","org":"acme"}`, "s4", schema.ErrCodeUnknownTable},
				{"bad columns", `{"type":"subscribe","id":"s5","table":"items","org":"acme","columns":["nope"]}`, "s5", schema.ErrCodeBadColumns},
				{"duplicate id", `{"type":"subscribe","id":"s1","table":"items","org":"acme"}`, "s1", schema.ErrCodeDuplicateID},
				{"unknown subscription", `{"type":"unsubscribe","id":"zz"}`, "zz", schema.ErrCodeUnknownSub},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r.send(tc.frame)
					f := r.wait(tc.code, func(f schema.ServerFrame) bool { return f.Type == schema.FrameError })
					if f.Code != tc.code || (tc.id != "" && f.ID != tc.id) {
						t.Fatalf("got error %s for %q, want %s (id %q)", f.Code, f.ID, tc.code, tc.id)
					}
					// The connection and its subscription s1 keep working.
					next++
					tp.Exec(`INSERT INTO items (org, id, title) VALUES ('acme', $1, 'alive')`, next)
					id := fmt.Sprint(next)
					r.wait("live row "+id, func(f schema.ServerFrame) bool {
						return f.Type == schema.FramePart && len(f.Ops) == 1 && strings.Contains(string(f.Ops[0].Row), `"id":"`+id+`"`)
					})
				})
			}
			t.Run("oversized frame", func(t *testing.T) {
				// The gateway closes while the frame is still being written:
				// write it in the background and ignore the reset.
				go func() {
					_ = r.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":"`+strings.Repeat("x", 2<<20)+`"}`))
				}()
				r.wait("too_large", isError("", schema.ErrCodeTooLarge))
				if got := r.closeCode(); got != websocket.CloseMessageTooBig {
					t.Fatalf("close code %d, want 1009", got)
				}
				stillLive(good) // other connections are not affected
			})
		})
	})

	t.Run("token expires on a live connection", func(t *testing.T) {
		r := newRaw(t, gw.URL)
		r.send(schema.ClientFrame{Type: schema.FrameAuth, Token: Token(t, schema.Claims{Orgs: []string{"acme"}, Expires: time.Now().Add(1500 * time.Millisecond)})})
		r.wait("auth_ok", isType(schema.FrameAuthOK, ""))
		r.send(schema.ClientFrame{Type: schema.FrameSubscribe, ID: "s1", Table: "items", Org: "acme"})
		r.wait("ready", isType(schema.FrameReady, "s1"))
		r.wait("token_expired", isError("", schema.ErrCodeTokenExpired))
		if got := r.closeCode(); got != 4003 {
			t.Fatalf("close code %d, want 4003", got)
		}
	})

	t.Run("fresh token keeps the stream", func(t *testing.T) {
		var mu sync.Mutex
		calls := 0
		fc := Dial(t, gw.URL, "", func(cfg *client.Config) {
			cfg.TokenFunc = func(context.Context) (string, error) {
				mu.Lock()
				defer mu.Unlock()
				calls++
				return Token(t, schema.Claims{Orgs: []string{"acme"}, Expires: time.Now().Add(2 * time.Second)}), nil
			}
		})
		s := Subscribe(t, fc, "items", "acme")
		deadline := time.Now().Add(5 * time.Second) // past two expiries
		for time.Now().Before(deadline) {
			stillLive(s)
		}
		mu.Lock()
		defer mu.Unlock()
		if calls < 3 {
			t.Fatalf("token refreshed %d times in 5s with 2s tokens", calls)
		}
		if s.Err() != nil {
			t.Fatal(s.Err())
		}
	})
}

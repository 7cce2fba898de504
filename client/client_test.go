package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ripple-sync/ripple/schema"
)

// fakeGateway is a scripted WebSocket server speaking the protocol: the test
// reads what the client sends and writes the server frames itself.
type fakeGateway struct {
	t     *testing.T
	srv   *httptest.Server
	conns chan *fakeConn
	// accept decides whether a token is good; exp is sent in auth_ok.
	accept func(token string) bool
	exp    atomic.Int64
	tokens chan string
}

type fakeConn struct {
	t  *testing.T
	ws *websocket.Conn
	in chan schema.ClientFrame
	mu sync.Mutex
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{t: t, conns: make(chan *fakeConn, 16), tokens: make(chan string, 64), accept: func(string) bool { return true }}
	up := websocket.Upgrader{Subprotocols: []string{schema.ProtocolName}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if ws.Subprotocol() != schema.ProtocolName {
			t.Errorf("subprotocol %q", ws.Subprotocol())
		}
		var auth schema.ClientFrame
		if err := ws.ReadJSON(&auth); err != nil || auth.Type != schema.FrameAuth {
			ws.Close()
			return
		}
		g.tokens <- auth.Token
		if !g.accept(auth.Token) {
			ws.WriteJSON(schema.ServerFrame{Type: schema.FrameError, Code: schema.ErrCodeUnauthorized, Message: "bad token"})
			ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "unauthorized"))
			ws.Close()
			return
		}
		ws.WriteJSON(schema.ServerFrame{Type: schema.FrameAuthOK, Sub: "u", Exp: g.exp.Load()})
		fc := &fakeConn{t: t, ws: ws, in: make(chan schema.ClientFrame, 256)}
		go func() {
			defer close(fc.in)
			for {
				var f schema.ClientFrame
				if err := ws.ReadJSON(&f); err != nil {
					return
				}
				fc.in <- f
			}
		}()
		g.conns <- fc
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) url() string { return "ws" + strings.TrimPrefix(g.srv.URL, "http") + "/v1/ws" }

const waitFor = 10 * time.Second

func (g *fakeGateway) next() *fakeConn {
	g.t.Helper()
	select {
	case c := <-g.conns:
		g.t.Cleanup(func() { c.ws.Close() })
		return c
	case <-time.After(waitFor):
		g.t.Fatal("no connection from the client")
		return nil
	}
}

// expect returns the next frame the client sent (skipping pings).
func (c *fakeConn) expect(typ string) schema.ClientFrame {
	c.t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case f, ok := <-c.in:
			if !ok {
				c.t.Fatalf("connection closed while waiting for %s", typ)
			}
			if f.Type == schema.FramePing {
				continue
			}
			if f.Type != typ {
				c.t.Fatalf("client sent %+v, want %s", f, typ)
			}
			return f
		case <-deadline:
			c.t.Fatalf("client sent no %s", typ)
		}
	}
}

func (c *fakeConn) send(frames ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range frames {
		if err := c.ws.WriteMessage(websocket.TextMessage, []byte(f)); err != nil {
			c.t.Logf("send: %v", err)
		}
	}
}

func (c *fakeConn) drop() { c.ws.Close() }

func dialFake(t *testing.T, g *fakeGateway, mod func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: g.url(), Token: "tok", Logger: quietLogger(), ReconnectMin: time.Millisecond, ReconnectMax: 20 * time.Millisecond, ClientID: "c1"}
	if mod != nil {
		mod(&cfg)
	}
	c, err := Dial(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// waitRows polls the view until it shows want.
func waitRows(t *testing.T, s *Subscription, want ...string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got := rowsJSON(s.Rows())
		if slices.Equal(got, want) || (len(got) == 0 && len(want) == 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rows %q, want %q", got, want)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

func TestClientReconnectsAndResumes(t *testing.T) {
	g := newFakeGateway(t)
	c := dialFake(t, g, nil)
	changes := make(chan Change, 100)
	s, err := c.Subscribe(t.Context(), "todos", "acme", OnChangeFunc(func(ch Change) { changes <- ch }))
	if err != nil {
		t.Fatal(err)
	}
	fc := g.next()
	f := fc.expect(schema.FrameSubscribe)
	if f.ID != "s1" || f.Table != "todos" || f.Org != "acme" || f.Cursor != nil || f.LSN != nil {
		t.Fatalf("subscribe %+v", f)
	}
	fc.send(begin("s1", "full"), snap("s1", ins("1", "a")), ready("s1", 0x20, 100))
	if err := s.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitRows(t, s, row("1", "a"))
	fc.send(part("todos", 101, ins("2", "b")), commit(101, 0x30), checkpoint("s1", 0x30, 102))
	for _, want := range []string{`insert todos/acme {"id":"1","title":"a"} @0/20`, `insert todos/acme {"id":"2","title":"b"} @0/30`} {
		select {
		case ch := <-changes:
			if got := fmtChange(ch); got != want {
				t.Fatalf("change %s, want %s", got, want)
			}
		case <-time.After(waitFor):
			t.Fatalf("no change %s", want)
		}
	}
	// Wait until the checkpoint is applied, then cut the connection.
	deadline := time.Now().Add(waitFor)
	for s.Cursor() != 102 {
		if time.Now().After(deadline) {
			t.Fatal("checkpoint not applied")
		}
		time.Sleep(time.Millisecond)
	}
	fc.drop()
	fc2 := g.next()
	f = fc2.expect(schema.FrameSubscribe)
	if f.ID != "s1" || f.Cursor == nil || *f.Cursor != 102 || f.LSN == nil || *f.LSN != 0x30 {
		t.Fatalf("resubscribe %+v", f)
	}
	// The view stays until the new ready.
	fc2.send(begin("s1", "resume"), snap("s1", del("1")))
	fc2.send(`{"type":"ping_is_not_a_server_frame"}`) // malformed: the client reconnects
	fc3 := g.next()
	f = fc3.expect(schema.FrameSubscribe)
	if *f.Cursor != 102 {
		t.Fatalf("resubscribe after bad frame %+v", f)
	}
	if got := rowsJSON(s.Rows()); !slices.Equal(got, []string{row("1", "a"), row("2", "b")}) {
		t.Fatalf("view changed before ready: %q", got)
	}
	fc3.send(begin("s1", "resume"), snap("s1", del("1"), ins("3", "c")), ready("s1", 0x40, 110))
	waitRows(t, s, row("2", "b"), row("3", "c"))
}

func TestClientMutationsAcrossReconnects(t *testing.T) {
	g := newFakeGateway(t)
	c := dialFake(t, g, nil)
	s, _ := c.Subscribe(t.Context(), "todos", "acme")
	fc := g.next()
	fc.expect(schema.FrameSubscribe)
	fc.send(begin("s1", "full"), ready("s1", 0x20, 100))
	if err := s.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	p1, err := c.Mutate(t.Context(), "insert", map[string]any{"table": "todos", "org": "acme", "row": map[string]any{"id": "1", "title": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	waitRows(t, s, row("1", "x")) // optimistic, at once
	if m := fc.expect(schema.FrameMutate); m.MutationID != 1 || m.ClientID != "c1" || m.Mutator != "insert" {
		t.Fatalf("mutate %+v", m)
	}
	// The reply is lost with the connection: the mutation is sent again.
	fc.drop()
	p2, err := c.Mutate(t.Context(), "insert", map[string]any{"table": "todos", "org": "acme", "row": map[string]any{"id": "2", "title": "y"}})
	if err != nil {
		t.Fatal(err)
	}
	fc2 := g.next()
	fc2.expect(schema.FrameSubscribe)
	var ids []int64
	for range 2 {
		ids = append(ids, fc2.expect(schema.FrameMutate).MutationID)
	}
	if !slices.Equal(ids, []int64{1, 2}) {
		t.Fatalf("re-sent %v, want [1 2]", ids)
	}
	fc2.send(begin("s1", "resume"), ready("s1", 0x20, 100))
	fc2.send(reply(1, "applied", 200, ""), reply(2, "rejected", 0, "forbidden"))
	var me *MutationError
	if err := p2.Wait(t.Context()); !errors.As(err, &me) || me.Code != "forbidden" {
		t.Fatalf("p2: %v", err)
	}
	waitRows(t, s, row("1", "x"))
	fc2.send(part("todos", 200, ins("1", "x")), commit(200, 0x50, 1))
	if err := p1.Wait(t.Context()); err != nil {
		t.Fatalf("p1: %v", err)
	}
	if got := rowsJSON(s.Synced()); !slices.Equal(got, []string{row("1", "x")}) {
		t.Fatalf("synced %q", got)
	}
}

func TestClientTokens(t *testing.T) {
	t.Run("refused token fails Dial", func(t *testing.T) {
		g := newFakeGateway(t)
		g.accept = func(string) bool { return false }
		_, err := Dial(t.Context(), Config{URL: g.url(), Token: "bad", Logger: quietLogger()})
		if !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("Dial = %v, want ErrUnauthorized", err)
		}
	})
	t.Run("token_expired reconnects with a fresh token", func(t *testing.T) {
		g := newFakeGateway(t)
		var n atomic.Int64
		g.accept = func(tok string) bool { return tok != "t1" || n.Load() == 1 }
		c := dialFake(t, g, func(cfg *Config) {
			cfg.TokenFunc = func(context.Context) (string, error) { return fmt.Sprintf("t%d", n.Add(1)), nil }
		})
		s, _ := c.Subscribe(t.Context(), "todos", "acme")
		fc := g.next()
		fc.expect(schema.FrameSubscribe)
		fc.send(begin("s1", "full"), snap("s1", ins("1", "a")), ready("s1", 0x20, 100))
		waitRows(t, s, row("1", "a"))
		fc.send(`{"type":"error","code":"token_expired","message":"expired"}`)
		fc2 := g.next()
		if f := fc2.expect(schema.FrameSubscribe); f.Cursor == nil || *f.Cursor != 100 {
			t.Fatalf("resubscribe %+v", f)
		}
		var seen []string
		for len(g.tokens) > 0 {
			seen = append(seen, <-g.tokens)
		}
		if !slices.Equal(seen, []string{"t1", "t2"}) {
			t.Fatalf("tokens %v, want [t1 t2]", seen)
		}
		waitRows(t, s, row("1", "a"))
	})
	t.Run("a token about to expire is refreshed on the connection", func(t *testing.T) {
		g := newFakeGateway(t)
		g.exp.Store(time.Now().Add(2 * time.Second).Unix())
		var n atomic.Int64
		c := dialFake(t, g, func(cfg *Config) {
			cfg.TokenFunc = func(context.Context) (string, error) { return fmt.Sprintf("t%d", n.Add(1)), nil }
		})
		_ = c
		fc := g.next()
		if f := fc.expect(schema.FrameAuth); f.Token != "t2" || f.ClientID != "c1" {
			t.Fatalf("refresh %+v", f)
		}
	})
	t.Run("static token refused after token_expired stops the client", func(t *testing.T) {
		g := newFakeGateway(t)
		var first atomic.Bool
		g.accept = func(string) bool { return first.CompareAndSwap(false, true) }
		c := dialFake(t, g, nil)
		s, _ := c.Subscribe(t.Context(), "todos", "acme")
		fc := g.next()
		fc.expect(schema.FrameSubscribe)
		fc.send(`{"type":"error","code":"token_expired"}`)
		select {
		case <-c.Done():
		case <-time.After(waitFor):
			t.Fatal("client did not stop")
		}
		if err := s.WaitReady(t.Context()); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("WaitReady = %v, want ErrUnauthorized", err)
		}
	})
}

// syncBuffer is an io.Writer safe for the Watch goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Split(strings.TrimSuffix(s.b.String(), "\n"), "\n")
}

func TestWatch(t *testing.T) {
	g := newFakeGateway(t)
	var out syncBuffer
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, &out, WatchConfig{URL: g.url(), Token: "tok", Table: "todos", Org: "acme", Logger: quietLogger()})
	}()
	fc := g.next()
	fc.expect(schema.FrameSubscribe)
	fc.send(begin("s1", "full"), snap("s1", ins("2", "b"), ins("1", "a")), ready("s1", 0x20, 100),
		part("todos", 101, upd("1", "a2"), del("2"), `{"op":"insert","row":{"id":"3","title":null,"n":5,"big":"9007199254740993"}}`), commit(101, 0x30))
	want := []string{
		`{"op":"insert","table":"todos","org":"acme","row":{"id":"1","title":"a"},"lsn":"0/20"}`,
		`{"op":"insert","table":"todos","org":"acme","row":{"id":"2","title":"b"},"lsn":"0/20"}`,
		`{"op":"update","table":"todos","org":"acme","row":{"id":"1","title":"a2"},"lsn":"0/30"}`,
		`{"op":"delete","table":"todos","org":"acme","key":{"id":"2"},"lsn":"0/30"}`,
		`{"op":"insert","table":"todos","org":"acme","row":{"big":"9007199254740993","id":"3","n":5,"title":null},"lsn":"0/30"}`,
	}
	deadline := time.Now().Add(waitFor)
	for !slices.Equal(out.lines(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("watch printed:\n%s\nwant:\n%s", strings.Join(out.lines(), "\n"), strings.Join(want, "\n"))
		}
		time.Sleep(time.Millisecond)
	}
	for _, l := range out.lines() {
		var w WatchLine
		if err := json.Unmarshal([]byte(l), &w); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Watch = %v", err)
	}

	t.Run("forbidden ends the watch with the error", func(t *testing.T) {
		g := newFakeGateway(t)
		done := make(chan error, 1)
		go func() {
			done <- Watch(t.Context(), &out, WatchConfig{URL: g.url(), Token: "tok", Table: "todos", Org: "other", Logger: quietLogger()})
		}()
		fc := g.next()
		fc.expect(schema.FrameSubscribe)
		fc.send(`{"type":"error","id":"s1","code":"forbidden","message":"organisation \"other\" is not in the token"}`)
		var se *ServerError
		if err := <-done; !errors.As(err, &se) || se.Code != "forbidden" {
			t.Fatalf("Watch = %v, want forbidden", err)
		}
	})
}

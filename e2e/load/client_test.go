package load

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func echoServer(t *testing.T) *httptest.Server {
	up := websocket.Upgrader{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			mt, b, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if ws.WriteMessage(mt, b) != nil {
				return
			}
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func wsURL(s *httptest.Server, path string) string {
	return "ws" + strings.TrimPrefix(s.URL, "http") + path
}

// scriptedGateway speaks just enough of the protocol: auth_ok for token
// "tok-<org>", a snapshot of rows rows in batches of 2, ready, and then a
// part and a commit (commit time 5 ms in the past) for every value sent on
// the returned channel's broadcast. refuse names an org answered with
// error forbidden.
type scriptedGateway struct {
	srv    *httptest.Server
	mu     sync.Mutex
	conns  []*websocket.Conn
	rows   int
	refuse string
}

func newScriptedGateway(t *testing.T, rows int, refuse string) *scriptedGateway {
	g := &scriptedGateway{rows: rows, refuse: refuse}
	up := websocket.Upgrader{Subprotocols: []string{Subprotocol}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		var auth, sub struct{ Type, Token, ID, Table, Org string }
		if ws.ReadJSON(&auth) != nil || ws.WriteJSON(map[string]any{"type": "auth_ok", "sub": "u", "exp": 1}) != nil ||
			ws.ReadJSON(&sub) != nil {
			ws.Close()
			return
		}
		if sub.Org == g.refuse || auth.Token != "tok-"+sub.Org {
			_ = ws.WriteJSON(map[string]any{"type": "error", "id": sub.ID, "code": "forbidden", "message": "org " + sub.Org})
			ws.Close()
			return
		}
		_ = ws.WriteJSON(map[string]any{"type": "snapshot_begin", "id": sub.ID, "mode": "full", "key": []string{"id"}})
		for i := 0; i < g.rows; i += 2 {
			ops := []map[string]any{{"op": "insert", "row": map[string]any{"id": i}}}
			if i+1 < g.rows {
				ops = append(ops, map[string]any{"op": "insert", "row": map[string]any{"id": i + 1}})
			}
			// Type first, as the gateway writes it (the client's fast path).
			ob, _ := json.Marshal(ops)
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"snapshot","id":"`+sub.ID+`","ops":`+string(ob)+`}`))
		}
		_ = ws.WriteJSON(map[string]any{"type": "ready", "id": sub.ID, "lsn": "0/1", "cursor": "1"})
		g.mu.Lock()
		g.conns = append(g.conns, ws)
		g.mu.Unlock()
		for { // read until the client closes
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// broadcast sends one transaction (part + commit) to every connection.
func (g *scriptedGateway) broadcast(t *testing.T, xid int, age time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ct := time.Now().Add(-age).UTC().Format(time.RFC3339Nano)
	part := []byte(`{"type":"part","table":"bench_items","org":"o","xid":"1","seq":0,"last":true,"ops":[]}`)
	commit, _ := json.Marshal(map[string]any{"type": "commit", "xid": xid, "lsn": "0/2", "time": ct})
	for _, c := range g.conns {
		if err := c.WriteMessage(websocket.TextMessage, part); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteMessage(websocket.TextMessage, commit); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGeneratorEcho(t *testing.T) {
	s := echoServer(t)
	g, err := Start(context.Background(), Config{URL: wsURL(s, "/"), Clients: 40, Mode: ModeEcho, DialConcurrency: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if st := g.Stats(); st.Ready != 40 || st.Closed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestGeneratorRipple(t *testing.T) {
	gw := newScriptedGateway(t, 5, "")
	orgs := OrgNames("org", 3)
	g, err := Start(context.Background(), Config{URL: wsURL(gw.srv, "/v1/ws"), Clients: 30, Orgs: orgs,
		Token: func(o string) string { return "tok-" + o }})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	before := g.Stats()
	const txs = 4
	for i := 0; i < txs; i++ {
		gw.broadcast(t, i, 5*time.Millisecond)
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.Stats().Commits < 30*txs {
		if time.Now().After(deadline) {
			t.Fatalf("commits %d, want %d", g.Stats().Commits, 30*txs)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
	st := g.Stats()
	lat := st.Latency.Sub(before.Latency)
	if st.Commits != 30*txs || st.Parts != 30*txs || lat.Total() != 30*txs || st.Errors != 0 || st.Closed != 0 {
		t.Fatalf("stats %+v, latencies %d", st, lat.Total())
	}
	if p50 := lat.Quantile(0.5); p50 < 4.9 || p50 > 5000 {
		t.Fatalf("p50 %v ms for commits 5 ms old", p50)
	}
}

func TestGeneratorRefused(t *testing.T) {
	gw := newScriptedGateway(t, 0, "org001")
	_, err := Start(context.Background(), Config{URL: wsURL(gw.srv, "/v1/ws"), Clients: 4, Orgs: OrgNames("org", 2),
		Token: func(o string) string { return "tok-" + o }})
	if err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("err = %v, want a forbidden error", err)
	}
}

func TestGeneratorBadConfig(t *testing.T) {
	tok := func(string) string { return "" }
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no url", Config{Clients: 1, Mode: ModeEcho}},
		{"no clients", Config{URL: "ws://x", Mode: ModeEcho}},
		{"no orgs", Config{URL: "ws://x", Clients: 1, Token: tok}},
		{"no token", Config{URL: "ws://x", Clients: 1, Orgs: []string{"a"}}},
		{"bad mode", Config{URL: "ws://x", Clients: 1, Mode: "x"}},
		{"bad source", Config{URL: "ws://x", Clients: 1, Mode: ModeEcho, SourceAddrs: []string{"localhost"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Start(context.Background(), tc.cfg); !errors.Is(err, ErrBadConfig) {
				t.Fatalf("err = %v, want ErrBadConfig", err)
			}
		})
	}
}

func TestSnapshot(t *testing.T) {
	gw := newScriptedGateway(t, 7, "")
	for _, decode := range []bool{false, true} {
		res, err := Snapshot(context.Background(), SnapshotConfig{URL: wsURL(gw.srv, "/v1/ws"), Token: "tok-big", Org: "big", Decode: decode})
		if err != nil {
			t.Fatal(err)
		}
		if res.Rows != 7 || res.Frames != 4 || res.Mode != "full" || res.Seconds <= 0 || res.RowsPerSecond <= 0 {
			t.Fatalf("decode %v: result %+v", decode, res)
		}
	}
	if _, err := Snapshot(context.Background(), SnapshotConfig{URL: wsURL(gw.srv, "/v1/ws"), Token: "wrong", Org: "big"}); err == nil ||
		!strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("err = %v, want forbidden", err)
	}
	if _, err := Snapshot(context.Background(), SnapshotConfig{URL: wsURL(gw.srv, "/v1/ws")}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("err = %v, want ErrBadConfig", err)
	}
}

package gateway

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ripple-sync/ripple/schema"
)

func isErr(id, code string) func(schema.ServerFrame) bool {
	return func(f schema.ServerFrame) bool { return f.Type == schema.FrameError && f.ID == id && f.Code == code }
}

// Bad input on a connection gets its error code and leaves the
// connection's other subscriptions working.
func TestErrorsKeepOtherSubscriptions(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', 1, 'a')`)
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"acme"}, Tables: []string{"todos", "accounts", "nosuch"}}))
	c.subscribe("ok", "todos", "acme")
	c.waitReady("ok", 1)

	cases := []struct {
		name string
		send func()
		want func(schema.ServerFrame) bool
	}{
		{"forbidden org", func() { c.subscribe("f1", "todos", "other") }, isErr("f1", schema.ErrCodeForbidden)},
		{"forbidden mutation log", func() { c.subscribe("f2", schema.MutationsTable, "acme") }, isErr("f2", schema.ErrCodeForbidden)},
		{"unknown table", func() { c.subscribe("u1", "nosuch", "acme") }, isErr("u1", schema.ErrCodeUnknownTable)},
		{"malformed frame", func() { c.sendRaw([]byte(`{"type":"subscribe","id":`)) }, isErr("", schema.ErrCodeBadFrame)},
		{"unknown frame type", func() { c.sendRaw([]byte(`{"type":"nope"}`)) }, func(f schema.ServerFrame) bool {
			return f.Type == schema.FrameError && f.Code == schema.ErrCodeBadFrame && strings.Contains(f.Message, "nope")
		}},
		{"bad columns", func() {
			c.sendJSON(schema.ClientFrame{Type: schema.FrameSubscribe, ID: "b1", Table: "todos", Org: "acme", Columns: []string{"nope"}})
		}, isErr("b1", schema.ErrCodeBadColumns)},
		{"duplicate id", func() { c.subscribe("ok", "todos", "acme") }, isErr("ok", schema.ErrCodeDuplicateID)},
		{"unknown unsubscribe", func() { c.sendJSON(schema.ClientFrame{Type: schema.FrameUnsubscribe, ID: "zz"}) }, isErr("zz", schema.ErrCodeUnknownSub)},
		{"ping", func() { c.sendJSON(schema.ClientFrame{Type: schema.FramePing, ID: "p1"}) }, func(f schema.ServerFrame) bool {
			return f.Type == schema.FramePong && f.ID == "p1"
		}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.send()
			c.waitFrame(10*time.Second, tc.name, tc.want)
			// The good subscription still receives live commits.
			e.exec(`UPDATE todos SET title = $1 WHERE org='acme' AND id=1`, tc.name)
			c.waitFrame(10*time.Second, "live update", func(f schema.ServerFrame) bool {
				return f.Type == schema.FramePart && len(f.Ops) == 1 && strings.Contains(string(f.Ops[0].Row), tc.name)
			})
			_ = i
		})
	}
	// Nothing was subscribed for the refused requests.
	c.mu.Lock()
	for _, id := range []string{"f1", "f2", "u1", "b1"} {
		if s := c.subs[id]; s != nil && s.ready > 0 {
			t.Errorf("refused subscription %s got ready", id)
		}
	}
	c.mu.Unlock()
	for _, f := range c.frames() {
		if f.Type == schema.FramePart && f.Org == "other" {
			t.Fatal("received a part of a forbidden organisation")
		}
	}
}

func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// Connection-ending errors: bad token, expired token (at auth and while
// connected), oversized frame.
func TestConnectionErrors(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', 1, 'a')`)
	cases := []struct {
		name      string
		run       func(c *tclient)
		code      string
		closeCode int
	}{
		{"bad token", func(c *tclient) { c.auth("garbage.token.here") }, schema.ErrCodeUnauthorized, closeUnauthorized},
		{"wrong secret", func(c *tclient) {
			c.auth("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.AAAA")
		}, schema.ErrCodeUnauthorized, closeUnauthorized},
		{"expired token", func(c *tclient) {
			c.auth(token(t, schema.Claims{Orgs: []string{"acme"}, Expires: time.Now().Add(-time.Minute)}))
		}, schema.ErrCodeTokenExpired, closeTokenExpired},
		{"token expires while live", func(c *tclient) {
			c.auth(token(t, schema.Claims{Orgs: []string{"acme"}, Expires: time.Now().Add(1500 * time.Millisecond)}))
			c.subscribe("s", "todos", "acme")
			c.waitReady("s", 1)
		}, schema.ErrCodeTokenExpired, closeTokenExpired},
		{"oversized frame", func(c *tclient) {
			c.auth(token(t, schema.Claims{Orgs: []string{"acme"}}))
			c.sendRaw([]byte(`{"type":"ping","id":"` + strings.Repeat("x", 2<<20) + `"}`))
		}, schema.ErrCodeTooLarge, closeTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, e).start()
			tc.run(c)
			select {
			case <-c.closed:
			case <-time.After(15 * time.Second):
				t.Fatal("connection not closed")
			}
			c.waitFrame(time.Second, tc.code, isErr("", tc.code))
			if got := closeCode(c.closeErr); got != tc.closeCode {
				t.Fatalf("close code %d (%v), want %d", got, c.closeErr, tc.closeCode)
			}
		})
	}
}

// A fresh token on the connection keeps the stream alive past the first
// token's expiry; a refresh that drops an organisation ends its
// subscriptions with forbidden; a bad refresh changes nothing.
func TestTokenRefresh(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"acme", "beta"}, Expires: time.Now().Add(1500 * time.Millisecond)}))
	c.subscribe("a", "todos", "acme")
	c.subscribe("b", "todos", "beta")
	c.waitReady("a", 1)
	c.waitReady("b", 1)
	c.auth("bad.token.value")
	c.waitFrame(5*time.Second, "refresh refused", isErr("", schema.ErrCodeUnauthorized))
	c.auth(token(t, schema.Claims{Orgs: []string{"acme"}, Expires: time.Now().Add(time.Hour)}))
	c.waitFrame(5*time.Second, "b forbidden", isErr("b", schema.ErrCodeForbidden))
	deadline := time.Now().Add(2 * time.Second)
	for n := 0; time.Now().Before(deadline); n++ {
		e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', $1, 'x')`, n)
		c.waitFrame(5*time.Second, "live commit", func(f schema.ServerFrame) bool {
			return f.Type == schema.FramePart && strings.Contains(string(f.Ops[0].Row), `"id":"`+strconv.Itoa(n)+`"`)
		})
	}
	select {
	case <-c.closed:
		t.Fatalf("connection closed despite a fresh token: %v", c.closeErr)
	default:
	}
}

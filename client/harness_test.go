package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// harness drives an engine with frames fed directly, without a network.
type harness struct {
	t   testing.TB
	c   *Client
	e   *engine
	out *outbox

	mu      sync.Mutex
	changes []string
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHarness(t testing.TB) *harness {
	t.Helper()
	e := newEngine(quietLogger(), "c1", NewMemoryStore(), time.Millisecond, 5*time.Millisecond)
	h := &harness{t: t, e: e, c: &Client{e: e, failed: make(chan struct{})}}
	h.connect()
	return h
}

func (h *harness) connect() {
	h.out = newOutbox()
	h.e.connected(h.out)
}

func (h *harness) disconnect() { h.e.disconnected() }

// sub subscribes to "table/org" and records its changes.
func (h *harness) sub(name string, opts ...SubOption) *Subscription {
	h.t.Helper()
	table, org, _ := strings.Cut(name, "/")
	opts = append(opts, OnChangeFunc(func(c Change) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.changes = append(h.changes, fmtChange(c))
	}))
	s, err := h.c.Subscribe(h.t.Context(), table, org, opts...)
	if err != nil {
		h.t.Fatalf("subscribe %s: %v", name, err)
	}
	return s
}

func fmtChange(c Change) string {
	r := c.Row
	if r == nil {
		r = c.Key
	}
	b, _ := json.Marshal(r)
	local := ""
	if c.Local {
		local = " local"
	}
	return fmt.Sprintf("%s %s/%s %s @%s%s", c.Op, c.Table, c.Org, b, c.LSN, local)
}

// feed decodes and applies server frames.
func (h *harness) feed(frames ...string) {
	h.t.Helper()
	for _, s := range frames {
		f, err := decodeServerFrame([]byte(s))
		if err != nil {
			h.t.Fatalf("decode %s: %v", s, err)
		}
		if err := h.e.handle(f); err != nil {
			h.t.Fatalf("handle %s: %v", s, err)
		}
	}
}

// takeChanges delivers queued notifications and returns them.
func (h *harness) takeChanges() []string {
	h.e.events.deliver(h.e.events.take())
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.changes
	h.changes = nil
	return c
}

// sent returns the frames the client queued since the last call.
func (h *harness) sent() []string {
	var out []string
	for _, f := range h.out.take() {
		b, _ := json.Marshal(f)
		out = append(out, string(b))
	}
	return out
}

func rowsJSON(rows []Row) []string {
	out := []string{}
	for _, r := range rows {
		b, _ := json.Marshal(r)
		out = append(out, string(b))
	}
	return out
}

// Frame builders. Organisation "acme" unless the topic says otherwise.

func lsn(n int) string { return schema.LSN(n).String() }

func begin(id, mode string) string {
	return fmt.Sprintf(`{"type":"snapshot_begin","id":%q,"mode":%q,"key":["id"]}`, id, mode)
}

func snap(id string, ops ...string) string {
	return fmt.Sprintf(`{"type":"snapshot","id":%q,"ops":[%s]}`, id, strings.Join(ops, ","))
}

func ready(id string, l, cursor int) string {
	return fmt.Sprintf(`{"type":"ready","id":%q,"lsn":%q,"cursor":"%d"}`, id, lsn(l), cursor)
}

func checkpoint(id string, l, cursor int) string {
	return fmt.Sprintf(`{"type":"checkpoint","id":%q,"lsn":%q,"cursor":"%d"}`, id, lsn(l), cursor)
}

func ins(id, title string) string {
	return fmt.Sprintf(`{"op":"insert","row":{"id":%q,"title":%q}}`, id, title)
}

func upd(id, title string) string {
	return fmt.Sprintf(`{"op":"update","row":{"id":%q,"title":%q}}`, id, title)
}

func del(id string) string { return fmt.Sprintf(`{"op":"delete","key":{"id":%q}}`, id) }

// part builds a part of topic "table/org" (org defaults to acme).
func part(topicName string, xid int, ops ...string) string {
	table, org, ok := strings.Cut(topicName, "/")
	if !ok {
		org = "acme"
	}
	return fmt.Sprintf(`{"type":"part","table":%q,"org":%q,"xid":"%d","seq":0,"last":true,"ops":[%s]}`, table, org, xid, strings.Join(ops, ","))
}

func commit(xid, l int, confirmed ...int64) string {
	c := ""
	if len(confirmed) > 0 {
		b, _ := json.Marshal(confirmed)
		c = `,"confirmed":` + string(b)
	}
	return fmt.Sprintf(`{"type":"commit","xid":"%d","lsn":%q%s}`, xid, lsn(l), c)
}

func reply(id int64, status string, xid int, code string) string {
	return fmt.Sprintf(`{"type":"mutation","client_id":"c1","mutation_id":%d,"status":%q,"xid":"%d","code":%q,"message":"m"}`, id, status, xid, code)
}

func row(id, title string) string { return fmt.Sprintf(`{"id":%q,"title":%q}`, id, title) }

func contextWithTimeout(t *testing.T, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), d)
}

// tagged adds a subscription id to a part frame.
func tagged(id, part string) string {
	return strings.Replace(part, `{"type":"part",`, fmt.Sprintf(`{"type":"part","id":%q,`, id), 1)
}

package gateway

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// BenchmarkHubFanout measures the hub's per-transaction work for one
// single-part transaction delivered to 100 live subscriptions (100
// connections): decode the NATS message, encode the shared part once, queue
// it and a per-connection commit frame. Sockets are not involved (see
// e2e/load BenchmarkGateway for the end-to-end figures).
func BenchmarkHubFanout(b *testing.B) {
	const clients = 100
	m, _ := newMetrics(nil)
	g := &Gateway{cfg: Config{SnapshotBufferLimit: 10000, OutboundQueue: 1 << 20}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), m: m}
	h := newHub(g, context.Background())
	g.hub = h
	subj := schema.DataSubject("acme", "todos")
	t := &topic{subject: subj, org: "acme", table: "todos", live: true, subs: map[*sub]struct{}{}, confirm: map[*hconn]struct{}{}}
	h.topics[subj] = t
	var conns []*conn
	for range clients {
		c := &conn{g: g, q: newQueue(1 << 20), kill: make(chan struct{})}
		c.q.running = true // no writer: the benchmark drains the queues itself
		hc := h.addConn(c)
		c.hc = hc
		s := &sub{hc: hc, id: "s", t: t, state: stLive}
		hc.subs["s"] = s
		t.subs[s] = struct{}{}
		conns = append(conns, c)
	}
	now := time.Now()
	msgs := make([][]byte, 0, 1024)
	var frames [][]byte
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%1024 == 0 {
			b.StopTimer()
			msgs = msgs[:0]
			for j := range 1024 {
				xid := schema.XID8(1000 + i + j)
				p := schema.Part{K: schema.KindPart, Epoch: "e", XID: xid, Org: "acme", Table: "todos", Last: true,
					LSN: schema.LSN(1 << 20 * (i + j + 1)), CommitTime: now, Subjects: []string{subj},
					Ops: []schema.Op{{Op: "update", Row: json.RawMessage(`{"org":"acme","id":"17","title":"buy oat milk","done":false}`)}}}
				data, _ := json.Marshal(p)
				msgs = append(msgs, data)
			}
			for _, c := range conns {
				frames = c.q.pop(frames[:0])
				c.q.mu.Lock()
				c.q.running = true // pop of an empty queue stops the "writer"
				c.q.mu.Unlock()
			}
			b.StartTimer()
		}
		data := msgs[i%1024]
		var p schema.RawPart
		if err := json.Unmarshal(data, &p); err != nil {
			b.Fatal(err)
		}
		h.onPart(t, &p)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*clients)/b.Elapsed().Seconds(), "deliveries/s")
	if got := testutilValue(m.queueDrops); got != 0 {
		b.Fatalf("%v drops", got)
	}
}

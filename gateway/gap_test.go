package gateway

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// A NATS restart while transfers commit: every subscription is told
// resync (gap), catches up by cursor, never shows a wrong total, and
// converges.
func TestNATSRestartResyncs(t *testing.T) {
	e := newEnv(t, envOpts{})
	setupBank(e)
	tok := token(t, schema.Claims{Orgs: []string{"bank"}})
	var states atomic.Int64
	c := dial(t, e)
	c.check = bankCheck(t, &states)
	c.start()
	c.auth(tok)
	c.subscribe("bank", "accounts", "bank")
	c.waitReady("bank", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var committed atomic.Int64
	wg := transfers(ctx, t, e, 2, &committed)
	waitFor(t, 10*time.Second, "transfers", func() bool { return committed.Load() > 20 })
	e.nats.Restart(t)
	c.waitFrame(20*time.Second, "resync", func(f schema.ServerFrame) bool {
		return f.Type == schema.FrameResync && f.ID == "bank" && f.Reason == "gap"
	})
	c.waitReady("bank", 2)
	start := committed.Load()
	waitFor(t, 20*time.Second, "transfers after the restart", func() bool { return committed.Load() > start+20 })
	cancel()
	wg.Wait()
	want := e.tableRows("accounts", "bank")
	waitFor(t, 20*time.Second, "client converges", func() bool { return slices.Equal(c.viewOf("bank"), want) })
	if f := lastOf(c, schema.FrameSnapshotBegin); f.Mode != schema.SnapshotResume {
		t.Fatalf("resync was not a resume: %+v", f)
	}
}

func lastOf(c *tclient, typ string) schema.ServerFrame {
	var out schema.ServerFrame
	for _, f := range c.frames() {
		if f.Type == typ {
			out = f
		}
	}
	return out
}

// TRUNCATE resynchronises the table's subscriptions with a full snapshot.
func TestTruncateResync(t *testing.T) {
	e := newEnv(t, envOpts{})
	for i := range 10 {
		e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', $1, 'x')`, i)
	}
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"acme"}}))
	c.subscribe("s", "todos", "acme")
	c.waitReady("s", 1)
	e.exec(`TRUNCATE todos`)
	e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', 100, 'after')`)
	c.waitFrame(10*time.Second, "resync", func(f schema.ServerFrame) bool { return f.Type == schema.FrameResync && f.ID == "s" })
	want := e.tableRows("todos", "acme")
	waitFor(t, 10*time.Second, "converges", func() bool { return slices.Equal(c.viewOf("s"), want) })
	if len(want) != 1 {
		t.Fatalf("table has %d rows", len(want))
	}
}

// Clients on a gateway attached to cluster B of a super-cluster, with the
// ingest on cluster A, lose nothing.
func TestSuperCluster(t *testing.T) {
	a, b := testenv.StartSuperCluster(t, 1)
	e := newEnv(t, envOpts{ingestNATS: a[0].URL(), gatewayNATS: b[0].URL()})
	setupBank(e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var committed atomic.Int64
	wg := transfers(ctx, t, e, 2, &committed)
	tok := token(t, schema.Claims{Orgs: []string{"bank"}})
	var states atomic.Int64
	var mu sync.Mutex
	var clients []*tclient
	for range 3 {
		c := dial(t, e)
		c.check = bankCheck(t, &states)
		c.start()
		c.auth(tok)
		c.subscribe("bank", "accounts", "bank")
		c.waitReady("bank", 1)
		mu.Lock()
		clients = append(clients, c)
		mu.Unlock()
		start := committed.Load()
		waitFor(t, 10*time.Second, "transfers", func() bool { return committed.Load() > start+20 })
	}
	cancel()
	wg.Wait()
	want := e.tableRows("accounts", "bank")
	for _, c := range clients {
		waitFor(t, 20*time.Second, "converges", func() bool { return slices.Equal(c.viewOf("bank"), want) })
		for _, f := range c.frames() {
			if f.Type == schema.FrameResync {
				t.Errorf("unexpected resync %+v", f)
			}
		}
	}
}

// The ingest stops (heartbeats stop) and a new one takes over from the slot
// (a new epoch, repeating what it had not confirmed): subscriptions are
// resynchronised (gap), never show a wrong total, and converge.
func TestIngestRestart(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.HeartbeatTimeout = 500 * time.Millisecond }})
	setupBank(e)
	tok := token(t, schema.Claims{Orgs: []string{"bank"}})
	var states atomic.Int64
	c := dial(t, e)
	c.check = bankCheck(t, &states)
	c.start()
	c.auth(tok)
	c.subscribe("bank", "accounts", "bank")
	c.waitReady("bank", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var committed atomic.Int64
	wg := transfers(ctx, t, e, 2, &committed)
	waitFor(t, 10*time.Second, "transfers", func() bool { return committed.Load() > 20 })
	e.stopIngest()
	c.waitFrame(10*time.Second, "resync", func(f schema.ServerFrame) bool {
		return f.Type == schema.FrameResync && f.ID == "bank" && f.Reason == "gap"
	})
	waitFor(t, 10*time.Second, "not ready", func() bool { return !e.gw.Ready() })
	start := committed.Load()
	waitFor(t, 10*time.Second, "transfers without ingest", func() bool { return committed.Load() > start+20 })
	e.startIngest()
	c.waitReady("bank", 2)
	waitFor(t, 10*time.Second, "ready again", e.gw.Ready)
	start = committed.Load()
	waitFor(t, 10*time.Second, "transfers after", func() bool { return committed.Load() > start+20 })
	cancel()
	wg.Wait()
	want := e.tableRows("accounts", "bank")
	waitFor(t, 20*time.Second, "converges", func() bool { return slices.Equal(c.viewOf("bank"), want) })
}

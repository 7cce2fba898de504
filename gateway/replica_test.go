package gateway

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// Replica replay paused while commits flow: a new subscription and a
// resuming one wait (replica_lag, retried by the gateway) instead of showing
// data older than the stream or than what the client had; after replay
// resumes both converge.
func TestReplicaReplayPaused(t *testing.T) {
	e := newEnv(t, envOpts{replica: true})
	setupBank(e)
	tok := token(t, schema.Claims{Orgs: []string{"bank"}})
	var states atomic.Int64
	old := dial(t, e)
	old.check = bankCheck(t, &states)
	old.start()
	old.auth(tok)
	old.subscribe("bank", "accounts", "bank")
	old.waitReady("bank", 1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var committed atomic.Int64
	wg := transfers(ctx, t, e, 2, &committed)
	waitFor(t, 10*time.Second, "transfers", func() bool { return committed.Load() > 20 })

	e.replica.PauseReplay(t)
	start := committed.Load()
	waitFor(t, 10*time.Second, "transfers while paused", func() bool { return committed.Load() > start+20 })
	// The live client keeps receiving (the stream does not need the replica).
	old.mu.Lock()
	before := old.subs["bank"].lsn
	old.mu.Unlock()
	old.ws.Close()
	<-old.closed

	fresh := dial(t, e)
	fresh.check = bankCheck(t, &states)
	fresh.start()
	fresh.auth(tok)
	fresh.subscribe("bank", "accounts", "bank")
	res := dial(t, e)
	res.check = bankCheck(t, &states)
	res.start()
	res.auth(tok)
	res.resume(old, "bank")
	for _, c := range []*tclient{fresh, res} {
		c.waitFrame(20*time.Second, "replica_lag", isErr("bank", schema.ErrCodeReplicaLag))
		c.mu.Lock()
		if c.subs["bank"].ready != 0 {
			t.Error("a subscription got ready while the replica was behind")
		}
		c.mu.Unlock()
	}
	e.replica.ResumeReplay(t)
	fresh.waitReady("bank", 1)
	res.waitReady("bank", 1)
	res.mu.Lock()
	if got := res.subs["bank"].lsn; got < before {
		t.Errorf("resumed at %s, older than the %s it had shown", got, before)
	}
	res.mu.Unlock()
	cancel()
	wg.Wait()
	want := e.tableRows("accounts", "bank")
	for _, c := range []*tclient{fresh, res} {
		waitFor(t, 20*time.Second, "converges", func() bool { return slices.Equal(c.viewOf("bank"), want) })
	}
}

// More live commits arrive while a catch-up waits for the replica than the
// connection's outbound queue holds: they end the catch-up in one bulk
// (bounded by SnapshotBufferLimit), and the client is not cut as a slow
// client for them.
func TestCatchupTailLargerThanQueue(t *testing.T) {
	e := newEnv(t, envOpts{replica: true, replicaWait: 30 * time.Second, cfg: func(c *Config) { c.OutboundQueue = 16 }})
	setupBank(e)
	tok := token(t, schema.Claims{Orgs: []string{"bank"}})
	var states atomic.Int64
	live := dial(t, e) // keeps the topic live
	live.check = bankCheck(t, &states)
	live.start()
	live.auth(tok)
	live.subscribe("bank", "accounts", "bank")
	live.waitReady("bank", 1)

	hubDo := func(f func(h *hub) bool) bool {
		ch := make(chan bool, 1)
		if !e.gw.hub.post(func() { ch <- f(e.gw.hub) }) {
			t.Fatal("hub stopped")
		}
		return <-ch
	}
	// transfer moves 1 from account 0 to account k and waits until the
	// gateway received it.
	transfer := func(k int) {
		var end string
		if err := e.pool.QueryRow(context.Background(), `WITH u AS (UPDATE accounts SET balance = balance + CASE id WHEN 0 THEN -1 ELSE 1 END
			WHERE org = 'bank' AND id IN (0, $1) RETURNING 1) SELECT pg_current_wal_insert_lsn()::text FROM (SELECT count(*) FROM u) c`, k).Scan(&end); err != nil {
			t.Fatal(err)
		}
		endLSN, err := schema.ParseLSN(end)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the gateway receives the transfer", func() bool {
			return hubDo(func(h *hub) bool { return h.d >= endLSN })
		})
	}
	e.replica.PauseReplay(t)
	transfer(1) // the replica is now behind the stream: a catch-up waits
	fresh := dial(t, e)
	fresh.check = bankCheck(t, &states)
	fresh.start()
	fresh.auth(tok)
	fresh.subscribe("bank", "accounts", "bank")
	waitFor(t, 10*time.Second, "the catch-up waiting for the replica", func() bool {
		return hubDo(func(h *hub) bool {
			n := 0
			for _, tp := range h.topics {
				for s := range tp.subs {
					if s.state == stCatchup && s.buffering {
						n++
					}
				}
			}
			return n == 1
		})
	})
	for i := range 40 { // 80 frames for a queue of 16
		transfer(1 + i%5)
	}
	e.replica.ResumeReplay(t)
	fresh.waitReady("bank", 1)
	want := e.tableRows("accounts", "bank")
	for _, c := range []*tclient{live, fresh} {
		waitFor(t, 20*time.Second, "converges", func() bool { return slices.Equal(c.viewOf("bank"), want) })
	}
	for _, f := range fresh.frames() {
		if f.Type == schema.FrameError {
			t.Errorf("unexpected error frame %+v", f)
		}
	}
}

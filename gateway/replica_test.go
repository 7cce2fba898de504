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

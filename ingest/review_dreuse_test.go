package ingest

import (
	"fmt"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// Review (rules 1, 5, 9). A session that ends because the NATS connection
// dropped restarts from the slot's confirmed position: messages of the old
// session after its last flushed heartbeat may have been lost in NATS. But
// Ingest.d survives the session (connect: s.i.d = max(s.i.d, s.acked)), so
// the new session's first heartbeat (and any barrier or position reply)
// claims D >= L for a commit L that it has not yet published again. A
// gateway on another cluster node that lost the old publication of L sees
// no NATS event; it takes D (and a checkpoint <= D) as proof that every
// commit <= D arrived, sends the checkpoint to its clients (whose LSN then
// passes L, so the client engine drops the repeat of L as already applied)
// and may show snapshots bounded at U <= D early.
//
// Here the ingest is connected to node 0 of a two-node cluster and the
// observer to node 1; node 0 is shut down right after the ingest published
// commit X and before it acknowledged X; the ingest reconnects to node 1
// and repeats X. No heartbeat with D >= X may reach the observer before the
// repeat of X.
func TestReviewDNotClaimedBeforeRepeatAfterNATSLoss(t *testing.T) {
	e := newEnv(t)
	cl := testenv.StartNATSCluster(t, 2)
	cfg := e.config(t)
	cfg.NATSURL = cl[0].URL()
	// A long interval: nothing acknowledges X before node 0 goes away.
	cfg.HeartbeatInterval = 5 * time.Second
	c := collect(t, cl[1].Connect(t), "sync.>", schema.SubjectControl)
	e.start(t, cfg)
	c.wait(10*time.Second, "first heartbeat", func(recs []rec) bool { return maxD(recs) > 0 })

	e.exec(t, "INSERT INTO todos (org_id, id) VALUES ('dx', 1)")
	subj := schema.DataSubject("dx", "todos")
	recs := c.wait(10*time.Second, "X", func(recs []rec) bool { return len(lastParts(recs)[subj]) == 1 })
	x := lastParts(recs)[subj][0]
	for _, r := range recs {
		if r.hb != nil && r.hb.D >= x.LSN {
			t.Fatalf("X (%s) was acknowledged before node 0 went away; cannot provoke the interleaving", x.LSN)
		}
	}
	n := len(recs)
	cl[0].Shutdown()

	recs = c.wait(30*time.Second, "repeat of X", func(recs []rec) bool { return len(lastParts(recs)[subj]) >= 2 })
	var early []string
	for _, r := range recs[n:] {
		if r.part != nil && r.subject == subj && r.part.XID == x.XID {
			break
		}
		if r.hb != nil && r.hb.D >= x.LSN {
			early = append(early, fmt.Sprintf("heartbeat D=%s checkpoint=%+v", r.hb.D, r.hb.Checkpoint))
		}
	}
	if len(early) > 0 {
		t.Errorf("after the NATS loss the new session claimed D >= X's commit %s before publishing X again: %v", x.LSN, early)
	}
}

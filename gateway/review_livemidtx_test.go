package gateway

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// Review (rules 2, 3, 4). A large transaction X publishes chunks on
// sync.acme.accounts (the gateway's current transaction becomes X); while X
// is still being published, a client subscribes to sync.<org>.todos. The
// ingest does not defer that barrier (no chunk of X went out on todos), so
// every part of X on todos follows the barrier. The hub once dropped every
// part of X on a topic that became live during X ("its earlier parts may be
// missing"); it must not. On a primary the snapshot
// happens to contain X already; on a replica it need not: the catch-up only
// waits for replay to reach D (< X's commit LSN), so a standby whose replay
// stops before X's commit record (recovery_min_apply_delay here; any replay
// lag in production) gives a snapshot without X and an upper bound U (the
// receive LSN) past X. The subscription becomes ready at an LSN >= X's
// commit without X's todos row: the row would be lost for good.
//
// The barrier must reach the ingest while it streams X; an attempt where it
// arrives later (the catch-up then waits for replay past X: replica_lag) is
// repeated with a fresh topic.
func TestReviewTopicLiveMidTransactionOnReplica(t *testing.T) {
	e := newEnv(t, envOpts{replica: true})
	ctx := context.Background()
	a := dial(t, e).start()
	a.auth(token(t, schema.Claims{Orgs: []string{"acme"}}))
	a.subscribe("acc", "accounts", "acme")
	a.waitReady("acc", 1)
	b := dial(t, e).start()
	b.auth(token(t, schema.Claims{Orgs: []string{"warm", "t0", "t1", "t2", "t3", "t4"}}))
	b.subscribe("warm", "todos", "warm") // table metadata cached: later subscribes go straight to the hub
	b.waitReady("warm", 1)

	setDelay := func(v string) {
		e.replica.Exec(t, "postgres", "ALTER SYSTEM SET recovery_min_apply_delay = '"+v+"'")
		e.replica.Exec(t, "postgres", "SELECT pg_reload_conf()")
		waitFor(t, 10*time.Second, "recovery_min_apply_delay "+v, func() bool {
			conn := e.replica.Connect(t, "postgres")
			defer conn.Close(ctx)
			var got string
			_ = conn.QueryRow(ctx, "SHOW recovery_min_apply_delay").Scan(&got)
			return got == v
		})
	}
	for attempt := 0; attempt < 5; attempt++ {
		org, id := fmt.Sprintf("t%d", attempt), fmt.Sprintf("s%d", attempt)
		// Replay everything so far, then hold replay before the next
		// commit record (replay goes on up to it, so it passes D).
		setDelay("0")
		e.replica.WaitCaughtUp(t)
		setDelay("1h")

		// X: many accounts rows (chunked), then one todos row.
		done := make(chan error, 1)
		go func() {
			tx, err := e.pool.Begin(ctx)
			if err != nil {
				done <- err
				return
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, "INSERT INTO accounts SELECT 'acme', g, $1 FROM generate_series(1, 300000) g ON CONFLICT (org, id) DO UPDATE SET balance = EXCLUDED.balance", attempt); err != nil {
				done <- err
				return
			}
			if _, err := tx.Exec(ctx, "INSERT INTO todos (org, id, title) VALUES ($1, 1, 'from X')", org); err != nil {
				done <- err
				return
			}
			done <- tx.Commit(ctx)
		}()
		n := len(a.frames())
		var first schema.ServerFrame
		waitFor(t, 60*time.Second, "first chunk of X", func() bool {
			for _, f := range a.frames()[n:] {
				if f.Type == schema.FramePart && f.Table == "accounts" && !f.Last {
					first = f
					return true
				}
			}
			return false
		})
		b.subscribe(id, "todos", org)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		xCommit := a.waitFrame(60*time.Second, "commit of X", func(f schema.ServerFrame) bool {
			return f.Type == schema.FrameCommit && f.XID == first.XID
		})
		var got schema.ServerFrame
		waitFor(t, 30*time.Second, "ready or replica_lag", func() bool {
			for _, f := range b.frames() {
				if f.ID == id && (f.Type == schema.FrameReady || (f.Type == schema.FrameError && f.Code == schema.ErrCodeReplicaLag)) {
					got = f
					return true
				}
			}
			return false
		})
		if got.Type == schema.FrameError {
			t.Logf("attempt %d: the barrier reached the ingest after X (%s); again", attempt, got.Message)
			b.sendJSON(schema.ClientFrame{Type: schema.FrameUnsubscribe, ID: id})
			continue
		}
		t.Logf("attempt %d: X = xid %s commit %s; ready at %s while the replica holds X's commit", attempt, first.XID, xCommit.LSN, got.LSN)
		setDelay("0")
		if got.LSN < xCommit.LSN {
			// X reaches the client through the stream: nothing shown.
			b.waitReady(id, 1)
		}
		has := func() bool {
			return slices.ContainsFunc(b.viewOf(id), func(r string) bool { return strings.Contains(r, "from X") })
		}
		deadline := time.Now().Add(5 * time.Second)
		for !has() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !has() {
			t.Fatalf("b's todos subscription is ready at %s (X committed at %s) but never gets X's row: %v", got.LSN, xCommit.LSN, b.viewOf(id))
		}
		return
	}
	t.Fatal("no attempt had the barrier reach the ingest while it streamed X")
}

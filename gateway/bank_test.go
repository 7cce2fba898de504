package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"github.com/jackc/pgx/v5"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

const (
	bankAccounts = 20
	bankInitial  = 1000
)

// bankCheck fails the test when a visible state of subscription "bank"
// does not total the constant.
func bankCheck(t testing.TB, states *atomic.Int64) func(c *tclient, id string) {
	return func(c *tclient, id string) {
		s := c.subs["bank"]
		if s == nil || !s.live {
			return
		}
		states.Add(1)
		total := 0
		for _, row := range s.view {
			var r struct {
				Balance string `json:"balance"`
			}
			if err := json.Unmarshal(row, &r); err != nil {
				t.Errorf("row %s: %v", row, err)
				return
			}
			b, _ := strconv.Atoi(r.Balance)
			total += b
		}
		if len(s.view) != bankAccounts || total != bankAccounts*bankInitial {
			t.Errorf("visible state with %d accounts totals %d at LSN %s (want %d)", len(s.view), total, s.lsn, bankAccounts*bankInitial)

		}
	}
}

// transfers moves money between accounts in transactions until ctx ends;
// each transfer updates two rows of one transaction (sometimes in separate
// statements, sometimes with a delete+insert of the same row).
func transfers(ctx context.Context, t testing.TB, e *env, workers int, done *atomic.Int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for ctx.Err() == nil {
				a, b := r.IntN(bankAccounts), r.IntN(bankAccounts)
				if a == b {
					continue
				}
				amt := r.IntN(50) + 1
				tx, err := e.pool.Begin(ctx)
				if err != nil {
					return
				}
				_, err1 := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $1 WHERE org='bank' AND id=$2`, amt, a)
				_, err2 := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $1 WHERE org='bank' AND id=$2`, amt, b)
				if err1 != nil || err2 != nil {
					_ = tx.Rollback(context.Background())
					continue // deadlock between workers: fine, try again
				}
				if err := tx.Commit(ctx); err == nil {
					done.Add(1)
				}
			}
		}()
	}
	return &wg
}

func setupBank(e *env) {
	for i := range bankAccounts {
		e.exec(`INSERT INTO accounts (org, id, balance) VALUES ('bank', $1, $2)`, i, bankInitial)
	}
}

// A bank workload: no visible state of any client ever totals anything but
// the constant, including clients subscribing mid-stream and resuming by
// cursor after a disconnect.
func TestBankInvariant(t *testing.T) {
	e := newEnv(t, envOpts{})
	setupBank(e)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var committed atomic.Int64
	wg := transfers(ctx, t, e, 4, &committed)
	tok := token(t, schema.Claims{Orgs: []string{"bank"}})
	var states atomic.Int64
	var clients []*tclient
	for i := range 5 {
		c := dial(t, e)
		c.check = bankCheck(t, &states)
		c.start()
		c.auth(tok)
		c.subscribe("bank", "accounts", "bank")
		c.waitReady("bank", 1)
		clients = append(clients, c)
		start := committed.Load()
		waitFor(t, 10*time.Second, "transfers", func() bool { return committed.Load() > start+20 })
		if i%2 == 1 {
			// Disconnect and resume by cursor while transfers continue.
			c.ws.Close()
			<-c.closed
			start := committed.Load()
			waitFor(t, 10*time.Second, "transfers while offline", func() bool { return committed.Load() > start+30 })
			r := dial(t, e)
			r.check = bankCheck(t, &states)
			r.start()
			r.auth(tok)
			r.resume(c, "bank")
			r.waitReady("bank", 1)
			clients[len(clients)-1] = r
			if f := r.waitFrame(5*time.Second, "snapshot_begin", func(f schema.ServerFrame) bool { return f.Type == schema.FrameSnapshotBegin }); f.Mode != schema.SnapshotResume {
				t.Errorf("resume got mode %q", f.Mode)
			}
		}
	}
	cancel()
	wg.Wait()
	want := e.tableRows("accounts", "bank")
	for i, c := range clients {
		waitFor(t, 15*time.Second, "client converges", func() bool { return slices.Equal(c.viewOf("bank"), want) })
		_ = i
	}
	if states.Load() < 50 {
		t.Fatalf("only %d visible states checked", states.Load())
	}
	t.Logf("%d transfers, %d visible states checked", committed.Load(), states.Load())
}

// A commit can be decoded, published and received by the gateway before it
// is visible to new snapshots on the primary (its commit record is flushed
// before the backend leaves the proc array). Here a transfer's commit is
// held in that state (it waits for a synchronous standby that does not
// exist) while a client subscribes, and the catch-up runs as a role that
// cannot see other sessions' wait events, so the catch-up cannot notice the
// wait itself: the gateway must not show the snapshot without the transfer
// (the transfer is not in the live buffer either, it arrived before the
// subscription). It takes other snapshots until one sees the transfer, and
// the client's first state totals right.
func TestSnapshotMissingReceivedCommit(t *testing.T) {
	e := newEnv(t, envOpts{ownCluster: true, catchupRole: "reader"})
	setupBank(e)
	tok := token(t, schema.Claims{Orgs: []string{"bank"}})
	var states atomic.Int64
	live := dial(t, e)
	live.check = bankCheck(t, &states)
	live.start()
	live.auth(tok)
	live.subscribe("bank", "accounts", "bank")
	live.waitReady("bank", 1)

	e.exec(`ALTER SYSTEM SET synchronous_standby_names = 'nobody'`)
	e.exec(`SELECT pg_reload_conf()`)
	released := false
	release := func() {
		if !released {
			released = true
			e.exec(`ALTER SYSTEM RESET synchronous_standby_names`)
			e.exec(`SELECT pg_reload_conf()`)
		}
	}
	defer release()
	// The checkpointer applies the reloaded setting to the shared state
	// that makes commits wait, after the backends may already have it: a
	// transfer that commits without waiting is followed by another.
	var held chan error
	balance := bankInitial
	for attempt := 0; ; attempt++ {
		balance -= 7
		held = make(chan error, 1)
		go func() {
			held <- pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error {
				_, err := tx.Exec(context.Background(), `UPDATE accounts SET balance = balance + CASE id WHEN 0 THEN -7 ELSE 7 END
					WHERE org = 'bank' AND id IN (0, 1)`)
				return err
			})
		}()
		// The live client receives the transfer: it was published.
		want := []byte(fmt.Sprintf(`"balance":"%d"`, balance))
		waitFor(t, 10*time.Second, "the transfer reaches the live client", func() bool {
			live.mu.Lock()
			defer live.mu.Unlock()
			return bytes.Contains(live.subs["bank"].view[`"bank"|"0"|`], want)
		})
		select {
		case err := <-held:
			if err != nil || attempt == 100 {
				t.Fatalf("no transfer held in %d attempts (err %v)", attempt+1, err)
			}
			continue
		default:
		}
		break
	}
	late := dial(t, e)
	late.check = bankCheck(t, &states)
	late.start()
	late.auth(tok)
	late.subscribe("bank", "accounts", "bank")
	retakes := func() float64 { return testutilValue(e.gw.m.catchups.WithLabelValues("retake")) }
	// The catch-up either finishes with a snapshot that misses the
	// transfer, or it is held itself (writing a commit to flush WAL past
	// its snapshot's bound): either way the late client must not be shown
	// anything yet.
	waitFor(t, 10*time.Second, "the late catch-up's first snapshot", func() bool {
		var waiting int
		if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE usename = 'reader' AND wait_event = 'SyncRep'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		late.mu.Lock()
		defer late.mu.Unlock()
		return retakes() > 0 || waiting > 0 || late.subs["bank"].ready > 0
	})
	release()
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	late.waitReady("bank", 1)
	if retakes() == 0 {
		t.Errorf("no snapshot was retaken")
	}
	want := e.tableRows("accounts", "bank")
	for _, c := range []*tclient{live, late} {
		waitFor(t, 10*time.Second, "converges", func() bool { return slices.Equal(c.viewOf("bank"), want) })
	}
}

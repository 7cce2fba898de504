package gateway

import (
	"context"
	"encoding/json"
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

package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/client"
	"github.com/ripple-sync/ripple/schema"
)

// workload runs fn in n goroutines, paced about every `every`, until Stop.
type workload struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	commits atomic.Int64
	errMu   sync.Mutex
	err     error
}

func startWorkload(t testing.TB, n int, every time.Duration, fn func(ctx context.Context, rng *rand.Rand) error) *workload {
	w := &workload{stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		w.wg.Add(1)
		go func(seed uint64) {
			defer w.wg.Done()
			rng := rand.New(rand.NewPCG(seed, 7))
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-w.stop:
					return
				case <-tick.C:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := fn(ctx, rng)
				cancel()
				if err != nil && !isRetryable(err) {
					w.errMu.Lock()
					if w.err == nil {
						w.err = err
					}
					w.errMu.Unlock()
					return
				}
				if err == nil {
					w.commits.Add(1)
				}
			}
		}(uint64(i + 1))
	}
	t.Cleanup(func() { w.Stop(t) })
	return w
}

func isRetryable(err error) bool {
	var s interface{ SQLState() string }
	if errors.As(err, &s) {
		return s.SQLState() == "40P01" || s.SQLState() == "40001"
	}
	return false
}

// Stop stops the workload and fails the test if a transaction failed.
func (w *workload) Stop(t testing.TB) {
	t.Helper()
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.wg.Wait()
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if w.err != nil {
		t.Fatalf("workload: %v", w.err)
	}
}

// waitCommits waits until the workload committed at least n more
// transactions than it had when called.
func (w *workload) waitCommits(t testing.TB, n int64) {
	t.Helper()
	base := w.commits.Load()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d commits", n), func() bool {
		w.errMu.Lock()
		err := w.err
		w.errMu.Unlock()
		if err != nil {
			t.Fatalf("workload: %v", err)
		}
		return w.commits.Load() >= base+n
	})
}

// itemsWorkload inserts, updates (v+1) and deletes random items of org
// in transactions of one to three statements.
func (tp *Topology) itemsWorkload(org string, ids int) func(ctx context.Context, rng *rand.Rand) error {
	return func(ctx context.Context, rng *rand.Rand) error {
		return pgx.BeginFunc(ctx, tp.Pool, func(tx pgx.Tx) error {
			for n := 1 + rng.IntN(3); n > 0; n-- {
				id := 1 + rng.IntN(ids)
				var err error
				if rng.IntN(5) == 0 {
					_, err = tx.Exec(ctx, `DELETE FROM items WHERE org = $1 AND id = $2`, org, id)
				} else {
					_, err = tx.Exec(ctx, `INSERT INTO items (org, id, v, title) VALUES ($1, $2, 1, 't'||$3::text)
						ON CONFLICT (org, id) DO UPDATE SET v = items.v + 1, title = excluded.title`, org, id, fmt.Sprint(rng.IntN(1000)))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
	}
}

// TestConvergeWhileSubscribing: writers commit continuously while clients
// subscribe at different moments; every client's final view equals the table.
func TestConvergeWhileSubscribing(t *testing.T) {
	tp := Start(t, Options{})
	gw := tp.Gateways[0]
	tok := Token(t, schema.Claims{Orgs: []string{"acme"}})
	w := startWorkload(t, 2, 2*time.Millisecond, tp.itemsWorkload("acme", 60))
	noise := startWorkload(t, 1, 5*time.Millisecond, tp.itemsWorkload("globex", 20))
	var subs []*client.Subscription
	for i := 0; i < 4; i++ {
		w.waitCommits(t, 150)
		c := Dial(t, gw.URL, tok)
		subs = append(subs, Subscribe(t, c, "items", "acme"))
	}
	w.waitCommits(t, 150)
	w.Stop(t)
	noise.Stop(t)
	t.Logf("%d commits", w.commits.Load())
	for _, s := range subs {
		tp.WaitConverged(s, 15*time.Second)
	}
}

// bankCheck watches one subscription of the bank's accounts and records
// every visible state whose total differs from total, and any LSN that goes
// backwards, both in OnChange and in a sampler.
type bankCheck struct {
	name  string
	total int64
	n     int
	v     *violations
	sub   atomic.Pointer[client.Subscription]
	mu    sync.Mutex
	last  schema.LSN
	seen  atomic.Int64
}

func (b *bankCheck) checkView(s *client.Subscription, where string) {
	if s == nil || !s.Ready() {
		return
	}
	rows := s.Rows()
	if len(rows) == 0 {
		return
	}
	var sum int64
	for _, r := range rows {
		sum += num(r["balance"])
	}
	b.seen.Add(1)
	if len(rows) != b.n || sum != b.total {
		b.v.add("%s (%s): %d accounts, total %d, want %d and %d (lsn %s)", b.name, where, len(rows), sum, b.n, b.total, s.LSN())
	}
}

func (b *bankCheck) onChange(c client.Change) {
	b.mu.Lock()
	if c.LSN < b.last {
		b.v.add("%s: change at lsn %s after %s", b.name, c.LSN, b.last)
	}
	b.last = c.LSN
	b.mu.Unlock()
	b.checkView(b.sub.Load(), "OnChange")
}

// sample checks the view continuously until stop.
func (b *bankCheck) sample(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	var last schema.LSN
	for {
		select {
		case <-stop:
			return
		default:
		}
		s := b.sub.Load()
		if s != nil {
			l := s.LSN()
			if l < last {
				b.v.add("%s: view lsn %s after %s", b.name, l, last)
			}
			last = l
			b.checkView(s, "sampler")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBankTotalConstant: concurrent transfers between accounts of one org;
// clients subscribed before, mid-stream, and one that is cut off and resumes
// never show a total other than the constant, and never go back in time.
func TestBankTotalConstant(t *testing.T) {
	tp := Start(t, Options{})
	gw := tp.Gateways[0]
	const accounts, balance = 20, 1000
	for _, org := range []string{"acme", "globex"} {
		tp.Exec(`INSERT INTO accounts (org, id, balance) SELECT $1, g, $2 FROM generate_series(1, $3) g`, org, balance, accounts)
	}
	transfer := func(org string) func(ctx context.Context, rng *rand.Rand) error {
		return func(ctx context.Context, rng *rand.Rand) error {
			return pgx.BeginFunc(ctx, tp.Pool, func(tx pgx.Tx) error {
				// Two or three legs, so parts of a transaction are
				// several rows; no balance check (negatives are fine).
				legs := 2 + rng.IntN(2)
				ids := rng.Perm(accounts)[:legs]
				amounts := make([]int, legs)
				for i := 0; i < legs-1; i++ {
					amounts[i] = 1 + rng.IntN(100)
					amounts[legs-1] -= amounts[i]
				}
				for i, id := range ids {
					if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $3 WHERE org = $1 AND id = $2`,
						org, id+1, amounts[i]); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	tok := Token(t, schema.Claims{Orgs: []string{"acme"}})
	v := &violations{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	watch := func(name, url string) (*bankCheck, *client.Client) {
		b := &bankCheck{name: name, total: accounts * balance, n: accounts, v: v}
		c := Dial(t, url, tok)
		b.sub.Store(Subscribe(t, c, "accounts", "acme", client.OnChangeFunc(b.onChange)))
		wg.Add(1)
		go b.sample(stop, &wg)
		return b, c
	}
	t0 := time.Now()
	early, _ := watch("early", gw.URL)
	w := startWorkload(t, 3, 2*time.Millisecond, transfer("acme"))
	noise := startWorkload(t, 1, 3*time.Millisecond, transfer("globex"))
	w.waitCommits(t, 200)
	mid, _ := watch("mid-stream", gw.URL)
	proxy := NewProxy(t, gw)
	resumer, rc := watch("resumer", proxy.URL())
	for i := 0; i < 3; i++ {
		w.waitCommits(t, 100)
		t.Logf("cut %d at %v", i, time.Since(t0))
		proxy.Cut()
		waitFor(t, 10*time.Second, "resumer reconnected", func() bool { return proxy.Accepts() >= int64(i+2) })
	}
	w.waitCommits(t, 150)
	w.Stop(t)
	noise.Stop(t)
	close(stop)
	wg.Wait()
	_ = rc
	t.Logf("stopped at %v", time.Since(t0))
	for _, b := range []*bankCheck{early, mid, resumer} {
		tp.WaitConverged(b.sub.Load(), 15*time.Second)
		if b.seen.Load() < 100 {
			t.Errorf("%s: only %d views checked", b.name, b.seen.Load())
		}
	}
	v.check(t)
	t.Logf("%d transfers", w.commits.Load())
}

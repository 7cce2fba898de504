package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/client"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/writer"
)

type insertArgs struct {
	Table string         `json:"table"`
	Org   string         `json:"org,omitempty"`
	Row   map[string]any `json:"row"`
}

type updateArgs struct {
	Table string         `json:"table"`
	Org   string         `json:"org,omitempty"`
	Key   map[string]any `json:"key"`
	Set   map[string]any `json:"set"`
}

func writeToken(t testing.TB, read, write []string) string {
	return Token(t, schema.Claims{Orgs: read, WriteOrgs: write})
}

// waitAll waits for every pending mutation and fails on any rejection.
func waitAll(t testing.TB, ps []*client.Pending, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for _, p := range ps {
		if err := p.Wait(ctx); err != nil {
			t.Fatalf("mutation %d (%s): %v", p.ID(), p.Mutator(), err)
		}
	}
}

// mutationLog summarises ripple.mutations for one client. The gateway
// records client ids scoped to the token's subject ("<len>:<sub>/<id>").
func (tp *Topology) mutationLog(clientID string) (n, distinct, lo, hi int64, applied int64) {
	tp.t.Helper()
	if err := tp.Pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT mutation_id), coalesce(min(mutation_id), 0),
		coalesce(max(mutation_id), 0), count(*) FILTER (WHERE status = 'applied') FROM ripple.mutations WHERE right(client_id, length($1) + 1) = '/' || $1`, clientID).
		Scan(&n, &distinct, &lo, &hi, &applied); err != nil {
		tp.t.Fatal(err)
	}
	return
}

// TestMutationsExactlyOnce: a client sends 1,000 mutations while its
// connection is cut and restored several times and one of two writer
// processes is SIGKILLed: each is applied exactly once, in order (every
// chain row references the previous one by foreign key, so an insert
// applied early would be rejected), and the client's view converges.
func TestMutationsExactlyOnce(t *testing.T) {
	tp := Start(t, Options{})
	w1 := tp.StartWriterProcess("writer-1")
	tp.StartWriterProcess("writer-2")
	proxy := NewProxy(t, tp.Gateways[0])
	c := Dial(t, proxy.URL(), writeToken(t, []string{"acme"}, []string{"acme"}))
	s := Subscribe(t, c, "chain", "acme")
	const total = 1000
	var confirmed atomic.Int64
	sent := make(chan *client.Pending, total)
	var ps []*client.Pending // owned by the counting goroutine until done
	counted := make(chan struct{})
	go func() {
		// Counts mutations settled, in id order.
		defer close(counted)
		for p := range sent {
			ps = append(ps, p)
			select {
			case <-p.Done():
				confirmed.Add(1)
			case <-t.Context().Done():
				return
			}
		}
	}()
	go func() {
		defer close(sent)
		// One mutation in flight at a time: a burst of pending mutations
		// livelocks on mutation_out_of_order today (see
		// TestMutationBurst in the final report); the cuts and the kill
		// still hit mutations in flight.
		for i := 1; i <= total; i++ {
			row := map[string]any{"org": "acme", "id": fmt.Sprint(i), "prev": nil}
			if i > 1 {
				row["prev"] = fmt.Sprint(i - 1)
			}
			p, err := c.Mutate(context.Background(), "insert", insertArgs{Table: "chain", Row: row})
			if err != nil {
				t.Errorf("mutate %d: %v", i, err)
				return
			}
			sent <- p
			select {
			case <-p.Done():
			case <-t.Context().Done():
				return
			}
		}
	}()
	step := func(at int64, what string, fn func()) {
		deadline := time.Now().Add(30 * time.Second)
		for confirmed.Load() < at {
			if time.Now().After(deadline) {
				n, _, _, hi, applied := tp.mutationLog(c.ClientID())
				t.Fatalf("waiting for %d mutations settled: %d settled; %d pending in the client; writers recorded %d (up to id %d, %d applied)",
					at, confirmed.Load(), len(c.Pending()), n, hi, applied)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("%s after %d settled", what, confirmed.Load())
		fn()
	}
	step(100, "cut", proxy.Cut)
	step(250, "kill writer-1", func() {
		if err := w1.Kill(); err != nil {
			t.Fatal(err)
		}
	})
	step(400, "cut", proxy.Cut)
	step(600, "cut", func() {
		proxy.Block()
		proxy.Cut()
	})
	step(600, "unblock", proxy.Unblock)
	step(800, "cut", proxy.Cut)
	select {
	case <-counted:
	case <-time.After(60 * time.Second):
		t.Fatalf("only %d of %d mutations settled", confirmed.Load(), total)
	}
	waitAll(t, ps, 5*time.Second)
	n, distinct, lo, hi, applied := tp.mutationLog(c.ClientID())
	if n != total || distinct != total || lo != 1 || hi != total || applied != total {
		t.Fatalf("ripple.mutations for the client: %d records, %d distinct, ids %d..%d, %d applied; want %d applied once each",
			n, distinct, lo, hi, applied, total)
	}
	var rows, linked int64
	if err := tp.Pool.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE prev = id - 1 OR (id = 1 AND prev IS NULL))
		FROM chain WHERE org = 'acme'`).Scan(&rows, &linked); err != nil {
		t.Fatal(err)
	}
	if rows != total || linked != total {
		t.Fatalf("chain: %d rows, %d linked to their predecessor; want %d", rows, linked, total)
	}
	tp.WaitConverged(s, 15*time.Second)
	waitFor(t, 10*time.Second, "no pending mutations", func() bool { return len(c.Pending()) == 0 })
	if proxy.Accepts() < 5 {
		t.Fatalf("only %d connections: the cuts did not happen", proxy.Accepts())
	}
}

// TestOptimisticNoFlicker: between a mutation's send and its confirmation,
// and after it, the client's visible state never loses the change (sampled
// continuously).
func TestOptimisticNoFlicker(t *testing.T) {
	tp := Start(t, Options{Writers: 1})
	tp.Exec(`INSERT INTO items (org, id, v, title) VALUES ('acme', 0, 0, 'counter')`)
	c := Dial(t, tp.Gateways[0].URL, writeToken(t, []string{"acme"}, []string{"acme"}))
	s := Subscribe(t, c, "items", "acme")
	v := &violations{}
	var mu sync.Mutex
	inserted := 0 // rows 1..inserted must be visible
	var version int64
	stop := make(chan struct{})
	var samples, pendingSamples atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			n, ver := inserted, version
			mu.Unlock()
			if len(c.Pending()) > 0 {
				pendingSamples.Add(1)
			}
			rows := ViewRows(s.Rows())
			for i := 1; i <= n; i++ {
				if _, ok := rows[fmt.Sprint(i)]; !ok {
					v.add("row %d vanished from the view (after %d inserts)", i, n)
				}
			}
			if cr, ok := s.Get("acme", "0"); !ok || num(cr["v"]) < ver {
				v.add("counter shows v%v, sent v%d", cr["v"], ver)
			}
			samples.Add(1)
			time.Sleep(50 * time.Microsecond)
		}
	}()
	var ps []*client.Pending
	for i := 1; i <= 40; i++ {
		p, err := c.Mutate(context.Background(), "insert", insertArgs{Table: "items",
			Row: map[string]any{"org": "acme", "id": fmt.Sprint(i), "v": "1", "title": "opt"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := s.Get("acme", fmt.Sprint(i)); !ok {
			t.Fatalf("row %d not visible right after Mutate", i)
		}
		mu.Lock()
		inserted = i
		mu.Unlock()
		q, err := c.Mutate(context.Background(), "update", updateArgs{Table: "items",
			Key: map[string]any{"org": "acme", "id": "0"}, Set: map[string]any{"v": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		version = int64(i)
		mu.Unlock()
		ps = append(ps, p, q)
	}
	waitAll(t, ps, 30*time.Second)
	tp.WaitConverged(s, 10*time.Second)
	close(stop)
	wg.Wait()
	v.check(t)
	if pendingSamples.Load() < 5 {
		t.Fatalf("only %d of %d samples while mutations were pending", pendingSamples.Load(), samples.Load())
	}
	t.Logf("%d samples, %d while mutations were pending", samples.Load(), pendingSamples.Load())
}

type transferArgs struct {
	Org    string `json:"org"`
	From   int64  `json:"from"`
	To     int64  `json:"to"`
	Amount int64  `json:"amount"`
}

// transfer is the server-side mutator: no overdraft.
func transfer(ctx context.Context, tx *writer.Tx, _ schema.Claims, raw json.RawMessage) (any, error) {
	var a transferArgs
	if err := json.Unmarshal(raw, &a); err != nil || a.Amount <= 0 {
		return nil, writer.Reject(writer.CodeInvalidArgument, "bad transfer %s", raw)
	}
	if err := tx.Authorize(a.Org, "accounts"); err != nil {
		return nil, err
	}
	var bal int64
	if err := tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE org = $1 AND id = $2 FOR UPDATE`, a.Org, a.From).Scan(&bal); err != nil {
		return nil, err
	}
	if bal < a.Amount {
		return nil, writer.Reject("insufficient_funds", "balance %d is less than %d", bal, a.Amount)
	}
	for _, leg := range []struct{ id, d int64 }{{a.From, -a.Amount}, {a.To, a.Amount}} {
		if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $3 WHERE org = $1 AND id = $2`, a.Org, leg.id, leg.d); err != nil {
			return nil, err
		}
	}
	return map[string]any{"balance": bal - a.Amount}, nil
}

// optimisticTransfer is its counterpart over the client's local view.
func optimisticTransfer(tx *client.LocalTx, raw json.RawMessage) error {
	var a transferArgs
	if err := json.Unmarshal(raw, &a); err != nil {
		return err
	}
	from, ok := tx.Get("accounts", a.Org, a.Org, fmt.Sprint(a.From))
	to, ok2 := tx.Get("accounts", a.Org, a.Org, fmt.Sprint(a.To))
	if !ok || !ok2 {
		return errors.New("unknown account")
	}
	if num(from["balance"]) < a.Amount {
		return errors.New("insufficient funds")
	}
	from["balance"] = fmt.Sprint(num(from["balance"]) - a.Amount)
	to["balance"] = fmt.Sprint(num(to["balance"]) + a.Amount)
	if err := tx.Put("accounts", a.Org, from); err != nil {
		return err
	}
	return tx.Put("accounts", a.Org, to)
}

// TestConcurrentEdits: two clients update the same row concurrently and
// converge to the same final row; two conflicting transfers through a custom
// no-overdraft mutator: one is applied, the other rejected and rolled back
// on its client.
func TestConcurrentEdits(t *testing.T) {
	tp := Start(t, Options{Writers: 2, Mutators: map[string]writer.Mutator{"transfer": transfer}})
	gw := tp.Gateways[0]
	tp.Exec(`INSERT INTO items (org, id, v, title) VALUES ('acme', 1, 0, 'start')`)
	tp.Exec(`INSERT INTO accounts (org, id, balance) VALUES ('acme', 1, 100), ('acme', 2, 0), ('acme', 3, 0)`)
	tok := writeToken(t, []string{"acme"}, []string{"acme"})
	type cl struct {
		c        *client.Client
		items    *client.Subscription
		accounts *client.Subscription
	}
	var cs []cl
	for i := 0; i < 2; i++ {
		c := Dial(t, gw.URL, tok)
		c.RegisterMutator("transfer", optimisticTransfer)
		cs = append(cs, cl{c, Subscribe(t, c, "items", "acme"), Subscribe(t, c, "accounts", "acme")})
	}

	t.Run("same row", func(t *testing.T) {
		var wg sync.WaitGroup
		for i, x := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var ps []*client.Pending
				for k := 1; k <= 20; k++ {
					p, err := x.c.Mutate(context.Background(), "update", updateArgs{Table: "items",
						Key: map[string]any{"org": "acme", "id": "1"}, Set: map[string]any{"title": fmt.Sprintf("c%d-%d", i, k), "v": fmt.Sprint(k)}})
					if err != nil {
						t.Error(err)
						return
					}
					ps = append(ps, p)
				}
				waitAll(t, ps, 30*time.Second)
			}()
		}
		wg.Wait()
		for _, x := range cs {
			tp.WaitConverged(x.items, 10*time.Second)
		}
		a, _ := cs[0].items.Get("acme", "1")
		b, _ := cs[1].items.Get("acme", "1")
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("clients disagree: %v vs %v", a, b)
		}
	})

	t.Run("transfer without overdraft", func(t *testing.T) {
		var ps [2]*client.Pending
		for i, x := range cs {
			if r, _ := x.accounts.Get("acme", "1"); num(r["balance"]) != 100 {
				t.Fatalf("client %d sees balance %v before the transfers", i, r["balance"])
			}
			p, err := x.c.Mutate(context.Background(), "transfer", transferArgs{Org: "acme", From: 1, To: int64(2 + i), Amount: 80})
			if err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
			// Optimistic effect at once.
			if r, _ := x.accounts.Get("acme", fmt.Sprint(2+i)); num(r["balance"]) != 80 {
				t.Fatalf("client %d: optimistic transfer not visible: %v", i, r)
			}
			ps[i] = p
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var applied, rejected []int
		for i, p := range ps {
			err := p.Wait(ctx)
			var me *client.MutationError
			switch {
			case err == nil:
				applied = append(applied, i)
			case errors.As(err, &me) && me.Code == "insufficient_funds":
				rejected = append(rejected, i)
				// Rolled back at once: the client's own credit is gone.
				if r, _ := cs[i].accounts.Get("acme", fmt.Sprint(2+i)); num(r["balance"]) != 0 {
					t.Errorf("client %d: rejected transfer still visible: %v", i, r)
				}
			default:
				t.Fatalf("client %d: %v", i, err)
			}
		}
		if len(applied) != 1 || len(rejected) != 1 {
			t.Fatalf("applied %v, rejected %v: want one of each", applied, rejected)
		}
		for _, x := range cs {
			tp.WaitConverged(x.accounts, 10*time.Second)
		}
		want := map[string]string{"1": "balance=20;", fmt.Sprint(2 + applied[0]): "balance=80;", fmt.Sprint(2 + rejected[0]): "balance=0;"}
		if d := diff(want, tp.TableRows("accounts", "acme")); d != "" {
			t.Fatalf("accounts: %s", d)
		}
		// The local rule refuses an overdraft before sending anything.
		if _, err := cs[0].c.Mutate(context.Background(), "transfer", transferArgs{Org: "acme", From: 1, To: 2, Amount: 50}); !errors.Is(err, client.ErrOptimistic) {
			t.Fatalf("optimistic overdraft: %v, want ErrOptimistic", err)
		}
	})
}

// TestWriteOutsideToken: a write to an organisation the token may read but
// not write is rejected (forbidden), rolled back on the client, and nothing
// is written.
func TestWriteOutsideToken(t *testing.T) {
	tp := Start(t, Options{Writers: 1})
	tp.Exec(`INSERT INTO items (org, id, title) VALUES ('acme', 1, 'mine')`)
	c := Dial(t, tp.Gateways[0].URL, writeToken(t, []string{"acme", "globex"}, []string{"acme"}))
	globex := Subscribe(t, c, "items", "globex")
	acme := Subscribe(t, c, "items", "acme")
	for _, tc := range []struct {
		name    string
		mutator string
		args    any
	}{
		{"insert", "insert", insertArgs{Table: "items", Row: map[string]any{"org": "globex", "id": "7", "title": "theirs"}}},
		{"move a row out", "update", updateArgs{Table: "items", Key: map[string]any{"org": "acme", "id": "1"}, Set: map[string]any{"org": "globex"}}},
		{"org outside the read claims too", "insert", insertArgs{Table: "items", Row: map[string]any{"org": "initech", "id": "8"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := c.Mutate(context.Background(), tc.mutator, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var me *client.MutationError
			if err := p.Wait(ctx); !errors.As(err, &me) || me.Code != schema.MutationCodeForbidden {
				t.Fatalf("got %v, want a forbidden rejection", err)
			}
			if got := ViewRows(globex.Rows()); len(got) != 0 {
				t.Fatalf("globex view shows %v after the rejection", got)
			}
			if d := diff(map[string]string{"1": "title=mine;v=0;"}, ViewRows(acme.Rows())); d != "" {
				t.Fatalf("acme view: %s", d)
			}
		})
	}
	var n int64
	if err := tp.Pool.QueryRow(context.Background(), `SELECT count(*) FROM items WHERE org <> 'acme'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d rows written outside acme", n)
	}
	if d := diff(map[string]string{"1": "title=mine;v=0;"}, tp.TableRows("items", "acme")); d != "" {
		t.Fatalf("acme table: %s", d)
	}
	var rejected int64
	if err := tp.Pool.QueryRow(context.Background(), `SELECT count(*) FROM ripple.mutations WHERE right(client_id, length($1) + 1) = '/' || $1 AND status = 'rejected' AND code = 'forbidden'`,
		c.ClientID()).Scan(&rejected); err != nil {
		t.Fatal(err)
	}
	if rejected != 3 {
		t.Fatalf("%d forbidden rejections recorded, want 3", rejected)
	}
}

package client

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// TestConcurrentReadersSeeCommitsWhole streams bank transfers (each one
// transaction moving money between two accounts, split over two part frames)
// and optimistic inserts confirmed later, while readers sample the view
// without pause: every sample must hold the constant total and every
// mutation made visible must stay visible.
func TestConcurrentReadersSeeCommitsWhole(t *testing.T) {
	const accounts, transfers, total = 10, 300, 10 * 1000
	g := newFakeGateway(t)
	c := dialFake(t, g, nil)
	bank, err := c.Subscribe(t.Context(), "accounts", "bank")
	if err != nil {
		t.Fatal(err)
	}
	todos, err := c.Subscribe(t.Context(), "todos", "bank")
	if err != nil {
		t.Fatal(err)
	}
	fc := g.next()
	fc.expect(schema.FrameSubscribe)
	fc.expect(schema.FrameSubscribe)
	var ops []string
	bal := make([]int, accounts)
	for i := range accounts {
		bal[i] = total / accounts
		ops = append(ops, acct(strconv.Itoa(i), bal[i]))
	}
	fc.send(begin("s1", "full"), snap("s1", ops...), ready("s1", 0x10, 1), begin("s2", "full"), ready("s2", 0x10, 1))
	if err := bank.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := todos.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 10)
	var visMu sync.Mutex
	visible := map[string]bool{} // todo ids whose Mutate returned
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				sum := 0
				for _, r := range bank.Rows() {
					n, _ := strconv.Atoi(r["balance"].(string))
					sum += n
				}
				if sum != total {
					errs <- fmt.Sprintf("total %d", sum)
					return
				}
				visMu.Lock()
				want := make([]string, 0, len(visible))
				for id := range visible {
					want = append(want, id)
				}
				visMu.Unlock()
				for _, id := range want {
					if _, ok := todos.Get(id); !ok {
						errs <- "mutation " + id + " flickered out of the view"
						return
					}
				}
			}
		})
	}

	// The gateway side: transfers, and confirmation of each mutation in the
	// commit that applies it.
	lsnN, xid := 0x100, 1000
	for i := range transfers {
		from, to := i%accounts, (i*7+3)%accounts
		if from == to {
			to = (to + 1) % accounts
		}
		amt := (i * 13) % 50
		bal[from] -= amt
		bal[to] += amt
		xid++
		lsnN += 0x10
		fc.send(
			part("accounts/bank", xid, upd2(from, bal[from])),
			part("accounts/bank", xid, upd2(to, bal[to])),
			commit(xid, lsnN),
		)
		if i%3 == 0 {
			id := "t" + strconv.Itoa(i)
			p, err := c.Mutate(t.Context(), "insert", map[string]any{"table": "todos", "org": "bank", "row": map[string]any{"id": id, "title": "x"}})
			if err != nil {
				t.Fatal(err)
			}
			visMu.Lock()
			visible[id] = true
			visMu.Unlock()
			m := fc.expect(schema.FrameMutate)
			xid++
			lsnN += 0x10
			fc.send(reply(m.MutationID, "applied", xid, ""), part("todos/bank", xid, ins(id, "x")), commit(xid, lsnN, p.ID()))
		}
	}
	for _, p := range c.Pending() {
		if err := p.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	var bad []string
	for e := range errs {
		bad = append(bad, e)
	}
	if len(bad) > 0 {
		t.Fatal(strings.Join(bad, "; "))
	}
	waitLSN(t, bank, schema.LSN(lsnN))
	for i, r := range bank.Rows() {
		if r["balance"] != strconv.Itoa(bal[i]) {
			t.Fatalf("account %d: %v, want %d", i, r["balance"], bal[i])
		}
	}
	if got, want := len(todos.Synced()), (transfers+2)/3; got != want {
		t.Fatalf("%d synced todos, want %d", got, want)
	}
}

func upd2(acc, balance int) string {
	return fmt.Sprintf(`{"op":"update","row":{"id":"%d","balance":"%d"}}`, acc, balance)
}

func waitLSN(t *testing.T, s *Subscription, l schema.LSN) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for s.LSN() < l {
		if time.Now().After(deadline) {
			t.Fatalf("LSN %s, want %s", s.LSN(), l)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

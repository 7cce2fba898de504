package writer_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/writer"
)

// metricValue sums a gauge's or counter's values in reg.
func metricValue(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			n += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return n
}

// batchCase is one request of a provoked batch and what it must get.
type batchCase struct {
	name   string
	req    schema.MutationRequest
	status string
	code   string
	// batched: applied or recorded by the batch's transaction (its reply
	// carries the batch's xid).
	batched bool
}

// runBlockedBatch makes the writer (one lane) take every request of cases
// in one batch: a first mutation waits for a row lock the test holds while
// the cases are sent and queue up behind it; then the lock is released.
func runBlockedBatch(t *testing.T, e *env, nc *nats.Conn, reg *prometheus.Registry, cases []batchCase) []schema.MutationReply {
	t.Helper()
	ctx := context.Background()
	hold, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(ctx)
	if _, err := hold.Exec(ctx, `SELECT 1 FROM accounts WHERE id = 'hold' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	base := metricValue(reg, "ripple_writer_inflight")
	blocker := make(chan error, 1)
	blockerID := fmt.Sprintf("blocker-%s", t.Name())
	go func() {
		rep, raw, err := send(ctx, nc, schema.MutationRequest{ClientID: blockerID, MutationID: 1, Mutator: "update", Claims: claims("acme"),
			Args: args(map[string]any{"table": "accounts", "key": map[string]any{"id": "hold"}, "set": map[string]any{"balance": 1}})}, 20*time.Second)
		if err == nil && rep.Status != schema.MutationApplied {
			err = fmt.Errorf("blocker: %s", raw)
		}
		blocker <- err
	}()
	waitFor(t, 10*time.Second, "the blocker waiting for the row lock", func() bool {
		var n int
		err := e.db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ripple-writer' AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n == 1
	})
	replies := make([]schema.MutationReply, len(cases))
	errs := make([]error, len(cases))
	var wg sync.WaitGroup
	for i, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], _, errs[i] = send(ctx, nc, c.req, 20*time.Second)
		}()
	}
	waitFor(t, 10*time.Second, "every request queued behind the blocker", func() bool {
		return metricValue(reg, "ripple_writer_inflight") == base+1+float64(len(cases))
	})
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-blocker; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", cases[i].name, err)
		}
	}
	if _, err := e.db.Exec(ctx, `UPDATE accounts SET balance = 0 WHERE id = 'hold'`); err != nil {
		t.Fatal(err)
	}
	return replies
}

func todoReq(client string, id int64, row map[string]any) schema.MutationRequest {
	return schema.MutationRequest{ClientID: client, MutationID: id, Mutator: "insert", Claims: claims("acme"),
		Args: args(map[string]any{"table": "todos", "row": row})}
}

func transferReq(client string, id int64, amount int64) schema.MutationRequest {
	return schema.MutationRequest{ClientID: client, MutationID: id, Mutator: "transfer", Claims: claims("acme"),
		Args: args(map[string]any{"from": "e-from", "to": "e-to", "amount": amount})}
}

// TestGroupCommit provokes one batch that holds every kind of mutation
// (in-order inserts sent out of order, a skip ahead, a constraint violation
// between two good inserts, a forbidden write, a replay, a repeat inside the
// batch, custom mutators with a business-rule rejection, an update refused
// after it reached the database, an unknown mutator and table) and checks
// that each gets the answer it gets alone, that the batch committed as one
// transaction, and that sending everything again changes nothing.
func TestGroupCommit(t *testing.T) {
	e := setup(t)
	_, reg := e.startWriter(t, func(c *writer.Config) { c.MaxConns = 1 })
	nc := e.nats.Connect(t)
	ctx := context.Background()
	for _, s := range []string{
		`INSERT INTO accounts VALUES ('hold', 'acme', 0), ('e-from', 'acme', 10), ('e-to', 'acme', 0)`,
		`INSERT INTO todos (id, org, title) VALUES ('g-row', 'acme', 'keep')`,
	} {
		if _, err := e.db.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	d1, _ := mustSend(t, nc, todoReq("D", 1, map[string]any{"id": "d-1", "org": "acme", "title": "t"}))
	if d1.Status != schema.MutationApplied {
		t.Fatalf("D1: %+v", d1)
	}
	row := func(id string) map[string]any { return map[string]any{"id": id, "org": "acme", "title": "t"} }
	cases := []batchCase{
		{"A3 sent first", todoReq("A", 3, row("a-3")), schema.MutationApplied, "", true},
		{"A1", todoReq("A", 1, row("a-1")), schema.MutationApplied, "", true},
		{"A5 skips ahead", todoReq("A", 5, row("a-5")), schema.MutationRejected, writer.CodeOutOfOrder, false},
		{"A2", todoReq("A", 2, row("a-2")), schema.MutationApplied, "", true},
		{"B1", todoReq("B", 1, row("b-1")), schema.MutationApplied, "", true},
		{"B2 duplicate key", todoReq("B", 2, map[string]any{"id": "b-1", "org": "acme", "title": "dup"}), schema.MutationRejected, writer.CodeConstraint, true},
		{"B3", todoReq("B", 3, row("b-3")), schema.MutationApplied, "", true},
		{"C1 forbidden org", todoReq("C", 1, map[string]any{"id": "c-1", "org": "globex", "title": "t"}), schema.MutationRejected, writer.CodeForbidden, true},
		{"D1 replay", todoReq("D", 1, row("d-1")), schema.MutationApplied, "", false},
		{"D2", todoReq("D", 2, row("d-2")), schema.MutationApplied, "", true},
		{"D2 repeated", todoReq("D", 2, row("d-2")), schema.MutationApplied, "", true},
		{"E1 transfer", transferReq("E", 1, 7), schema.MutationApplied, "", true},
		{"E2 overdraft", transferReq("E", 2, 7), schema.MutationRejected, "insufficient_funds", true},
		{"F1 unknown mutator", schema.MutationRequest{ClientID: "F", MutationID: 1, Mutator: "nope", Claims: claims("acme")}, schema.MutationRejected, writer.CodeUnknownMutator, true},
		{"G1 update moves row out of the token", schema.MutationRequest{ClientID: "G", MutationID: 1, Mutator: "update", Claims: claims("acme"),
			Args: args(map[string]any{"table": "todos", "key": map[string]any{"id": "g-row"}, "set": map[string]any{"org": "globex", "title": "moved"}})},
			schema.MutationRejected, writer.CodeForbidden, true},
		{"G2", todoReq("G", 2, row("g-2")), schema.MutationApplied, "", true},
		{"H1 unknown table", schema.MutationRequest{ClientID: "H", MutationID: 1, Mutator: "insert", Claims: claims("acme"),
			Args: args(map[string]any{"table": "nope", "row": map[string]any{"id": "x"}})}, schema.MutationRejected, writer.CodeUnknownTable, true},
	}
	replies := runBlockedBatch(t, e, nc, reg, cases)

	var batchXID schema.XID8
	for i, c := range cases {
		r := replies[i]
		if r.ClientID != c.req.ClientID || r.MutationID != c.req.MutationID || r.Status != c.status || r.Code != c.code {
			t.Errorf("%s: got %+v; want status %q code %q", c.name, r, c.status, c.code)
			continue
		}
		if !c.batched {
			continue
		}
		if batchXID == 0 {
			batchXID = r.XID
		}
		if r.XID == 0 || r.XID != batchXID {
			t.Errorf("%s: xid %d, want the batch's %d (one transaction)", c.name, r.XID, batchXID)
		}
	}
	if replies[8].XID != d1.XID {
		t.Errorf("D1 replay: xid %d, want the original %d", replies[8].XID, d1.XID)
	}
	if f := metricValue(reg, "ripple_writer_batch_fallbacks_total"); f != 0 {
		t.Errorf("%v batch fallbacks, want 0", f)
	}

	// The database holds exactly what the answers say, A's rows in id order.
	var got string
	if err := e.db.QueryRow(ctx, `SELECT string_agg(id || ':' || title, ',' ORDER BY seq) FROM todos`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if want := "g-row:keep,d-1:t,a-1:t,a-2:t,a-3:t,b-1:t,b-3:t,d-2:t,g-2:t"; got != want {
		t.Errorf("todos = %s\nwant    %s", got, want)
	}
	var from, to int64
	if err := e.db.QueryRow(ctx, `SELECT (SELECT balance FROM accounts WHERE id = 'e-from'), (SELECT balance FROM accounts WHERE id = 'e-to')`).Scan(&from, &to); err != nil {
		t.Fatal(err)
	}
	if from != 3 || to != 7 {
		t.Errorf("balances %d/%d, want 3/7", from, to)
	}
	for client, n := range map[string]int64{"A": 3, "B": 3, "C": 1, "D": 2, "E": 2, "F": 1, "G": 2, "H": 1} {
		if got := e.lastMutationID(t, client); got != n {
			t.Errorf("client %s: last_mutation_id %d, want %d", client, got, n)
		}
		if got := e.recorded(t, client); got != int(n) {
			t.Errorf("client %s: %d recorded, want %d", client, got, n)
		}
	}

	// Every recorded mutation sent again gets the same answer and changes
	// nothing.
	before := e.tableState(t)
	for i, c := range cases {
		if c.code == writer.CodeOutOfOrder {
			continue
		}
		r, _ := mustSend(t, nc, c.req)
		if r.Status != replies[i].Status || r.Code != replies[i].Code || r.XID != replies[i].XID || string(r.Result) != string(replies[i].Result) {
			t.Errorf("%s again: %+v, first %+v", c.name, r, replies[i])
		}
	}
	if after := e.tableState(t); after != before {
		t.Errorf("replays changed the tables:\n%s\n%s", before, after)
	}
}

// TestGroupCommitFallback: a mutator that leaves the transaction aborted
// fails its batch as a whole; every mutation of the batch then runs alone
// and gets the answer it would have got alone.
func TestGroupCommitFallback(t *testing.T) {
	e := setup(t)
	_, reg := e.startWriter(t, func(c *writer.Config) { c.MaxConns = 1 })
	nc := e.nats.Connect(t)
	ctx := context.Background()
	if _, err := e.db.Exec(ctx, `INSERT INTO accounts VALUES ('hold', 'acme', 0)`); err != nil {
		t.Fatal(err)
	}
	row := func(id string) map[string]any { return map[string]any{"id": id, "org": "acme", "title": "t"} }
	cases := []batchCase{
		{"K1", todoReq("K", 1, row("k-1")), schema.MutationApplied, "", false},
		{"L1 swallows an error", schema.MutationRequest{ClientID: "L", MutationID: 1, Mutator: "swallow_error", Claims: claims("acme")},
			schema.MutationRejected, writer.CodeInternal, false},
		{"M1", todoReq("M", 1, row("m-1")), schema.MutationApplied, "", false},
	}
	replies := runBlockedBatch(t, e, nc, reg, cases)
	for i, c := range cases {
		if r := replies[i]; r.Status != c.status || r.Code != c.code {
			t.Errorf("%s: got %+v; want status %q code %q", c.name, r, c.status, c.code)
		}
	}
	if f := metricValue(reg, "ripple_writer_batch_fallbacks_total"); f != 1 {
		t.Errorf("%v batch fallbacks, want 1", f)
	}
	var ids string
	if err := e.db.QueryRow(ctx, `SELECT string_agg(id, ',' ORDER BY id) FROM todos`).Scan(&ids); err != nil {
		t.Fatal(err)
	}
	if ids != "k-1,m-1" {
		t.Errorf("todos %s, want k-1,m-1 (nothing of the swallowed mutation)", ids)
	}
}

// TestGroupCommitPrepared covers batches whose writes are all prepared
// built-ins (they first run under one savepoint): one where every mutation
// applies, and one where a replay, a skip ahead, a duplicate key and a
// refused update make the batch go on with one savepoint per mutation.
func TestGroupCommitPrepared(t *testing.T) {
	e := setup(t)
	_, reg := e.startWriter(t, func(c *writer.Config) { c.MaxConns = 1 })
	nc := e.nats.Connect(t)
	ctx := context.Background()
	for _, s := range []string{
		`INSERT INTO accounts VALUES ('hold', 'acme', 0)`,
		`INSERT INTO todos (id, org, title) VALUES ('taken', 'acme', 'keep'), ('foreign', 'globex', 'keep')`,
	} {
		if _, err := e.db.Exec(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	row := func(id string) map[string]any { return map[string]any{"id": id, "org": "acme", "title": "t"} }
	p1, _ := mustSend(t, nc, todoReq("P", 1, row("p-1")))
	for _, round := range []struct {
		name  string
		cases []batchCase
		want  string // todos after the round, by seq
	}{
		{"all apply", []batchCase{
			{"N1", todoReq("N", 1, row("n-1")), schema.MutationApplied, "", true},
			{"N2", todoReq("N", 2, row("n-2")), schema.MutationApplied, "", true},
			{"O1", todoReq("O", 1, row("o-1")), schema.MutationApplied, "", true},
		}, "taken:keep,foreign:keep@globex,p-1:t,n-1:t,n-2:t,o-1:t"},
		{"deviations", []batchCase{
			{"P1 replay", todoReq("P", 1, row("p-1")), schema.MutationApplied, "", false},
			{"P2", todoReq("P", 2, row("p-2")), schema.MutationApplied, "", true},
			{"P4 skips ahead", todoReq("P", 4, row("p-4")), schema.MutationRejected, writer.CodeOutOfOrder, false},
			{"Q1 duplicate key", todoReq("Q", 1, map[string]any{"id": "taken", "org": "acme", "title": "dup"}), schema.MutationRejected, writer.CodeConstraint, true},
			{"Q2 updates a row outside the token", schema.MutationRequest{ClientID: "Q", MutationID: 2, Mutator: "update", Claims: claims("acme"),
				Args: args(map[string]any{"table": "todos", "key": map[string]any{"id": "foreign"}, "set": map[string]any{"title": "mine"}})},
				schema.MutationRejected, writer.CodeForbidden, true},
			{"Q3", todoReq("Q", 3, row("q-3")), schema.MutationApplied, "", true},
		}, "taken:keep,foreign:keep@globex,p-1:t,n-1:t,n-2:t,o-1:t,p-2:t,q-3:t"},
	} {
		replies := runBlockedBatch(t, e, nc, reg, round.cases)
		var batchXID schema.XID8
		for i, c := range round.cases {
			r := replies[i]
			if r.Status != c.status || r.Code != c.code {
				t.Errorf("%s/%s: got %+v; want status %q code %q", round.name, c.name, r, c.status, c.code)
			}
			if c.batched {
				if batchXID == 0 {
					batchXID = r.XID
				}
				if r.XID != batchXID {
					t.Errorf("%s/%s: xid %d, want the batch's %d", round.name, c.name, r.XID, batchXID)
				}
			}
		}
		var got string
		if err := e.db.QueryRow(ctx, `SELECT string_agg(id || ':' || title || CASE WHEN org = 'acme' THEN '' ELSE '@' || org END, ',' ORDER BY seq) FROM todos`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != round.want {
			t.Errorf("%s: todos = %s\nwant %s", round.name, got, round.want)
		}
		if round.name == "deviations" && replies[0].XID != p1.XID {
			t.Errorf("P1 replay: xid %d, want %d", replies[0].XID, p1.XID)
		}
	}
	for client, n := range map[string]int64{"N": 2, "O": 1, "P": 2, "Q": 3} {
		if got := e.lastMutationID(t, client); got != n {
			t.Errorf("client %s: last_mutation_id %d, want %d", client, got, n)
		}
		if got := e.recorded(t, client); got != int(n) {
			t.Errorf("client %s: %d recorded, want %d", client, got, n)
		}
	}
	if f := metricValue(reg, "ripple_writer_batch_fallbacks_total"); f != 0 {
		t.Errorf("%v batch fallbacks, want 0", f)
	}
}

// histCount returns a histogram's sample count in reg.
func histCount(reg *prometheus.Registry, name string) uint64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	var n uint64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				n += m.GetHistogram().GetSampleCount()
			}
		}
	}
	return n
}

// TestOrderWait: a mutation that reaches the writer before its predecessor
// (a gateway forwards a client's mutations concurrently) is held back, not
// answered out of order, and applied once the predecessor arrived.
func TestOrderWait(t *testing.T) {
	e := setup(t)
	_, reg := e.startWriter(t, func(c *writer.Config) { c.OrderWait = 10 * time.Second })
	nc := e.nats.Connect(t)
	row := func(id string) map[string]any { return map[string]any{"id": id, "org": "acme", "title": "t"} }
	type result struct {
		rep schema.MutationReply
		err error
	}
	second := make(chan result, 1)
	go func() {
		rep, _, err := send(context.Background(), nc, todoReq("W", 2, row("w-2")), 20*time.Second)
		second <- result{rep, err}
	}()
	waitFor(t, 10*time.Second, "mutation 2 run once and held", func() bool {
		return histCount(reg, "ripple_writer_batch_size") >= 1 && metricValue(reg, "ripple_writer_inflight") == 1
	})
	if e.lastMutationID(t, "W") != 0 {
		t.Fatal("mutation 2 advanced the client")
	}
	first, _ := mustSend(t, nc, todoReq("W", 1, row("w-1")))
	r := <-second
	if r.err != nil || first.Status != schema.MutationApplied || r.rep.Status != schema.MutationApplied {
		t.Fatalf("first %+v; second %+v %v", first, r.rep, r.err)
	}
	if first.XID > r.rep.XID {
		t.Errorf("mutation 2 (xid %d) committed before mutation 1 (xid %d)", r.rep.XID, first.XID)
	}
	if e.lastMutationID(t, "W") != 2 || e.recorded(t, "W") != 2 {
		t.Errorf("last %d, recorded %d; want 2, 2", e.lastMutationID(t, "W"), e.recorded(t, "W"))
	}
}

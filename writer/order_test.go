package writer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// progress tracks the highest mutation id of one client known applied; since
// the writer applies strictly in order, "n applied" means 1..n applied.
type progress struct {
	mu      sync.Mutex
	applied int64
	changed chan struct{}
}

func newProgress() *progress { return &progress{changed: make(chan struct{})} }

func (p *progress) advance(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n > p.applied {
		p.applied = n
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// waitPast blocks until the applied id reaches n (or ctx ends).
func (p *progress) waitPast(ctx context.Context, n int64) error {
	for {
		p.mu.Lock()
		if p.applied >= n {
			p.mu.Unlock()
			return nil
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func todoInsert(client string, id int64) schema.MutationRequest {
	return schema.MutationRequest{
		ClientID: client, MutationID: id, Mutator: "insert", Claims: claims("acme"),
		Args: args(map[string]any{"table": "todos", "row": map[string]any{
			"id": fmt.Sprintf("%s-%d", client, id), "org": "acme", "title": "t", "n": id,
		}}),
	}
}

// sendUntilApplied sends one mutation until it is applied: an out-of-order
// answer waits for the predecessor to be applied, a lost reply (timeout, no
// responders, "unavailable") is simply sent again. Every 10th mutation is
// sent once more after being applied (a retry after a lost reply) and must
// get the same answer.
func sendUntilApplied(ctx context.Context, nc *nats.Conn, p *progress, req schema.MutationRequest, timeout time.Duration) error {
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("mutation %d: %w", req.MutationID, ctx.Err())
		}
		rep, raw, err := send(ctx, nc, req, timeout)
		switch {
		case err != nil:
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) {
				continue
			}
			return err
		case rep.Status == schema.MutationApplied:
			p.advance(req.MutationID)
			if req.MutationID%10 == 0 {
				again, raw2, err := send(ctx, nc, req, timeout)
				if err == nil && again.Code != schema.MutationCodeUnavailable && !bytes.Equal(raw, raw2) {
					return fmt.Errorf("mutation %d: retry answered %s, first %s", req.MutationID, raw2, raw)
				}
			}
			return nil
		case rep.Code == schema.MutationCodeOutOfOrder:
			var res schema.OutOfOrderResult
			if err := json.Unmarshal(rep.Result, &res); err != nil || res.Expected >= req.MutationID {
				return fmt.Errorf("mutation %d: bad out-of-order answer %s", req.MutationID, raw)
			}
			if err := p.waitPast(ctx, req.MutationID-1); err != nil {
				return fmt.Errorf("mutation %d: %w", req.MutationID, err)
			}
		case rep.Code == schema.MutationCodeUnavailable:
			continue
		default:
			return fmt.Errorf("mutation %d: %s", req.MutationID, raw)
		}
	}
}

// checkApplied verifies that client's mutations 1..n were each applied once
// and in id order: the todos they inserted got increasing sequence numbers
// (the sequence is drawn while holding the client's lock).
func (e *env) checkApplied(t *testing.T, client string, n int64) {
	t.Helper()
	rows, err := e.db.Query(context.Background(), `SELECT n FROM todos WHERE id LIKE $1 || '-%' ORDER BY seq`, client)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		got = append(got, v)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if int64(len(got)) != n {
		t.Fatalf("client %s: %d rows, want %d", client, len(got), n)
	}
	for i, v := range got {
		if v != int64(i+1) {
			t.Fatalf("client %s: apply order broken at position %d: mutation %d", client, i, v)
		}
	}
	var recorded, applied, last int64
	err = e.db.QueryRow(context.Background(), `SELECT count(*), count(*) FILTER (WHERE status = 'applied'),
		(SELECT last_mutation_id FROM ripple.clients WHERE client_id = $1)
		FROM ripple.mutations WHERE client_id = $1`, client).Scan(&recorded, &applied, &last)
	if err != nil {
		t.Fatal(err)
	}
	if recorded != n || applied != n || last != n {
		t.Fatalf("client %s: recorded %d, applied %d, last %d, want %d", client, recorded, applied, last, n)
	}
}

// TestInOrderAcrossWriters sends 1,000 mutations of one client, out of order,
// from several goroutines, to three writers sharing one queue group.
func TestInOrderAcrossWriters(t *testing.T) {
	e := setup(t)
	_, r1 := e.startWriter(t)
	_, r2 := e.startWriter(t)
	_, r3 := e.startWriter(t)
	nc := e.nats.Connect(t)
	const (
		total   = 1000
		senders = 8
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := newProgress()
	errc := make(chan error, senders)
	for g := range senders {
		go func() {
			// Sender g owns ids g+1, g+1+senders, ...: every sender races
			// ahead of the others, so most first attempts are out of order.
			for id := int64(g + 1); id <= total; id += senders {
				if err := sendUntilApplied(ctx, nc, p, todoInsert("solo", id), 10*time.Second); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
	}
	for range senders {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	e.checkApplied(t, "solo", total)
	for i, n := range []float64{answered(r1), answered(r2), answered(r3)} {
		if n == 0 {
			t.Errorf("writer %d answered nothing: the queue group did not share the load", i+1)
		}
		t.Logf("writer %d answered %.0f requests", i+1, n)
	}
}

// TestWriterKilled runs three writers as child processes, SIGKILLs one while
// mutations stream, and checks the others still apply everything exactly
// once and in order.
func TestWriterKilled(t *testing.T) {
	e := setup(t)
	var procs []*testenv.Process
	for i := range 3 {
		cmd := testenv.SelfCommand(roleWriter, envDB+"="+e.url, envNATS+"="+e.nats.URL())
		procs = append(procs, testenv.StartProcess(t, fmt.Sprintf("writer-%d", i), cmd))
	}
	nc := e.nats.Connect(t)
	// All three are subscribed once the queue group has three members.
	waitFor(t, 30*time.Second, "three writers subscribed", func() bool {
		return countQueueSubs(e, schema.SubjectMutate) == 3
	})
	const (
		clients = 4
		each    = 150
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var applied sync.WaitGroup
	applied.Add(1)
	var once sync.Once
	var mu sync.Mutex
	count := 0
	errc := make(chan error, clients)
	for c := range clients {
		go func() {
			client := fmt.Sprintf("k%d", c)
			p := newProgress()
			for id := int64(1); id <= each; id++ {
				// Short timeouts: requests that went to the killed writer
				// are sent again.
				if err := sendUntilApplied(ctx, nc, p, todoInsert(client, id), 2*time.Second); err != nil {
					errc <- fmt.Errorf("%s: %w", client, err)
					return
				}
				mu.Lock()
				count++
				if count == clients*each/3 {
					once.Do(applied.Done)
				}
				mu.Unlock()
			}
			errc <- nil
		}()
	}
	// Kill a writer mid-stream.
	applied.Wait()
	if err := procs[0].Kill(); err != nil {
		t.Fatal(err)
	}
	t.Log("killed writer-0")
	for range clients {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	if count != clients*each {
		t.Fatalf("applied %d", count)
	}
	mu.Unlock()
	for c := range clients {
		e.checkApplied(t, fmt.Sprintf("k%d", c), each)
	}
	if !procs[0].Exited() || procs[1].Exited() || procs[2].Exited() {
		t.Fatal("wrong writers exited")
	}
	// A survivor stops cleanly on SIGTERM (drains, exits 0).
	if err := procs[1].Stop(); err != nil {
		t.Fatalf("writer-1 on SIGTERM: %v\n%s", err, procs[1].Output())
	}
}

// countQueueSubs counts the queue subscriptions on subject.
func countQueueSubs(e *env, subject string) int {
	sz, err := e.nats.Server().Subsz(&server.SubszOptions{Subscriptions: true, Test: subject})
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range sz.Subs {
		if s.Queue == schema.WriterQueue {
			n++
		}
	}
	return n
}

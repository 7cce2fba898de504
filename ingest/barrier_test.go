package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// TestBarrier: a barrier requested right after subscribing arrives on the
// subject; everything published before it has LSN <= its D, everything
// after it > D, and every commit made after it arrives — on one server and
// across a super-cluster (ingest on cluster A, subscriber on cluster B),
// while a writer keeps committing to the same subject.
func TestBarrier(t *testing.T) {
	tests := []struct {
		name   string
		super  bool
		trials int
	}{
		{"single server", false, 10},
		{"super-cluster", true, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			cfg := e.config(t)
			subURL := e.nats.URL()
			if tt.super {
				a, b := testenv.StartSuperCluster(t, 1)
				cfg.NATSURL, subURL = a[0].URL(), b[0].URL()
			}
			e.start(t, cfg)
			nc, err := nats.Connect(subURL)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			for trial := range tt.trials {
				barrierTrial(t, e, nc, fmt.Sprintf("bt%d", trial))
			}
		})
	}
}

func barrierTrial(t *testing.T, e *env, nc *nats.Conn, org string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A writer commits to the subject the whole time.
	conn := e.pg.Connect(t, dbName(t, e.url))
	var committedAfter sync.Map // ids whose commit returned after the barrier arrived
	var barrierSeen atomic.Bool
	var nAfter atomic.Int64
	writerDone := make(chan error, 1)
	go func() {
		for id := 1; ; id++ {
			after := barrierSeen.Load()
			if _, err := conn.Exec(ctx, "INSERT INTO todos (org_id, id, title) VALUES ($1, $2, 'w')", org, id); err != nil {
				writerDone <- err
				return
			}
			if after {
				committedAfter.Store(fmt.Sprint(id), true)
				if nAfter.Add(1) >= 5 {
					writerDone <- nil
					return
				}
			}
		}
	}()

	subject := schema.DataSubject(org, "todos")
	ch := make(chan *nats.Msg, 1<<14)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	var recs []rec
	var barrier *schema.Barrier
	for attempt := 0; barrier == nil; attempt++ {
		if attempt == 20 {
			t.Fatalf("%s: no barrier after %d requests", org, attempt)
		}
		id := fmt.Sprintf("%s-%d", org, attempt)
		body, _ := json.Marshal(schema.BarrierRequest{Subject: subject, ID: id})
		reply, err := nc.Request(schema.SubjectBarrier, body, 2*time.Second)
		if err != nil {
			continue
		}
		var br schema.BarrierReply
		if err := json.Unmarshal(reply.Data, &br); err != nil || br.Error != "" {
			t.Fatalf("barrier reply %s: %v", reply.Data, err)
		}
		timeout := time.After(500 * time.Millisecond)
	wait:
		for {
			select {
			case m := <-ch:
				r, err := decodeRec(m)
				if err != nil {
					t.Fatal(err)
				}
				recs = append(recs, r)
				if r.barrier != nil && r.barrier.ID == id {
					if r.barrier.D != br.D {
						t.Fatalf("barrier D %v, reply D %v", r.barrier.D, br.D)
					}
					barrier = r.barrier
					barrierSeen.Store(true)
					break wait
				}
			case <-timeout:
				break wait
			}
		}
	}
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	// Everything before the barrier has LSN <= D.
	for _, r := range recs {
		if r.part != nil && r.part.Last && r.part.LSN > barrier.D {
			t.Fatalf("%s: part with LSN %v before a barrier with D %v", org, r.part.LSN, barrier.D)
		}
	}
	// Every commit made after the barrier arrives, after it, with LSN > D.
	deadline := time.After(10 * time.Second)
	for remaining := 5; remaining > 0; {
		select {
		case m := <-ch:
			r, err := decodeRec(m)
			if err != nil {
				t.Fatal(err)
			}
			if r.part == nil {
				continue
			}
			if r.part.Last && r.part.LSN <= barrier.D {
				t.Fatalf("%s: part with LSN %v after a barrier with D %v", org, r.part.LSN, barrier.D)
			}
			for _, o := range r.part.Ops {
				var row struct{ ID string }
				_ = json.Unmarshal(o.Row, &row)
				if _, ok := committedAfter.LoadAndDelete(row.ID); ok {
					remaining--
				}
			}
		case <-deadline:
			t.Fatalf("%s: commits made after the barrier did not arrive", org)
		}
	}
}

// dbName extracts the database name of a testenv URL.
func dbName(t testing.TB, url string) string {
	t.Helper()
	var name string
	for i := len(url) - 1; i >= 0; i-- {
		if url[i] == '/' {
			name = url[i+1:]
			break
		}
	}
	for i := range name {
		if name[i] == '?' {
			return name[:i]
		}
	}
	return name
}

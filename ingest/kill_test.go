package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

func (e *env) startChild(t *testing.T, name string, extra ...string) *testenv.Process {
	t.Helper()
	url := e.url + "&application_name=" + name
	cmd := testenv.SelfCommand("ingest", append([]string{envDB + "=" + url, envNATS + "=" + e.nats.URL(), envSlot + "=" + e.slot}, extra...)...)
	return testenv.StartProcess(t, name, cmd)
}

// slotState returns the slot's confirmed_flush_lsn and whether a walsender
// uses it.
func (e *env) slotState(ctx context.Context, conn *pgx.Conn) (schema.LSN, bool, error) {
	var s *string
	var active bool
	err := conn.QueryRow(ctx, "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = $1", e.slot).Scan(&s, &active)
	if err != nil || s == nil {
		return 0, active, err
	}
	l, err := schema.ParseLSN(*s)
	return l, active, err
}

// leaderName returns the application_name of the connection holding the
// ingest lock in the test database, "" when none.
func (e *env) leaderName(t testing.TB) string {
	var name string
	err := e.conn.QueryRow(context.Background(), `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND a.application_name LIKE 'ingest-%'`).Scan(&name)
	if err == pgx.ErrNoRows {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// TestKillMidStream: SIGKILL the ingest while writers commit, restart it:
// every commit reaches NATS at least once, first receptions per subject are
// in LSN order (repeats allowed, no gap), and the slot's confirmed LSN never
// passes what a subscriber received.
func TestKillMidStream(t *testing.T) {
	e := newEnv(t)
	c := collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	ing := e.startChild(t, "ingest-a", envMaxMsg+"=16384")
	c.wait(20*time.Second, "the ingest streaming", func(r []rec) bool { return maxD(r) > 0 })

	// Writers: each commits 400 transactions of rows of its own
	// organisation, one to three rows per transaction; every tenth
	// transaction is large enough to be chunked (> 16 KiB).
	const writers = 4
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	committed := map[string]int{} // org -> rows committed (ids 1..n)
	var wg sync.WaitGroup
	for w := range writers {
		org := fmt.Sprintf("k%d", w)
		conn := e.pg.Connect(t, dbName(t, e.url))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n, i := 0, 0; ctx.Err() == nil && i < 400; i++ {
				rows := 1 + i%3
				if i%10 == 9 {
					rows = 500
				}
				_, err := conn.Exec(ctx, "INSERT INTO todos (org_id, id, title) SELECT $1, g, repeat('x', 60) FROM generate_series($2::int8, $3::int8) g",
					org, n+1, n+rows)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("writer %s: %v", org, err)
					}
					return
				}
				n += rows
				mu.Lock()
				committed[org] = n
				mu.Unlock()
			}
		}()
	}
	// Sample the slot's confirmed position while running.
	type sample struct {
		at  time.Time
		lsn schema.LSN
	}
	var samples []sample
	sconn := e.pg.Connect(t, dbName(t, e.url))
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		for ctx.Err() == nil {
			l, _, err := e.slotState(ctx, sconn)
			if err == nil && l > 0 {
				samples = append(samples, sample{time.Now(), l})
			}
			time.Sleep(20 * time.Millisecond) // sampling period, not a wait for a condition
		}
	}()

	received := func(recs []rec) int {
		n := 0
		for _, r := range recs {
			if r.part != nil {
				n += len(r.part.Ops)
			}
		}
		return n
	}
	c.wait(30*time.Second, "rows streaming", func(r []rec) bool { return received(r) > 2000 })
	if err := ing.Kill(); err != nil {
		t.Fatal(err)
	}
	// Once the walsender is gone, the slot's position is final: a
	// subscriber must (eventually) have received a message at or past it.
	var final schema.LSN
	waitFor(t, 20*time.Second, "slot released", func() bool {
		l, active, err := e.slotState(ctx, e.conn)
		final = l
		return err == nil && !active
	})
	c.wait(5*time.Second, "a message at the final confirmed position", func(recs []rec) bool { return maxLSN(recs) >= final })
	before := len(c.snapshot())

	e.startChild(t, "ingest-b", envMaxMsg+"=16384")
	c.wait(30*time.Second, "rows after the restart", func(r []rec) bool { return received(r[before:]) > 2000 })
	wg.Wait()
	cancel()
	<-sampleDone
	end := e.currentLSN(t)
	recs := c.wait(60*time.Second, "every commit", func(r []rec) bool { return maxD(r) >= end })

	// Every committed row arrived.
	got := map[string]map[string]bool{}
	for _, r := range recs {
		if r.part == nil {
			continue
		}
		for _, o := range r.part.Ops {
			var row struct{ ID string }
			if err := json.Unmarshal(o.Row, &row); err != nil {
				t.Fatal(err)
			}
			if got[r.part.Org] == nil {
				got[r.part.Org] = map[string]bool{}
			}
			got[r.part.Org][row.ID] = true
		}
	}
	for org, n := range committed {
		for id := 1; id <= n; id++ {
			if !got[org][fmt.Sprint(id)] {
				t.Fatalf("%s: row %d of %d never arrived", org, id, n)
			}
		}
	}
	// Per subject: first receptions in LSN order; within one epoch,
	// strictly increasing LSNs.
	seen := map[string]map[schema.LSN]bool{}
	lastFirst := map[string]schema.LSN{}
	lastInEpoch := map[string]schema.LSN{}
	epochs := map[string]bool{}
	repeats := 0
	for _, r := range recs {
		if r.part == nil || !r.part.Last {
			continue
		}
		p := r.part
		epochs[p.Epoch] = true
		k := r.subject + "/" + p.Epoch
		if p.LSN <= lastInEpoch[k] {
			t.Fatalf("%s: LSN %v after %v in epoch %s", r.subject, p.LSN, lastInEpoch[k], p.Epoch)
		}
		lastInEpoch[k] = p.LSN
		if seen[r.subject] == nil {
			seen[r.subject] = map[schema.LSN]bool{}
		}
		if seen[r.subject][p.LSN] {
			repeats++
			continue
		}
		seen[r.subject][p.LSN] = true
		if p.LSN < lastFirst[r.subject] {
			t.Fatalf("%s: commit %v first received after %v: a gap was filled by a repeat", r.subject, p.LSN, lastFirst[r.subject])
		}
		lastFirst[r.subject] = p.LSN
	}
	if len(epochs) != 2 {
		t.Fatalf("got %d epochs, want 2", len(epochs))
	}
	// The confirmed position never passed what the subscriber had
	// received (allowing the subscriber 1s to receive what NATS accepted).
	arrivals := make([]rec, 0, len(recs))
	for _, r := range recs {
		if r.part != nil && r.part.Last || r.hb != nil {
			arrivals = append(arrivals, r)
		}
	}
	for _, s := range samples {
		i := sort.Search(len(arrivals), func(i int) bool { return arrivals[i].at.After(s.at.Add(time.Second)) })
		if maxLSN(arrivals[:i]) < s.lsn {
			t.Fatalf("slot confirmed %v at %v before a subscriber received it", s.lsn, s.at)
		}
	}
	t.Logf("%d samples, %d repeated parts after the restart, final confirmed %v", len(samples), repeats, final)
}

// maxLSN is the largest commit LSN or D received.
func maxLSN(recs []rec) schema.LSN {
	var l schema.LSN
	for _, r := range recs {
		if r.part != nil && r.part.Last {
			l = max(l, r.part.LSN)
		}
		if r.hb != nil {
			l = max(l, r.hb.D)
		}
	}
	return l
}

// TestFailover: with a standby running, killing the active ingest hands
// over within a few seconds.
func TestFailover(t *testing.T) {
	e := newEnv(t)
	c := collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	procs := map[string]*testenv.Process{
		"ingest-a": e.startChild(t, "ingest-a"),
		"ingest-b": e.startChild(t, "ingest-b"),
	}
	for round := range 2 {
		end := e.txn(t, fmt.Sprintf("INSERT INTO todos (org_id, id) VALUES ('f', %d)", round))
		c.wait(20*time.Second, "a commit through the leader", func(r []rec) bool { return maxD(r) >= end })
		leader := e.leaderName(t)
		if procs[leader] == nil {
			t.Fatalf("leader %q is not a running ingest", leader)
		}
		if err := procs[leader].Kill(); err != nil {
			t.Fatal(err)
		}
		delete(procs, leader)
		killed := time.Now()
		end = e.txn(t, fmt.Sprintf("INSERT INTO todos (org_id, id) VALUES ('f', %d)", 100+round))
		c.wait(10*time.Second, "a commit through the new leader", func(r []rec) bool { return maxD(r) >= end })
		took := time.Since(killed)
		t.Logf("round %d: took over from %s in %v (new leader %s)", round, leader, took, e.leaderName(t))
		if took > 5*time.Second {
			t.Errorf("takeover took %v", took)
		}
		name := fmt.Sprintf("ingest-r%d", round)
		procs[name] = e.startChild(t, name)
	}
}

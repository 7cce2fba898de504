package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os/exec"

	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/schema"
)

// Benchmarks (run with `go test -run XXX -bench . ./ingest/`):
//
//   - BenchmarkDrainLargeTransaction / BenchmarkDrainSmallTransactions:
//     rows per second decoded and published by the ingest, next to
//     pg_recvlogical draining the same data from a fresh slot of its own to
//     /dev/null in the same run (VACUUM and CHECKPOINT before each drain,
//     median of 3). The ratio ripple/pg_recvlogical is the figure.
//   - BenchmarkCommitLatency: commit-to-NATS latency at 1,000 commits/s.

const benchRuns = 3

// drainBench prepares 2 x benchRuns slots, runs load once (all slots see
// the same changes), then drains each slot with pg_recvlogical and with the
// ingest in turn.
func drainBench(b *testing.B, rows int, load func(e *env) schema.LSN) {
	e := newEnv(b)
	ctx := context.Background()
	slots := func(prefix string) []string {
		var out []string
		for i := range benchRuns {
			name := fmt.Sprintf("%s_%s_%d", e.slot, prefix, i)
			if _, err := e.conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", name); err != nil {
				b.Fatal(err)
			}
			out = append(out, name)
		}
		return out
	}
	rippleSlots, recvSlots := slots("r"), slots("p")
	end := load(e)
	recvBin, err := exec.LookPath("pg_recvlogical")
	if err != nil {
		recvBin = "/usr/lib/postgresql/15/bin/pg_recvlogical"
	}
	prepare := func() {
		for _, s := range []string{"VACUUM", "CHECKPOINT"} {
			if _, err := e.conn.Exec(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
	}
	nc, err := nats.Connect(e.nats.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var published atomic.Int64
	var d atomic.Uint64
	if _, err := nc.Subscribe(">", func(m *nats.Msg) {
		published.Add(int64(len(m.Data)))
		if m.Subject == schema.SubjectControl {
			if r, err := decodeRec(m); err == nil && r.hb != nil {
				for {
					old := d.Load()
					if uint64(r.hb.D) <= old || d.CompareAndSwap(old, uint64(r.hb.D)) {
						break
					}
				}
			}
		}
	}); err != nil {
		b.Fatal(err)
	}

	var recvTimes, rippleTimes []time.Duration
	for i := range benchRuns {
		prepare()
		start := time.Now()
		cmd := exec.Command(recvBin, "-d", e.url, "--slot", recvSlots[i], "--start", "--no-loop",
			"--endpos", end.String(), "-o", "proto_version=1", "-o", "publication_names=ripple", "-f", "/dev/null")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pg_recvlogical: %v\n%s", err, out)
		}
		recvTimes = append(recvTimes, time.Since(start))

		prepare()
		d.Store(0)
		cfg := e.config(b)
		cfg.SlotName = rippleSlots[i]
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		cfg.PruneInterval = -1
		ing, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		start = time.Now()
		go func() { done <- ing.Run(rctx) }()
		waitFor(b, 10*time.Minute, "ingest drained", func() bool { return d.Load() >= uint64(end) })
		rippleTimes = append(rippleTimes, time.Since(start))
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	med := func(ds []time.Duration) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2]
	}
	r, p := med(rippleTimes), med(recvTimes)
	b.ReportMetric(float64(rows)/r.Seconds(), "ripple_rows/s")
	b.ReportMetric(float64(rows)/p.Seconds(), "pg_recvlogical_rows/s")
	b.ReportMetric(p.Seconds()/r.Seconds(), "ratio")
	b.Logf("rows %d; ripple %v (runs %v); pg_recvlogical %v (runs %v); %d MiB published", rows, r, rippleTimes, p, recvTimes, published.Load()>>20)
}

// BenchmarkDrainLargeTransaction: one transaction inserting 1,000,000 rows
// of 100 organisations.
func BenchmarkDrainLargeTransaction(b *testing.B) {
	const rows = 1_000_000
	drainBench(b, rows, func(e *env) schema.LSN {
		return e.txn(b, fmt.Sprintf(`INSERT INTO todos (org_id, id, title)
			SELECT 'org' || (g %% 100), g, 'a title for row ' || g FROM generate_series(1, %d) g`, rows))
	})
}

// BenchmarkDrainSmallTransactions: 20,000 transactions of 1 to 10 rows
// (110,000 rows), committed one after another by a procedure.
func BenchmarkDrainSmallTransactions(b *testing.B) {
	const txs = 20_000
	rows := 0
	for i := range txs {
		rows += 1 + i%10
	}
	drainBench(b, rows, func(e *env) schema.LSN {
		e.exec(b, `CREATE PROCEDURE gen(n int) LANGUAGE plpgsql AS $$
			DECLARE next int8 := 1;
			BEGIN
				FOR i IN 0 .. n - 1 LOOP
					INSERT INTO todos (org_id, id, title)
						SELECT 'org' || (i % 100), g, 'a title for row ' || g FROM generate_series(next, next + i % 10) g;
					next := next + 1 + i % 10;
					COMMIT;
				END LOOP;
			END $$`)
		e.exec(b, "CALL gen($1)", txs)
		return e.currentLSN(b)
	})
}

// BenchmarkCommitLatency: commit-to-NATS latency at 1,000 commits/s (each
// commit one row; latency from the commit returning to the part arriving at
// a subscriber).
func BenchmarkCommitLatency(b *testing.B) {
	e := newEnv(b)
	cfg := e.config(b)
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	e.start(b, cfg)
	nc, err := nats.Connect(e.nats.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	const commits = 5000
	var mu sync.Mutex
	committed := make(map[string]time.Time, commits)
	var lat []time.Duration
	var early int
	recv := make(chan struct{}, commits)
	if _, err := nc.Subscribe("sync.>", func(m *nats.Msg) {
		now := time.Now()
		r, err := decodeRec(m)
		if err != nil || r.part == nil {
			return
		}
		mu.Lock()
		for _, o := range r.part.Ops {
			var row struct{ ID string }
			_ = jsonUnmarshal(o.Row, &row)
			if t, ok := committed[row.ID]; ok {
				lat = append(lat, now.Sub(t))
			} else {
				early++ // arrived before the client saw its commit return
				lat = append(lat, 0)
			}
		}
		mu.Unlock()
		recv <- struct{}{}
	}); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for i := range commits {
		<-tick.C
		id := strconv.Itoa(i)
		if _, err := e.conn.Exec(ctx, "INSERT INTO todos (org_id, id) VALUES ('lat', $1)", i); err != nil {
			b.Fatal(err)
		}
		mu.Lock()
		if _, dup := committed[id]; !dup {
			committed[id] = time.Now()
		}
		mu.Unlock()
	}
	rate := float64(commits) / time.Since(start).Seconds()
	for range commits {
		select {
		case <-recv:
		case <-time.After(30 * time.Second):
			b.Fatal("commits did not arrive")
		}
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(rate, "commits/s")
	b.Logf("%d commits at %.0f/s: p50 %v p99 %v max %v (%d arrived before the commit returned)", commits, rate, p(0.5), p(0.99), lat[len(lat)-1], early)

}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

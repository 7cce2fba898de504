package ingest

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"

	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// Benchmarks (run with `go test -run XXX -bench . ./ingest/`):
//
//   - BenchmarkDrainLargeTransaction / BenchmarkDrainSmallTransactions:
//     rows per second decoded and published by the ingest, next to
//     pg_recvlogical draining the same data from a fresh slot of its own to
//     /dev/null in the same run (VACUUM and CHECKPOINT before each drain,
//     median of 3). The ratio ripple/pg_recvlogical is the figure.
//     Also reported: the CPU seconds the ingest process, the test process
//     (the embedded NATS server) and pg_recvlogical used per drain
//     (median), far less noisy than wall time on a shared machine.
//   - BenchmarkCommitLatency: commit-to-NATS latency at 1,000 commits/s.
//
// Knobs: RIPPLE_BENCH_ROWS (large transaction rows), RIPPLE_BENCH_HEARTBEAT
// (ingest heartbeat, default 100ms), RIPPLE_BENCH_GOMAXPROCS (the ingest
// process's GOMAXPROCS), RIPPLE_BENCH_CPUPROFILE (file), RIPPLE_BENCH_LOG
// (directory for the ingest logs).

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
	var d atomic.Uint64
	// Only the control subject has a subscriber: the figure is decoding and
	// publishing (NATS accepting the data), not fanning it out again.
	if _, err := nc.Subscribe(schema.SubjectControl, func(m *nats.Msg) {
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

	bin := buildIngestCmd(b)
	var hwm int64
	// CPU seconds used by the ingest process and by this process (the
	// embedded NATS server) per drain: far less noisy than wall time on a
	// shared machine.
	var ingestCPU, natsCPU, recvCPU []time.Duration
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
		recvCPU = append(recvCPU, cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())

		prepare()
		d.Store(0)
		selfStart := procCPU(b, os.Getpid())
		start = time.Now()
		cmd = exec.Command(bin, "-database-url", e.url, "-nats-url", e.nats.URL(),
			"-slot", rippleSlots[i], "-heartbeat", cmp.Or(os.Getenv("RIPPLE_BENCH_HEARTBEAT"), "100ms"), "-cpuprofile", os.Getenv("RIPPLE_BENCH_CPUPROFILE"))
		if v := os.Getenv("RIPPLE_BENCH_GOMAXPROCS"); v != "" {
			cmd.Env = append(os.Environ(), "GOMAXPROCS="+v)
		}
		proc := testenv.StartProcess(b, "ingestcmd", cmd)
		waitFor(b, 10*time.Minute, "ingest drained", func() bool { return d.Load() >= uint64(end) })
		rippleTimes = append(rippleTimes, time.Since(start))
		ingestCPU = append(ingestCPU, procCPU(b, proc.Pid()))
		natsCPU = append(natsCPU, procCPU(b, os.Getpid())-selfStart)
		hwm = max(hwm, vmHWM(b, proc.Pid()))
		if err := proc.Stop(); err != nil {
			b.Fatal(err)
		}
		if dir := os.Getenv("RIPPLE_BENCH_LOG"); dir != "" {
			_ = os.WriteFile(fmt.Sprintf("%s/ingest-%d.log", dir, i), []byte(proc.Output()), 0o644)
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
	b.ReportMetric(float64(hwm>>20), "ingest_peak_RSS_MiB")
	b.ReportMetric(med(ingestCPU).Seconds(), "ingest_cpu_s")
	b.ReportMetric(med(natsCPU).Seconds(), "nats_cpu_s")
	b.ReportMetric(med(recvCPU).Seconds(), "pg_recvlogical_cpu_s")
	b.Logf("rows %d; ripple %v (runs %v; ingest CPU %v; NATS server process CPU %v); pg_recvlogical %v (runs %v; CPU %v); ingest peak RSS %d MiB",
		rows, r, rippleTimes, ingestCPU, natsCPU, p, recvTimes, recvCPU, hwm>>20)
}

// procCPU returns the user and system CPU time a process has used.
func procCPU(t testing.TB, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may hold spaces): state is
	// field 3, utime and stime fields 14 and 15, in clock ticks of 10ms.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("parse /proc/%d/stat: %q", pid, b)
	}
	return time.Duration(u+st) * 10 * time.Millisecond
}

// BenchmarkDrainLargeTransaction: one transaction inserting 1,000,000 rows
// of 100 organisations.
func BenchmarkDrainLargeTransaction(b *testing.B) {
	rows := 1_000_000
	if v := os.Getenv("RIPPLE_BENCH_ROWS"); v != "" {
		rows, _ = strconv.Atoi(v)
	}
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
// commit one row; latency from the commit timestamp to the part arriving at
// a subscriber).
func BenchmarkCommitLatency(b *testing.B) {
	e := newEnv(b)
	testenv.StartProcess(b, "ingestcmd", exec.Command(buildIngestCmd(b), "-database-url", e.url, "-nats-url", e.nats.URL(), "-slot", e.slot))
	c := collect(b, e.nats.Connect(b), schema.SubjectControl)
	c.wait(20*time.Second, "the ingest streaming", func(r []rec) bool { return maxD(r) > 0 })
	nc, err := nats.Connect(e.nats.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	const commits = 5000
	var mu sync.Mutex
	var lat []time.Duration
	recv := make(chan struct{}, commits)
	if _, err := nc.Subscribe("sync.>", func(m *nats.Msg) {
		now := time.Now()
		r, err := decodeRec(m)
		if err != nil || r.part == nil {
			return
		}
		// Latency from the commit timestamp Postgres recorded (same
		// machine, same clock) to the subscriber's receipt.
		mu.Lock()
		for range r.part.Ops {
			lat = append(lat, now.Sub(r.part.CommitTime))
		}
		mu.Unlock()
		recv <- struct{}{}
	}); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	// Four connections share the load; commit i starts at start + i ms.
	ctx := context.Background()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 4 {
		conn := e.pg.Connect(b, dbName(b, e.url))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if _, err := conn.Exec(ctx, "INSERT INTO todos (org_id, id) VALUES ('lat', $1)", i); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	start := time.Now()
	for i := range commits {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Millisecond))) // pacing, not waiting for a condition
		jobs <- i
	}
	close(jobs)
	wg.Wait()
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
	b.Logf("%d commits at %.0f/s: commit timestamp to subscriber p50 %v p99 %v max %v", commits, rate, p(0.5), p(0.99), lat[len(lat)-1])

}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

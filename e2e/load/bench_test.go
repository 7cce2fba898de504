package load

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// BenchmarkGateway is the gateway benchmark of issue 3: one gateway process
// (`ripple gateway`), RIPPLE_LOAD_CLIENTS WebSocket clients (default 10,000)
// over RIPPLE_LOAD_ORGS organisations (default 100) in a separate
// ripple-load process, Postgres, embedded NATS and a `ripple ingest`
// process, all on loopback. Sub-benchmarks, in order:
//
//   - bare_ws_idle: a bare gorilla/websocket echo server (e2e/cmd/bare-ws)
//     with the same number of idle connections: KiB/conn of resident memory.
//
//   - gateway_idle: the gateway with every client subscribed and idle:
//     KiB/conn = (RSS with the clients - RSS with none) / clients.
//
//   - commits_200, commits_1000: a writer commits that many transactions per
//     second (one org each) for RIPPLE_LOAD_SECONDS (default 20): delivered
//     transactions per second at the clients, commit-to-client latency p50
//     and p99 (client receive time against the commit time in the commit
//     frame), gateway CPU seconds per 100k deliveries.
//
//   - saturation: offered load in steps of 50k to 500k deliveries/s
//     (transactions touching 4 orgs each, RIPPLE_LOAD_SECONDS/2 per step)
//     until a step loses deliveries, cuts clients, or delivers (including
//     the drain after the writer stopped) less than 95% of the offered rate;
//     reports the best step that delivered everything (deliveries/s, p50_ms,
//     p99_ms, cpu_s/100k) and the highest rate any step delivered
//     (peak_deliveries/s).
//
//     RIPPLE_BENCH=1 go test -run '^$' -bench BenchmarkGateway -benchtime 1x -timeout 60m ./e2e/load/
func BenchmarkGateway(b *testing.B) {
	sz := sizes(b)
	bins := buildBinaries(b)
	orgs := OrgNames("org", sz.orgs)
	n := sz.clients
	srcs := DefaultSourceAddrs()
	loadArgs := func(mode, url string) []string {
		return []string{"--mode", mode, "--url", url, "--clients", strconv.Itoa(n), "--orgs", strconv.Itoa(sz.orgs),
			"--dial-concurrency", "256", "--source-addrs", srcArg(srcs)}
	}

	var bareKiB float64
	b.Run("bare_ws_idle", func(b *testing.B) {
		addr := freeAddr(b)
		bare := testenv.StartProcess(b, "bare-ws", exec.Command(bins.bare, "--addr", addr))
		waitTCP(b, addr, bare)
		rss0 := stableRSS(b, bare.Pid())
		l, ev := startLoad(b, bins, "load-echo", loadArgs("echo", "ws://"+addr+"/")...)
		rss1 := stableRSS(b, bare.Pid())
		bareKiB = float64(rss1-rss0) / float64(ev.Ready) / 1024
		b.Logf("bare-ws: RSS %d KiB with 0, %d KiB with %d idle connections", rss0>>10, rss1>>10, ev.Ready)
		b.ReportMetric(bareKiB, "KiB/conn")
		l.quit(b)
		_ = bare.Kill()
	})

	const rowsPerOrg = 10
	st := startStack(b, bins, func(ctx context.Context, dbURL string) error {
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return CreateTable(ctx, conn, DefaultTable, orgs, rowsPerOrg)
	})
	gwPid := st.gateway.Pid()
	rss0 := stableRSS(b, gwPid)
	var mem0 map[string]float64
	if pprofDir() == "" {
		mem0 = scrape(b, st.metrics, goMemNames...)
	}
	args := append(loadArgs("ripple", st.wsURL), "--jwt-secret", st.secret)
	l, ev := startLoad(b, bins, "load", args...)
	defer l.quit(b)

	b.Run("gateway_idle", func(b *testing.B) {
		b.Logf("%d clients connected, subscribed and ready in %.1f s", ev.Ready, ev.Seconds)
		rss1 := stableRSS(b, gwPid)
		kib := float64(rss1-rss0) / float64(ev.Ready) / 1024
		b.Logf("gateway: RSS %d KiB with 0, %d KiB with %d idle subscribed connections: %.1f KiB/conn (bare-ws: %.1f KiB/conn)",
			rss0>>10, rss1>>10, ev.Ready, kib, bareKiB)
		b.ReportMetric(kib, "KiB/conn")
		if err := saveProfile(st, "/debug/pprof/heap", "gateway-idle.heap"); err != nil {
			b.Fatal(err)
		}
		if pprofDir() != "" {
			return // gateway-pprof has no /metrics
		}
		mem1 := scrape(b, st.metrics, goMemNames...)
		perConn := func(name string) float64 { return (mem1[name] - mem0[name]) / float64(ev.Ready) }
		b.Logf("gateway per connection: %.2f goroutines, heap in use %.1f KiB, stacks %.1f KiB, Go sys %.1f KiB",
			perConn("go_goroutines"), perConn("go_memstats_heap_inuse_bytes")/1024,
			perConn("go_memstats_stack_inuse_bytes")/1024, perConn("go_memstats_sys_bytes")/1024)
	})

	per := clientsPerOrg(orgs, n)
	acct := &deliveries{base: l.stats(b).Commits}
	wbase := WriterConfig{DatabaseURL: st.dbURL, Orgs: orgs, RowsPerOrg: rowsPerOrg, Duration: sz.phase}
	for _, rate := range []int{200, 1000} {
		b.Run(fmt.Sprintf("commits_%d", rate), func(b *testing.B) {
			w := wbase
			w.Rate = rate
			profErr := make(chan error, 1)
			go func() {
				profErr <- saveProfile(st, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(w.Duration.Seconds())), fmt.Sprintf("gateway-%d.cpu", rate))
			}()
			r := runPhase(b, st, l, per, w, acct)
			if err := <-profErr; err != nil {
				b.Fatal(err)
			}
			r.report(b)
		})
	}

	b.Run("saturation", func(b *testing.B) {
		const orgsPerTx = 4
		perTx := float64(orgsPerTx) * float64(n) / float64(len(orgs)) // deliveries per transaction
		var best *phaseResult
		peak := 0.0 // highest delivered rate of any step, even one that failed
		for _, target := range []float64{50e3, 100e3, 150e3, 200e3, 250e3, 300e3, 400e3, 500e3} {
			w := wbase
			w.OrgsPerTx = orgsPerTx
			w.Rate = int(target/perTx + 0.5)
			w.Duration = sz.phase / 2
			w.Workers = 8
			r := runPhase(b, st, l, per, w, acct)
			ok := r.lost == 0 && r.cut == 0 && r.resyncs == 0 && r.errors == 0 &&
				r.perSec >= 0.95*target && r.commitRate >= 0.95*float64(w.Rate)
			b.Logf("offered %.0f deliveries/s (%d tx/s x %d orgs): %s -> %v", target, w.Rate, orgsPerTx, r, ok)
			peak = max(peak, r.perSec)
			if !ok {
				break
			}
			best = &r
		}
		b.ReportMetric(peak, "peak_deliveries/s")
		if best == nil {
			b.Logf("no saturation step delivered everything")
			b.ReportMetric(0, "deliveries/s")
			return
		}
		best.report(b)
	})
}

// phaseResult is one measured load phase.
type phaseResult struct {
	commitRate float64 // transactions/s the writer achieved
	deliveries uint64  // commit frames received by clients during the phase
	expected   int64   // deliveries the writer's commits should cause
	lost       int64
	seconds    float64
	perSec     float64
	p50, p99   float64 // ms
	max        float64 // ms
	tapP50     float64 // ms, commit to NATS (before the gateway)
	tapP99     float64
	gwCPU      time.Duration
	loadCPU    time.Duration
	ingestCPU  time.Duration
	cut        uint64 // connections closed during the phase
	resyncs    uint64
	errors     uint64
	problem    string
}

func (r phaseResult) String() string {
	return fmt.Sprintf("writer %.0f tx/s; %d of %d deliveries in %.1f s = %.0f/s; latency p50 %.2f ms p99 %.2f ms max %.1f ms (commit to NATS: p50 %.2f ms p99 %.2f ms); "+
		"gateway CPU %.2f s (%.3f s/100k), load generator CPU %.2f s, ingest CPU %.2f s; lost %d, cut %d, resyncs %d, errors %d %s",
		r.commitRate, r.deliveries, r.expected, r.seconds, r.perSec, r.p50, r.p99, r.max, r.tapP50, r.tapP99,
		r.gwCPU.Seconds(), r.cpuPer100k(), r.loadCPU.Seconds(), r.ingestCPU.Seconds(), r.lost, r.cut, r.resyncs, r.errors, r.problem)
}

func (r phaseResult) cpuPer100k() float64 {
	if r.deliveries == 0 {
		return 0
	}
	return r.gwCPU.Seconds() / float64(r.deliveries) * 1e5
}

func (r phaseResult) report(b *testing.B) {
	b.Logf("%s", r)
	b.ReportMetric(r.perSec, "deliveries/s")
	b.ReportMetric(r.p50, "p50_ms")
	b.ReportMetric(r.p99, "p99_ms")
	b.ReportMetric(r.cpuPer100k(), "cpu_s/100k")
	b.ReportMetric(r.commitRate, "commits/s")
	b.ReportMetric(float64(r.lost), "lost")
}

// deliveries accounts for the commit frames the clients are owed since the
// load generator was ready.
type deliveries struct {
	base uint64 // the generator's commit count when it was ready
	owed int64  // deliveries caused by every phase's commits so far
}

// wait polls the generator until it has received every owed delivery, or
// timeout passed; it returns the last stats and whether they were complete.
func (d *deliveries) wait(b *testing.B, l *loadProc, timeout time.Duration) (Stats, bool) {
	deadline := time.Now().Add(timeout)
	for {
		s := l.stats(b)
		if int64(s.Commits-d.base) >= d.owed {
			return s, true
		}
		if time.Now().After(deadline) {
			return s, false
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

// runPhase runs the writer with w and measures what the clients received
// until every expected delivery arrived (or a minute after the writer
// ended; what has not arrived by then counts as lost).
func runPhase(b *testing.B, st *stack, l *loadProc, per map[string]int64, w WriterConfig, acct *deliveries) phaseResult {
	gwPid, loadPid := st.gateway.Pid(), l.p.Pid()
	// Start from a drained system: every delivery owed by earlier phases
	// arrived (or two minutes passed).
	if s, ok := acct.wait(b, l, 2*time.Minute); !ok {
		b.Logf("earlier phases still owe %d deliveries; they count in this phase", acct.owed-int64(s.Commits-acct.base))
	}
	s0 := l.stats(b)
	tap0 := st.tap.Snapshot()
	c0, lc0, ic0 := cpuOf(b, gwPid), cpuOf(b, loadPid), cpuOf(b, st.ingest.Pid())
	t0 := time.Now()
	ctx, cancel := ctxTimeout(w.Duration + 5*time.Minute)
	defer cancel()
	res, err := RunWriter(ctx, w)
	if err != nil {
		b.Fatal(err)
	}
	var expected int64
	for o, c := range res.PerOrg {
		expected += c * per[o]
	}
	acct.owed += expected
	s1, _ := acct.wait(b, l, time.Minute)
	t1 := time.Now()
	c1, lc1, ic1 := cpuOf(b, gwPid), cpuOf(b, loadPid), cpuOf(b, st.ingest.Pid())
	lat := s1.Latency.Sub(s0.Latency)
	tap := st.tap.Snapshot().Sub(tap0)
	r := phaseResult{
		commitRate: res.Rate(),
		deliveries: s1.Commits - s0.Commits,
		expected:   expected,
		seconds:    t1.Sub(t0).Seconds(),
		p50:        lat.Quantile(0.50),
		p99:        lat.Quantile(0.99),
		max:        lat.Max(),
		tapP50:     tap.Quantile(0.50),
		tapP99:     tap.Quantile(0.99),
		gwCPU:      c1 - c0,
		loadCPU:    lc1 - lc0,
		ingestCPU:  ic1 - ic0,
		cut:        s1.Closed - s0.Closed,
		resyncs:    s1.Resyncs - s0.Resyncs,
		errors:     s1.Errors - s0.Errors,
	}
	r.lost = expected - int64(r.deliveries)
	r.perSec = float64(r.deliveries) / r.seconds
	if r.cut+r.resyncs+r.errors > 0 {
		r.problem = "(" + s1.LastProblem + ")"
	}
	return r
}

// BenchmarkGatewaySnapshot measures snapshot throughput through the gateway:
// rows per second a WebSocket client (the ripple-load process, counting the
// operations of every frame with a structural scan) receives for one organisation of RIPPLE_SNAPSHOT_ROWS rows
// (default 1,000,000), against `COPY (SELECT ...) TO STDOUT` of the same rows
// and columns into io.Discard; ratio = gateway / COPY (target >= 0.5). Each
// is run twice and the faster run counts. A third gateway run with a client
// that decodes every frame with encoding/json is reported as decoded_rows/s.
//
//	RIPPLE_BENCH=1 go test -run '^$' -bench BenchmarkGatewaySnapshot -benchtime 1x -timeout 60m ./e2e/load/
func BenchmarkGatewaySnapshot(b *testing.B) {
	sz := sizes(b)
	bins := buildBinaries(b)
	st := startStack(b, bins, func(ctx context.Context, dbURL string) error {
		conn, err := pgx.Connect(ctx, dbURL)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if err := CreateTable(ctx, conn, DefaultTable, nil, 0); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `INSERT INTO bench_items (org_id, id, title, n, done)
			SELECT 'big', g, 'todo item number ' || g, g * 7, g % 2 = 0 FROM generate_series(1, $1::bigint) g`, sz.snapshotRows); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `INSERT INTO bench_items (org_id, id, title) SELECT 'small', g, 'x' FROM generate_series(1, 10000) g`); err != nil {
			return err
		}
		_, err = conn.Exec(ctx, "VACUUM ANALYZE bench_items")
		return err
	})
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(st.dbURL)
	if err != nil {
		b.Fatal(err)
	}
	schema.ApplySessionSettings(&cfg.Config)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)

	var copyRate, gwRate, decodedRate float64
	b.Run("copy", func(b *testing.B) {
		for i := 0; i < 2; i++ {
			t0 := time.Now()
			tag, err := conn.PgConn().CopyTo(ctx, io.Discard,
				"COPY (SELECT org_id, id, title, n, done, updated_at FROM bench_items WHERE org_id = 'big') TO STDOUT")
			if err != nil || tag.RowsAffected() != int64(sz.snapshotRows) {
				b.Fatalf("COPY: %v, %v", tag, err)
			}
			copyRate = max(copyRate, float64(sz.snapshotRows)/time.Since(t0).Seconds())
		}
		b.ReportMetric(copyRate, "rows/s")
	})
	b.Run("gateway", func(b *testing.B) {
		// Runs 0 and 1 count the rows of every frame (the figure); run 2
		// also decodes every frame with encoding/json.
		for i := 0; i < 3; i++ {
			c0 := cpuOf(b, st.gateway.Pid())
			args := []string{"--mode", "snapshot", "--url", st.wsURL,
				"--org", "big", "--jwt-secret", st.secret, "--source-addrs", DefaultSourceAddrs()[i]}
			if i == 2 {
				args = append(args, "--decode")
			}
			l, ev := startLoad(b, bins, fmt.Sprintf("snapshot-%d", i), args...)
			if ev.Event != "snapshot" || ev.Result.Rows != int64(sz.snapshotRows) {
				b.Fatalf("snapshot: %+v", ev)
			}
			gwCPU := cpuOf(b, st.gateway.Pid()) - c0
			b.Logf("gateway snapshot (client decodes: %v): %d rows, %d frames, %d MiB in %.2f s; CPU: gateway %.2f s, client process %.2f s",
				i == 2, ev.Result.Rows, ev.Result.Frames, ev.Result.Bytes>>20, ev.Result.Seconds, gwCPU.Seconds(), ev.Result.ClientCPUSeconds)
			if i == 2 {
				decodedRate = ev.Result.RowsPerSecond
			} else {
				gwRate = max(gwRate, ev.Result.RowsPerSecond)
			}
			<-l.p.Done()
		}
		b.ReportMetric(gwRate, "rows/s")
		b.ReportMetric(decodedRate, "decoded_rows/s")
	})
	if copyRate > 0 && gwRate > 0 {
		b.Run("ratio", func(b *testing.B) {
			b.Logf("snapshot of %d rows: gateway %.0f rows/s, COPY %.0f rows/s, ratio %.2f (target >= 0.5)",
				sz.snapshotRows, gwRate, copyRate, gwRate/copyRate)
			b.ReportMetric(gwRate/copyRate, "ratio")
		})
	}
}

// waitTCP polls addr until it accepts connections.
func waitTCP(b *testing.B, addr string, p *testenv.Process) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if p.Exited() || time.Now().After(deadline) {
			b.Fatalf("%s not listening on %s: %v %s", p.Name(), addr, err, tail(p.Output(), 1000))
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
}

package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ripple-sync/ripple/client"
	"github.com/ripple-sync/ripple/gateway"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/writer"
)

func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkMutationsThroughGateway measures mutations through the whole
// stack (issue 4): 100 Go clients (package client), each subscribed to
// items of its organisation (RIPPLE_BENCH_ORGS organisations, default 100:
// one per client; with fewer, clients share organisations and each also
// receives, and re-applies its pending mutations over, its neighbours' rows),
// send insert mutations through one gateway (httptest) and NATS to one writer (its
// default Config; RIPPLE_BENCH_WRITER_CONNS sets MaxConns); the ingest
// replicates the commits back, and a mutation counts as confirmed when its
// Pending is done: the commit that applied it has been applied to the
// client's view. Each run sends RIPPLE_BENCH_MUTATIONS (default 5,000)
// mutations, at least b.N; the figures are the reported metrics:
//
//	go test -run '^$' -bench BenchmarkMutationsThroughGateway -benchtime 1x ./e2e
//
// Sub-benchmarks:
//
//   - direct_pgx: the same inserts (same table, row shape and count) done
//     directly with pgx from this process: 100 goroutines, one insert at a
//     time each, over a pool of RIPPLE_BENCH_CONNS connections (default 8;
//     each side runs in the configuration it does best in).
//
//   - gateway_saturated: unpaced; each client keeps up to
//     RIPPLE_BENCH_WINDOW (default 8) mutations unconfirmed. mutations/s is
//     confirmed mutations per second; ratio is that over direct_pgx.
//
//   - gateway_paced_1000_per_s: each client sends one mutation every 100 ms
//     (1,000/s in all, phases spread), without waiting for confirmations;
//     p50/p99 are send-to-confirmation latencies.
func BenchmarkMutationsThroughGateway(b *testing.B) {
	const clients = 100
	orgs := benchEnvInt("RIPPLE_BENCH_ORGS", clients)
	conns := benchEnvInt("RIPPLE_BENCH_CONNS", 8)
	writerConns := benchEnvInt("RIPPLE_BENCH_WRITER_CONNS", 0) // 0: the writer's default
	window := benchEnvInt("RIPPLE_BENCH_WINDOW", 8)
	ops := func(b *testing.B) int { return max(b.N, benchEnvInt("RIPPLE_BENCH_MUTATIONS", 5000)) }

	tp := Start(b, Options{Gateway: func(c *gateway.Config) {
		c.MutationTimeout = 30 * time.Second
	}})
	reg := prometheus.NewRegistry()
	w, err := writer.New(writer.Config{DatabaseURL: tp.DBURL, NATSURL: tp.IngestNATS.URL(), MaxConns: int32(writerConns),
		Logger: tp.logger.With("part", "writer"), Registerer: reg})
	if err != nil {
		b.Fatal(err)
	}
	tp.goRun("writer", w.Run)
	waitFor(b, 30*time.Second, "writer ready", func() bool { return w.Ready(context.Background()) == nil })

	ctx := context.Background()
	pool, err := pgxpool.New(ctx, fmt.Sprintf("%s&pool_max_conns=%d", tp.DBURL, conns))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)

	orgOf := func(c int) string { return "bench" + strconv.Itoa(c%orgs) }
	cs := make([]*client.Client, clients)
	for i := range cs {
		org := orgOf(i)
		tok := Token(b, schema.Claims{Orgs: []string{org}, WriteOrgs: []string{org}})
		cs[i] = Dial(b, tp.Gateways[0].URL, tok, func(c *client.Config) { c.ClientID = fmt.Sprintf("bench-client-%d", i) })
		Subscribe(b, cs[i], "items", org)
	}

	var nextID atomic.Int64 // row ids, unique over all runs
	insertArgs := func(org string, id int64) map[string]any {
		return map[string]any{"table": "items", "row": map[string]any{"org": org, "id": strconv.FormatInt(id, 10), "title": "t"}}
	}
	countRows := func(b *testing.B) int64 {
		var n int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		return n
	}
	histStats := func(name string) (sum, count float64) {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					sum += m.GetHistogram().GetSampleSum()
					count += float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		return
	}
	counter := func(name string) (n float64) {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() == name {
				for _, m := range mf.GetMetric() {
					n += m.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	type stats struct{ bs, bc, ds, dc, req float64 }
	snap := func() stats {
		var s stats
		s.req = counter("ripple_writer_mutations_total")
		s.bs, s.bc = histStats("ripple_writer_batch_size")
		s.ds, s.dc = histStats("ripple_writer_mutation_duration_seconds")
		return s
	}
	// report reports throughput, ratio, latencies, the writer's mean batch
	// size, its mean request-to-reply time and requests per mutation of one
	// run.
	var direct float64
	report := func(b *testing.B, n int, el time.Duration, lat []time.Duration, s0 stats) {
		rate := float64(n) / el.Seconds()
		b.ReportMetric(rate, "mutations/s")
		if direct > 0 {
			b.ReportMetric(rate/direct, "ratio")
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
		if s1 := snap(); s1.bc > s0.bc && s1.dc > s0.dc {
			b.ReportMetric((s1.bs-s0.bs)/(s1.bc-s0.bc), "batch_avg")
			b.ReportMetric((s1.ds-s0.ds)/(s1.dc-s0.dc)*1000, "writer_ms")
			// Requests the writer answered per mutation: above 1 when
			// clients sent mutations again (after a reconnect or a lost
			// reply).
			b.ReportMetric((s1.req-s0.req)/float64(n), "req/mutation")
		}
	}

	b.Run("direct_pgx", func(b *testing.B) {
		n := ops(b)
		before := countRows(b)
		var left atomic.Int64
		left.Store(int64(n))
		var wg sync.WaitGroup
		errc := make(chan error, clients)
		start := time.Now()
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for left.Add(-1) >= 0 {
					if _, err := pool.Exec(ctx, `INSERT INTO items (org, id, title) VALUES ($1, $2, $3)`, orgOf(c), nextID.Add(1), "t"); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		close(errc)
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		if got := countRows(b) - before; got != int64(n) {
			b.Fatalf("%d rows inserted, want %d", got, n)
		}
		direct = float64(n) / el.Seconds()
		b.ReportMetric(direct, "inserts/s")
	})

	// run sends n mutations from the clients; pace (per client) zero means
	// unpaced with at most window unconfirmed per client. It returns the
	// time until the last confirmation and every send-to-confirmation
	// latency.
	run := func(b *testing.B, n int, pace time.Duration) (time.Duration, []time.Duration) {
		before := countRows(b)
		var left atomic.Int64
		left.Store(int64(n))
		var mu sync.Mutex
		lat := make([]time.Duration, 0, n)
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		start := time.Now()
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				org := orgOf(c)
				sem := make(chan struct{}, window)
				var tick *time.Ticker
				if pace > 0 {
					// Spread the clients' phases over the interval.
					t0 := time.NewTimer(pace * time.Duration(c) / clients)
					<-t0.C
					tick = time.NewTicker(pace)
					defer tick.Stop()
				}
				var mine sync.WaitGroup
				defer mine.Wait()
				for left.Add(-1) >= 0 && failed.Load() == nil {
					if tick == nil {
						sem <- struct{}{}
					}
					t0 := time.Now()
					p, err := cs[c].Mutate(ctx, "insert", insertArgs(org, nextID.Add(1)))
					if err != nil {
						failed.CompareAndSwap(nil, &err)
						return
					}
					mine.Add(1)
					go func() {
						defer mine.Done()
						<-p.Done()
						d := time.Since(t0)
						if tick == nil {
							<-sem
						}
						if err := p.Wait(ctx); err != nil {
							failed.CompareAndSwap(nil, &err)
							return
						}
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}()
					if tick != nil {
						<-tick.C
					}
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		if err := failed.Load(); err != nil {
			b.Fatal(*err)
		}
		if got := countRows(b) - before; got != int64(n) || len(lat) != n {
			b.Fatalf("%d rows inserted and %d confirmed, want %d", got, len(lat), n)
		}
		return el, lat
	}

	b.Run("gateway_saturated", func(b *testing.B) {
		n := ops(b)
		s0 := snap()
		el, lat := run(b, n, 0)
		report(b, n, el, lat, s0)
	})
	b.Run("gateway_paced_1000_per_s", func(b *testing.B) {
		n := ops(b)
		s0 := snap()
		el, lat := run(b, n, time.Second*clients/1000)
		report(b, n, el, lat, s0)
	})
}

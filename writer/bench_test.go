package writer_test

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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
	"github.com/ripple-sync/ripple/writer"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

const benchClients = 100

// BenchmarkMutations compares mutations through NATS and the writer (with its
// default Config) with the same inserts done directly with pgx from one
// process (a pool of RIPPLE_BENCH_CONNS connections, default 8), and measures request-to-reply latency at a
// paced 1,000 mutations/s from 100 clients.
//
// It runs twice: on the test clusters' usual settings (fsync=off, so the
// database is CPU-bound and the writer's extra statements per mutation show
// fully) and on a cluster with fsync=on and synchronous_commit=on, as a
// production primary runs.
//
//	go test -run '^$' -bench BenchmarkMutations -benchtime 5000x ./writer
func BenchmarkMutations(b *testing.B) {
	b.Run("fsync=off", func(b *testing.B) { benchMutations(b, setup(b)) })
	b.Run("fsync=on", func(b *testing.B) {
		pg := testenv.StartPostgres(b, testenv.WithSetting("fsync", "on"), testenv.WithSetting("synchronous_commit", "on"))
		benchMutations(b, setupOn(b, pg))
	})
}

// benchOps is how many mutations a sub-benchmark sends: b.N, but at least
// RIPPLE_BENCH_MUTATIONS (default 5,000) so that "make bench" (-benchtime 1x)
// measures something. The figures are the reported metrics (mutations/s,
// ratio, p50_ms, p99_ms), not ns/op.
func benchOps(b *testing.B) int {
	return max(b.N, envInt("RIPPLE_BENCH_MUTATIONS", 5000))
}

func benchMutations(b *testing.B, e *env) {
	conns := envInt("RIPPLE_BENCH_CONNS", 8)
	// The writer runs with its default number of connections (one
	// batcher each) unless RIPPLE_BENCH_WRITER_CONNS says otherwise; the
	// direct inserts use RIPPLE_BENCH_CONNS.
	e.startWriter(b, func(c *writer.Config) { c.MaxConns = int32(envInt("RIPPLE_BENCH_WRITER_CONNS", int(c.MaxConns))) })
	nc := e.nats.Connect(b)
	pool, err := pgxpool.New(context.Background(), fmt.Sprintf("%s&pool_max_conns=%d", e.url, conns))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	ctx := context.Background()

	var run atomic.Int64 // distinguishes rows of the sub-benchmarks' runs
	var direct, viaWriter float64

	// fanOut runs n operations over benchClients goroutines, client c doing
	// its share in order.
	fanOut := func(b *testing.B, n int, op func(client string, seq int64) error) time.Duration {
		r := run.Add(1)
		var next atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, benchClients)
		start := time.Now()
		for c := range benchClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := fmt.Sprintf("b%d-%d", r, c)
				var seq int64
				for next.Add(1) <= int64(n) {
					seq++
					if err := op(client, seq); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}

	b.Run("direct_pgx", func(b *testing.B) {
		n := benchOps(b)
		d := fanOut(b, n, func(client string, seq int64) error {
			_, err := pool.Exec(ctx, `INSERT INTO todos (id, org, title, n) VALUES ($1, $2, $3, $4)`,
				fmt.Sprintf("%s-%d", client, seq), "acme", "t", seq)
			return err
		})
		direct = float64(n) / d.Seconds()
		b.ReportMetric(direct, "inserts/s")
	})
	// The writer's statements run directly with pgx, without NATS, JSON or
	// the codec: the database's share of the cost of exactly once.
	b.Run("direct_pgx_protocol", func(b *testing.B) {
		n := benchOps(b)
		d := fanOut(b, n, func(client string, seq int64) error {
			b1 := &pgx.Batch{}
			b1.Queue("BEGIN")
			b1.Queue(`SELECT o_ord, o_expected, o_status, o_code, o_message, o_result, o_xid FROM ripple.begin_mutations($1::text[], $2::bigint[], true)`,
				[]string{client}, []int64{seq})
			b1.Queue("SAVEPOINT mutation")
			b1.Queue(`INSERT INTO todos (id, org, title, n) VALUES ($1::text::text, $2::text::text, $3::text::text, $4::text::int8) RETURNING id::text, org::text, title::text, n::text`,
				fmt.Sprintf("%s-%d", client, seq), "acme", "t", strconv.FormatInt(seq, 10))
			conn, err := pool.Acquire(ctx)
			if err != nil {
				return err
			}
			defer conn.Release()
			if err := conn.SendBatch(ctx, b1).Close(); err != nil {
				return err
			}
			b2 := &pgx.Batch{}
			b2.Queue(`INSERT INTO ripple.mutations (client_id, mutation_id, org, status, result) VALUES ($1, $2, 'acme', 'applied', '{}') RETURNING ripple_xid::text`, client, seq)
			b2.Queue("COMMIT")
			return conn.SendBatch(ctx, b2).Close()
		})
		b.ReportMetric(float64(n)/d.Seconds(), "mutations/s")
		if direct > 0 {
			b.ReportMetric(float64(n)/d.Seconds()/direct, "ratio")
		}
	})
	b.Run("writer", func(b *testing.B) {
		n := benchOps(b)
		d := fanOut(b, n, func(client string, seq int64) error {
			rep, raw, err := send(ctx, nc, todoInsert(client, seq), 10*time.Second)
			if err != nil {
				return err
			}
			if rep.Status != schema.MutationApplied {
				return fmt.Errorf("%s", raw)
			}
			return nil
		})
		viaWriter = float64(n) / d.Seconds()
		b.ReportMetric(viaWriter, "mutations/s")
		if direct > 0 {
			b.ReportMetric(viaWriter/direct, "ratio")
		}
	})
	b.Run("writer_paced_1000_per_s", func(b *testing.B) {
		// Each of the 100 clients sends one mutation every 100ms (1,000/s
		// in all), in its own id order, and waits for the reply.
		const rate = 1000
		r := run.Add(1)
		n := benchOps(b)
		lat := make([]time.Duration, 0, n)
		var mu sync.Mutex
		var wg sync.WaitGroup
		var next atomic.Int64
		errc := make(chan error, benchClients)
		start := time.Now()
		for c := range benchClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client := fmt.Sprintf("p%d-%d", r, c)
				tick := time.NewTicker(time.Second * benchClients / rate)
				defer tick.Stop()
				// Spread the clients' phases over the interval.
				time.Sleep(time.Duration(c) * time.Second / rate)
				var seq int64
				for next.Add(1) <= int64(n) {
					seq++
					t0 := time.Now()
					rep, raw, err := send(ctx, nc, todoInsert(client, seq), 10*time.Second)
					if err != nil || rep.Status != schema.MutationApplied {
						errc <- fmt.Errorf("%s %v", raw, err)
						return
					}
					mu.Lock()
					lat = append(lat, time.Since(t0))
					mu.Unlock()
					<-tick.C
				}
			}()
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		el := time.Since(start)
		slices.Sort(lat)
		b.ReportMetric(float64(len(lat))/el.Seconds(), "mutations/s")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	})
}

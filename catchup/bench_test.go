package catchup_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// BenchmarkSnapshot measures a full snapshot of one organisation of
// 1,000,000 rows (RIPPLE_BENCH_ROWS overrides the count) in rows per second,
// next to `COPY (SELECT ...) TO STDOUT` of the same rows into io.Discard on
// the same server, and logs the ratio catch-up / COPY (target >= 0.5).
//
//	go test -run '^$' -bench BenchmarkSnapshot -benchtime 3x ./catchup
func BenchmarkSnapshot(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("RIPPLE_BENCH_ROWS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("RIPPLE_BENCH_ROWS=%q", s)
		}
		n = v
	}
	f := newFixture(b, testenv.SharedPostgres(b))
	ctx := context.Background()
	f.exec(b, fmt.Sprintf(`INSERT INTO todos (id, org_id, title, done)
		SELECT g, 'big', 'todo item number ' || g, g %% 2 = 0 FROM generate_series(1, %d) g`, n))
	f.exec(b, `INSERT INTO todos (id, org_id, title) SELECT g, 'small', 'x' FROM generate_series(2000000001, 2000010000) g`)
	f.exec(b, "VACUUM ANALYZE todos")

	cfg, err := pgx.ParseConfig(f.url)
	if err != nil {
		b.Fatal(err)
	}
	schema.ApplySessionSettings(&cfg.Config)
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	c := newCatchup(b, catchup.Config{PrimaryURL: f.url})

	var copyRate, catchupRate float64
	b.Run("copy", func(b *testing.B) {
		for b.Loop() {
			tag, err := conn.PgConn().CopyTo(ctx, io.Discard,
				"COPY (SELECT id, org_id, title, done FROM todos WHERE org_id = 'big') TO STDOUT")
			if err != nil || tag.RowsAffected() != int64(n) {
				b.Fatalf("COPY: %v, %v", tag, err)
			}
		}
		copyRate = float64(n*b.N) / b.Elapsed().Seconds()
		b.ReportMetric(copyRate, "rows/s")
	})
	b.Run("catchup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			size := 0
			res, err := c.Run(ctx, catchup.Request{Table: "todos", Org: "big"}, func(ops []schema.Op) error {
				for _, o := range ops {
					size += len(o.Row)
				}
				return nil
			})
			if err != nil || res.Rows != n {
				b.Fatalf("catch-up: %+v, %v", res, err)
			}
			b.SetBytes(int64(size))
		}
		catchupRate = float64(n*b.N) / b.Elapsed().Seconds()
		b.ReportMetric(catchupRate, "rows/s")
	})
	if copyRate > 0 && catchupRate > 0 {
		b.Logf("snapshot of %d rows: catch-up %.0f rows/s, COPY %.0f rows/s, ratio %.2f (target >= 0.5)",
			n, catchupRate, copyRate, catchupRate/copyRate)
	}
}

package load

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/testenv"
)

func TestRunWriter(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	url := pg.CreateDatabase(t)
	conn := pg.Connect(t, dbName(t, url))
	ctx := context.Background()
	orgs := OrgNames("w", 4)
	if err := CreateTable(ctx, conn, DefaultTable, orgs, 5); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		cfg       WriterConfig
		minCommit int64
		maxCommit int64
	}{
		{"paced", WriterConfig{Rate: 200, Duration: 500 * time.Millisecond, InsertEvery: 4}, 50, 101},
		{"unpaced, two orgs per transaction", WriterConfig{Duration: 300 * time.Millisecond, OrgsPerTx: 2, Workers: 2, InsertEvery: -1}, 10, 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var sum0, rows0 int64
			if err := conn.QueryRow(ctx, `SELECT coalesce(sum(n),0), count(*) FROM bench_items`).Scan(&sum0, &rows0); err != nil {
				t.Fatal(err)
			}
			cfg := tc.cfg
			cfg.DatabaseURL, cfg.Orgs, cfg.RowsPerOrg = url, orgs, 5
			res, err := RunWriter(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if res.Commits < tc.minCommit || res.Commits > tc.maxCommit {
				t.Fatalf("%d commits, want %d..%d", res.Commits, tc.minCommit, tc.maxCommit)
			}
			var perOrg int64
			for _, n := range res.PerOrg {
				perOrg += n
			}
			per := int64(max(cfg.OrgsPerTx, 1))
			if perOrg != res.Commits*per {
				t.Fatalf("per-org total %d, want %d", perOrg, res.Commits*per)
			}
			var sum1, rows1 int64
			if err := conn.QueryRow(ctx, `SELECT sum(n), count(*) FROM bench_items`).Scan(&sum1, &rows1); err != nil {
				t.Fatal(err)
			}
			// Every committed transaction updated (n+1) or inserted one row per org.
			if got := (sum1 - sum0) + (rows1 - rows0); got != res.Commits*per {
				t.Fatalf("table changed by %d row writes, want %d", got, res.Commits*per)
			}
			if res.Rate() <= 0 {
				t.Fatalf("rate %v", res.Rate())
			}
		})
	}
}

func TestRunWriterBadConfig(t *testing.T) {
	ok := WriterConfig{DatabaseURL: "postgres://x", Orgs: []string{"a"}, RowsPerOrg: 1, Duration: time.Second}
	tests := []struct {
		name string
		mod  func(*WriterConfig)
	}{
		{"no url", func(c *WriterConfig) { c.DatabaseURL = "" }},
		{"no orgs", func(c *WriterConfig) { c.Orgs = nil }},
		{"no rows", func(c *WriterConfig) { c.RowsPerOrg = 0 }},
		{"no duration", func(c *WriterConfig) { c.Duration = 0 }},
		{"negative rate", func(c *WriterConfig) { c.Rate = -1 }},
		{"too many orgs per tx", func(c *WriterConfig) { c.OrgsPerTx = 2 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			if _, err := RunWriter(context.Background(), cfg); !errors.Is(err, ErrBadConfig) {
				t.Fatalf("err = %v, want ErrBadConfig", err)
			}
		})
	}
}

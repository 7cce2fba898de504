package load

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ripple-sync/ripple/migrations"
)

// CreateTable creates the benchmark's sync table (org_id, id, title, n, done,
// updated_at; primary key (org_id, id)), enables it for sync rooted at
// org_id, and inserts rowsPerOrg rows for every org (ids 1..rowsPerOrg).
func CreateTable(ctx context.Context, conn *pgx.Conn, table string, orgs []string, rowsPerOrg int) error {
	_, err := conn.Exec(ctx, fmt.Sprintf(`CREATE TABLE %s (
		org_id text NOT NULL,
		id bigint NOT NULL,
		title text NOT NULL,
		n bigint NOT NULL DEFAULT 0,
		done boolean NOT NULL DEFAULT false,
		updated_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (org_id, id))`, pgx.Identifier{table}.Sanitize()))
	if err != nil {
		return fmt.Errorf("load: create table: %w", err)
	}
	if _, err := migrations.Enable(ctx, conn, table, "org_id"); err != nil {
		return fmt.Errorf("load: enable: %w", err)
	}
	if rowsPerOrg > 0 {
		_, err = conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (org_id, id, title)
			SELECT o, i, 'item ' || i || ' of ' || o FROM unnest($1::text[]) o, generate_series(1, $2::bigint) i`,
			pgx.Identifier{table}.Sanitize()), orgs, rowsPerOrg)
		if err != nil {
			return fmt.Errorf("load: seed rows: %w", err)
		}
	}
	return nil
}

// WriterConfig configures RunWriter.
type WriterConfig struct {
	// DatabaseURL is the primary (required).
	DatabaseURL string
	// Table is the table CreateTable made (default DefaultTable).
	Table string
	// Orgs are the organisations written to, round robin (required).
	Orgs []string
	// RowsPerOrg is how many rows per org exist for updates (ids
	// 1..RowsPerOrg; required, > 0).
	RowsPerOrg int
	// Rate is the number of transactions per second; 0 commits as fast as
	// the workers can.
	Rate int
	// Duration is how long to write (required, > 0); RunWriter stops by
	// itself when it has passed.
	Duration time.Duration
	// Workers is the number of connections committing concurrently
	// (default 4).
	Workers int
	// OrgsPerTx is how many organisations each transaction touches (one row
	// each; default 1).
	OrgsPerTx int
	// InsertEvery makes every InsertEvery-th transaction insert new rows
	// instead of updating (default 10; negative: never).
	InsertEvery int
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *WriterConfig) setDefaults() {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.OrgsPerTx <= 0 {
		c.OrgsPerTx = 1
	}
	if c.InsertEvery == 0 {
		c.InsertEvery = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *WriterConfig) validate() error {
	switch {
	case c.DatabaseURL == "":
		return fmt.Errorf("%w: DatabaseURL is required", ErrBadConfig)
	case len(c.Orgs) == 0:
		return fmt.Errorf("%w: Orgs is required", ErrBadConfig)
	case c.RowsPerOrg <= 0:
		return fmt.Errorf("%w: RowsPerOrg must be positive", ErrBadConfig)
	case c.Duration <= 0:
		return fmt.Errorf("%w: Duration must be positive", ErrBadConfig)
	case c.Rate < 0:
		return fmt.Errorf("%w: negative Rate", ErrBadConfig)
	case c.OrgsPerTx > len(c.Orgs):
		return fmt.Errorf("%w: OrgsPerTx %d exceeds %d orgs", ErrBadConfig, c.OrgsPerTx, len(c.Orgs))
	}
	return nil
}

// WriterResult is what RunWriter committed.
type WriterResult struct {
	// Commits is the number of committed transactions.
	Commits int64
	// PerOrg counts, per organisation, the committed transactions that
	// touched it.
	PerOrg map[string]int64
	// Elapsed is the time from the first to the end of the last
	// transaction.
	Elapsed time.Duration
}

// Rate returns the achieved transactions per second.
func (r WriterResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Commits) / r.Elapsed.Seconds()
}

// RunWriter commits transactions for cfg.Duration and returns what it
// committed. Transaction k touches OrgsPerTx consecutive organisations
// starting at k*OrgsPerTx (round robin), updating one existing row of each
// (n = n + 1, updated_at = now()) or, every InsertEvery-th transaction,
// inserting a new one. With a Rate, a ticker releases transactions so that
// k of them have started after k/Rate seconds; workers that cannot keep up
// make the achieved rate lower (see WriterResult.Rate). The first failing
// transaction ends the run with its error.
func RunWriter(ctx context.Context, cfg WriterConfig) (WriterResult, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return WriterResult{}, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return WriterResult{}, fmt.Errorf("load: %w", err)
	}
	pcfg.MaxConns = int32(cfg.Workers)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return WriterResult{}, fmt.Errorf("load: %w", err)
	}
	defer pool.Close()
	tbl := pgx.Identifier{cfg.Table}.Sanitize()
	updateSQL := `UPDATE ` + tbl + ` SET n = n + 1, updated_at = now() WHERE org_id = $1 AND id = $2`
	insertSQL := `INSERT INTO ` + tbl + ` (org_id, id, title) VALUES ($1, $2, $3)`

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tokens := make(chan int64, max(cfg.Rate, 1))
	var seq atomic.Int64 // next transaction number when unpaced
	start := time.Now()
	end := start.Add(cfg.Duration)
	// Inserted ids start above the start time in microseconds, so that runs
	// one after another never collide.
	insertBase := start.UnixMicro()
	if cfg.Rate > 0 {
		go func() {
			defer close(tokens)
			t := time.NewTicker(2 * time.Millisecond)
			defer t.Stop()
			var sent int64
			for {
				now := time.Now()
				if !now.Before(end) {
					return
				}
				due := int64(now.Sub(start).Seconds()*float64(cfg.Rate)) + 1
				for ; sent < due; sent++ {
					select {
					case tokens <- sent:
					case <-ctx.Done():
						return
					}
				}
				select {
				case <-t.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	next := func() (int64, bool) {
		if cfg.Rate > 0 {
			k, ok := <-tokens
			return k, ok
		}
		if !time.Now().Before(end) {
			return 0, false
		}
		return seq.Add(1) - 1, true
	}

	var (
		mu      sync.Mutex
		res     = WriterResult{PerOrg: make(map[string]int64, len(cfg.Orgs))}
		firstEr error
		lastEnd time.Time
		wg      sync.WaitGroup
	)
	for w := 0; w < cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			perOrg := make(map[string]int64)
			var commits int64
			var doneAt time.Time
			defer func() {
				mu.Lock()
				res.Commits += commits
				for o, n := range perOrg {
					res.PerOrg[o] += n
				}
				if doneAt.After(lastEnd) {
					lastEnd = doneAt
				}
				mu.Unlock()
			}()
			for {
				k, ok := next()
				if !ok || ctx.Err() != nil {
					return
				}
				insert := cfg.InsertEvery > 0 && k%int64(cfg.InsertEvery) == int64(cfg.InsertEvery)-1
				first := int(k*int64(cfg.OrgsPerTx)) % len(cfg.Orgs)
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					for j := 0; j < cfg.OrgsPerTx; j++ {
						org := cfg.Orgs[(first+j)%len(cfg.Orgs)]
						var err error
						if insert {
							id := insertBase + k
							_, err = tx.Exec(ctx, insertSQL, org, id, fmt.Sprintf("new item %d", id))
						} else {
							id := (k*int64(cfg.OrgsPerTx)/int64(len(cfg.Orgs)))%int64(cfg.RowsPerOrg) + 1
							_, err = tx.Exec(ctx, updateSQL, org, id)
						}
						if err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						if firstEr == nil {
							firstEr = fmt.Errorf("load: transaction %d: %w", k, err)
						}
						mu.Unlock()
						cancel()
					}
					return
				}
				commits++
				for j := 0; j < cfg.OrgsPerTx; j++ {
					perOrg[cfg.Orgs[(first+j)%len(cfg.Orgs)]]++
				}
				doneAt = time.Now()
			}
		}()
	}
	wg.Wait()
	if lastEnd.IsZero() {
		lastEnd = time.Now()
	}
	res.Elapsed = lastEnd.Sub(start)
	if firstEr != nil {
		return res, firstEr
	}
	if err := parent.Err(); err != nil {
		return res, err
	}
	return res, nil
}

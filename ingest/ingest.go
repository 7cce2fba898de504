package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
)

// ErrAlreadyRunning is returned by Run when the Ingest is already running.
var ErrAlreadyRunning = errors.New("ingest: already running")

// Ingest streams the publication's changes from the primary to NATS. Create
// it with New and start it with Run.
type Ingest struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	running atomic.Bool
	// natsDown is signalled (non-blocking) by the NATS disconnect handler.
	natsDown chan struct{}

	mu sync.Mutex
	st State

	// Owned by the goroutine running the replication sessions (sessions
	// run one after another).
	d        uint64               // decoded-through LSN D, kept across sessions
	relCache map[uint32]*relation // last Relation message per OID, for schema-change detection
	ignored  map[string]bool      // relations already logged as ignored
	// noStreamed is set when the database has no ripple.streamed_relations
	// (migrated by an older Ripple): schema changes are then detected
	// only against what this process streamed.
	noStreamed atomic.Bool
}

// noStreamedTable notes (and logs, once) that ripple.streamed_relations is
// missing.
func (i *Ingest) noStreamedTable() {
	if !i.noStreamed.Swap(true) {
		i.log.Warn("ripple.streamed_relations is missing (run ripple migrate): a column change made while no ingest runs will not resynchronise clients")
	}
}

// State is a snapshot of what an Ingest is doing, for health endpoints and
// logs.
type State struct {
	// Running is true while Run runs.
	Running bool
	// Leader is true while this ingest holds the leader lock.
	Leader bool
	// Streaming is true while a replication session streams and NATS is
	// connected.
	Streaming bool
	// D is the decoded-through LSN last published in a heartbeat.
	D schema.LSN
	// Acked is the LSN last acknowledged to Postgres.
	Acked schema.LSN
	// LastProgress is when the ingest last proved its connections work (a
	// standby's lock poll, a leader's flushed heartbeat).
	LastProgress time.Time
	// LastError is the error that ended the last replication session or
	// connection attempt, "" when none.
	LastError string
}

// New validates cfg, applies its defaults and returns an Ingest. It does not
// connect to anything; Run does.
func New(cfg Config) (*Ingest, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ingest: register metrics: %w", err)
	}
	return &Ingest{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "ingest", "epoch", cfg.Epoch),
		m:        m,
		natsDown: make(chan struct{}, 1),
		relCache: make(map[uint32]*relation),
		ignored:  make(map[string]bool),
	}, nil
}

// Epoch returns the epoch carried by every message this Ingest publishes.
func (i *Ingest) Epoch() string { return i.cfg.Epoch }

// State returns a snapshot of the ingest's state.
func (i *Ingest) State() State {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.st
}

// Healthy reports whether Run is running and has recently proved that its
// connections work: a standby polling the lock, or a leader whose
// heartbeats reach NATS. Use it for a liveness probe.
func (i *Ingest) Healthy() bool {
	st := i.State()
	limit := 10 * max(i.cfg.HeartbeatInterval, i.cfg.StandbyPollInterval)
	limit = max(limit, 30*time.Second)
	return st.Running && time.Since(st.LastProgress) < limit
}

// Ready reports whether this ingest is the leader and streaming. A hot
// standby is healthy but not ready.
func (i *Ingest) Ready() bool {
	st := i.State()
	return st.Running && st.Leader && st.Streaming
}

func (i *Ingest) update(f func(*State)) {
	i.mu.Lock()
	f(&i.st)
	i.mu.Unlock()
}

func (i *Ingest) progress() { i.update(func(s *State) { s.LastProgress = time.Now() }) }

// Run runs the ingest until ctx is done: it waits for the leader lock as a
// hot standby, then replicates, reconnecting to Postgres and NATS with
// backoff. It returns nil when ctx is cancelled.
func (i *Ingest) Run(ctx context.Context) error {
	if !i.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer i.running.Store(false)
	i.update(func(s *State) { *s = State{Running: true, LastProgress: time.Now()} })
	defer i.update(func(s *State) { s.Running, s.Leader, s.Streaming = false, false, false })

	nc := i.cfg.NATS
	if nc == nil {
		var err error
		nc, err = nats.Connect(i.cfg.NATSURL,
			nats.Name("ripple-ingest"),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250*time.Millisecond),
			nats.RetryOnFailedConnect(true),
			// No reconnect buffer: a publish while disconnected fails and
			// the session restarts from the slot's confirmed position,
			// so nothing newer than a lost message is ever sent after it.
			nats.ReconnectBufSize(-1),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				i.log.Warn("NATS disconnected", "err", err)
				i.signalNATSDown()
			}),
			nats.ReconnectHandler(func(c *nats.Conn) {
				i.log.Info("NATS reconnected", "url", c.ConnectedUrlRedacted())
			}),
		)
		if err != nil {
			return fmt.Errorf("ingest: connect to NATS: %w", err)
		}
		defer nc.Close()
	} else {
		prev := nc.Opts.DisconnectedErrCB
		nc.SetDisconnectErrHandler(func(c *nats.Conn, err error) {
			i.log.Warn("NATS disconnected", "err", err)
			i.signalNATSDown()
			if prev != nil {
				prev(c, err)
			}
		})
	}

	bo := newBackoff()
	for ctx.Err() == nil {
		lockConn, err := i.acquireLeadership(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			i.setError(err)
			d := bo.next()
			i.log.Warn("cannot reach Postgres for the leader lock; retrying", "err", err, "retry_in", d)
			sleepCtx(ctx, d)
			continue
		}
		bo.reset()
		i.lead(ctx, lockConn, nc)
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = lockConn.Close(closeCtx)
		cancel()
	}
	return nil
}

func (i *Ingest) signalNATSDown() {
	select {
	case i.natsDown <- struct{}{}:
	default:
	}
}

func (i *Ingest) setError(err error) {
	i.update(func(s *State) { s.LastError = err.Error() })
}

// acquireLeadership connects and polls pg_try_advisory_lock until this
// process holds the leader lock, returning the connection that holds it.
func (i *Ingest) acquireLeadership(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, i.cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("ingest: connect for the leader lock: %w", err)
	}
	logged := false
	for {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", i.cfg.LockID).Scan(&ok); err != nil {
			_ = conn.Close(context.Background())
			return nil, fmt.Errorf("ingest: try the leader lock: %w", err)
		}
		i.progress()
		if ok {
			i.log.Info("acquired the leader lock", "lock_id", i.cfg.LockID)
			return conn, nil
		}
		if !logged {
			i.log.Info("standby: another ingest holds the leader lock; waiting", "lock_id", i.cfg.LockID)
			logged = true
		}
		if !sleepCtx(ctx, i.cfg.StandbyPollInterval) {
			_ = conn.Close(context.Background())
			return nil, ctx.Err()
		}
	}
}

// checkpoint is a {lsn, xmin} pair read on the primary (rule 5); xmax is the
// snapshot's xmax, used to widen 32-bit xids.
type checkpoint struct {
	lsn, xmin, xmax uint64
}

// lead replicates while this process holds the lock on lockConn.
func (i *Ingest) lead(ctx context.Context, lockConn *pgx.Conn, nc *nats.Conn) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	i.m.leader.Set(1)
	i.update(func(s *State) { s.Leader = true })
	defer func() {
		i.m.leader.Set(0)
		i.update(func(s *State) { s.Leader, s.Streaming = false, false })
	}()

	ckpts := make(chan checkpoint, 8)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		i.holdLock(lctx, lockConn, cancel, ckpts)
	}()
	go func() {
		defer wg.Done()
		i.pruneLoop(lctx)
	}()

	bo := newBackoff()
	for lctx.Err() == nil {
		start := time.Now()
		err := i.replicate(lctx, nc, ckpts)
		i.update(func(s *State) { s.Streaming = false })
		if lctx.Err() != nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			bo.reset()
		}
		i.setError(err)
		d := bo.next()
		i.log.Warn("replication stopped; reconnecting", "err", err, "retry_in", d)
		sleepCtx(lctx, d)
	}
	cancel()
	wg.Wait()
	if ctx.Err() == nil {
		i.log.Warn("stepped down as leader")
	}
}

// holdLock owns the lock connection while leading: it checks every
// StandbyPollInterval that the connection (and so the lock) is alive and
// calls lost at once when it is not, and reads checkpoints every
// CheckpointInterval.
func (i *Ingest) holdLock(ctx context.Context, conn *pgx.Conn, lost func(), out chan<- checkpoint) {
	poll := time.NewTicker(i.cfg.StandbyPollInterval)
	defer poll.Stop()
	ck := time.NewTicker(i.cfg.CheckpointInterval)
	defer ck.Stop()
	fail := func(err error) {
		if ctx.Err() == nil {
			i.log.Error("lost the leader lock connection; stopping replication", "err", err)
			i.setError(err)
			lost()
		}
	}
	read := func() bool {
		cp, err := readCheckpoint(ctx, conn)
		if err != nil {
			fail(err)
			return false
		}
		select {
		case out <- cp:
		default: // the session is busy; a newer one follows
		}
		return true
	}
	if !read() {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := conn.Exec(pctx, "SELECT 1")
			cancel()
			if err != nil {
				fail(err)
				return
			}
		case <-ck.C:
			if !read() {
				return
			}
		}
	}
}

// readCheckpoint reads the snapshot xmin first, then the insert LSN (rule
// 5): every transaction with an id below xmin has its commit record below
// lsn.
func readCheckpoint(ctx context.Context, conn *pgx.Conn) (checkpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var xmin, xmax, lsn string
	if err := conn.QueryRow(ctx, "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text FROM pg_current_snapshot() s").Scan(&xmin, &xmax); err != nil {
		return checkpoint{}, fmt.Errorf("ingest: read checkpoint xmin: %w", err)
	}
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn); err != nil {
		return checkpoint{}, fmt.Errorf("ingest: read checkpoint lsn: %w", err)
	}
	x, err1 := schema.ParseXID8(xmin)
	y, err2 := schema.ParseXID8(xmax)
	l, err3 := schema.ParseLSN(lsn)
	if err := errors.Join(err1, err2, err3); err != nil {
		return checkpoint{}, fmt.Errorf("ingest: read checkpoint: %w", err)
	}
	return checkpoint{lsn: uint64(l), xmin: uint64(x), xmax: uint64(y)}, nil
}

// pruneLoop prunes old tombstones and mutation records now and every
// PruneInterval while leading.
func (i *Ingest) pruneLoop(ctx context.Context) {
	if i.cfg.PruneInterval < 0 {
		return
	}
	for {
		i.prune(ctx)
		if !sleepCtx(ctx, i.cfg.PruneInterval) {
			return
		}
	}
}

func (i *Ingest) prune(ctx context.Context) {
	conn, err := pgx.Connect(ctx, i.cfg.DatabaseURL)
	if err != nil {
		if ctx.Err() == nil {
			i.log.Warn("prune: cannot connect", "err", err)
		}
		return
	}
	defer conn.Close(context.Background())
	res, err := migrations.Prune(ctx, conn, i.cfg.TombstoneRetention)
	if err != nil {
		if ctx.Err() == nil {
			i.log.Warn("prune failed", "err", err)
		}
		return
	}
	i.log.Info("pruned tombstones", "deleted", res.Deleted, "horizon", res.Horizon, "cutoff", res.Cutoff)
	n, err := migrations.PruneMutations(ctx, conn, i.cfg.MutationRetention)
	if err != nil {
		if ctx.Err() == nil {
			i.log.Warn("pruning mutation records failed", "err", err, "deleted", n)
		}
		return
	}
	i.log.Info("pruned mutation records", "deleted", n, "retention", i.cfg.MutationRetention)
}

// backoff doubles from 100ms to 5s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = 100 * time.Millisecond
	} else {
		b.d = min(2*b.d, 5*time.Second)
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }

// sleepCtx waits d or until ctx is done; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

package writer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/schema"
)

// Mutator is a named function that executes a mutation inside its
// transaction. claims are the caller's (as verified by the gateway), args the
// mutation's arguments as the client sent them. The result is stored with
// the mutation's record as JSON and sent back to the client.
//
// Return a *Rejection for a business-rule failure; any write the mutator
// made is rolled back and the rejection is recorded. Database errors are
// mapped to rejections too (constraint violations to
// "constraint_violation", bad values to "invalid_argument"), except
// serialization failures and deadlocks, which run the whole transaction
// again, and connection failures, which record nothing. Other errors are
// recorded as "internal" rejections.
//
// A mutator must be deterministic in what it decides from the database and
// args (it may be run again after a deadlock) and must not end the
// transaction (no COMMIT or ROLLBACK through Exec).
type Mutator func(ctx context.Context, tx *Tx, claims schema.Claims, args json.RawMessage) (result any, err error)

// Writer executes mutations sent by gateways over NATS, each exactly once
// and, per client, in mutation id order. Create it with New, add custom
// mutators with Register, then call Run.
type Writer struct {
	cfg      Config
	log      *slog.Logger
	pool     *pgxpool.Pool
	types    *schema.Types
	tables   *tableCache
	metrics  *metrics
	mu       sync.Mutex // guards mutators until Run starts; read-only after
	mutators map[string]Mutator
	started  atomic.Bool
	ready    atomic.Bool
	nc       atomic.Pointer[nats.Conn]
	inflight sync.WaitGroup
}

// New validates cfg and returns a Writer. It does not connect yet: the
// database pool connects on first use and NATS in Run.
func New(cfg Config) (*Writer, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: DatabaseURL: %w", ErrBadConfig, err)
	}
	pcfg.MaxConns = cfg.MaxConns
	// Results are encoded by the schema codec, whose text forms depend on
	// the session settings: use the same ones as the stream.
	schema.ApplySessionSettings(&pcfg.ConnConfig.Config)
	pcfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	pcfg.ConnConfig.RuntimeParams["application_name"] = "ripple-writer"
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("writer: register metrics: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	if err != nil {
		return nil, fmt.Errorf("writer: database pool: %w", err)
	}
	types := schema.BuiltinTypes()
	w := &Writer{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "writer"),
		pool:     pool,
		types:    types,
		tables:   newTableCache(types),
		metrics:  m,
		mutators: map[string]Mutator{},
	}
	for _, name := range []string{MutatorInsert, MutatorUpdate, MutatorDelete} {
		w.mutators[name] = builtinMutator(builtinPreparer(name))
	}
	return w, nil
}

// Register adds a custom mutator. It must be called before Run; names must be
// unique (insert, update and delete are built in).
func (w *Writer) Register(name string, m Mutator) error {
	if name == "" || m == nil {
		return fmt.Errorf("writer: Register needs a name and a function")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started.Load() {
		return ErrRunning
	}
	if _, ok := w.mutators[name]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateMutator, name)
	}
	w.mutators[name] = m
	return nil
}

// Run serves mutation requests on Config.Subject in queue group
// Config.Queue until ctx is done, then stops taking requests, finishes the
// ones in flight (at most Config.DrainTimeout) and closes its connections.
// A Writer runs once.
func (w *Writer) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started.Swap(true) {
		w.mu.Unlock()
		return ErrRunning
	}
	w.mu.Unlock()
	defer w.pool.Close()

	nc := w.cfg.NATS
	if nc == nil {
		var err error
		nc, err = nats.Connect(w.cfg.NATSURL,
			nats.Name("ripple-writer"),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(250*time.Millisecond),
		)
		if err != nil {
			return fmt.Errorf("writer: connect to NATS: %w", err)
		}
		defer nc.Close()
	}
	w.nc.Store(nc)

	// Warm the caches; tables the load misses are loaded on first use.
	if err := w.warm(ctx); err != nil {
		w.log.Warn("could not preload sync tables", "err", err)
	}

	// One batcher per database connection; each client maps to one lane.
	ln := newLanes(int(w.cfg.MaxConns), w.cfg.MaxBatch)
	quit := make(chan struct{})
	reqCtx := context.WithoutCancel(ctx)
	var lanesDone sync.WaitGroup
	for _, in := range ln.in {
		lanesDone.Add(1)
		go func() {
			defer lanesDone.Done()
			w.runLane(reqCtx, in, quit)
		}()
	}
	sub, err := nc.QueueSubscribe(w.cfg.Subject, w.cfg.Queue, func(msg *nats.Msg) {
		// Runs on the subscription's goroutine: blocking here when the
		// lane is full leaves further requests queued in NATS.
		w.inflight.Add(1)
		p, ok := w.accept(msg)
		if !ok {
			return
		}
		select {
		case ln.of(p.req.ClientID) <- p:
		case <-quit:
			w.respond(p, rejectedReply(schema.MutationReply{ClientID: p.req.ClientID, MutationID: p.req.MutationID},
				CodeUnavailable, "the writer is shutting down; send the mutation again"))
		}
	})
	if err != nil {
		close(quit)
		return fmt.Errorf("writer: subscribe %s: %w", w.cfg.Subject, err)
	}
	defer func() {
		close(quit)
		lanesDone.Wait()
	}()
	if err := sub.SetPendingLimits(-1, 64<<20); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("writer: subscription limits: %w", err)
	}
	if err := nc.FlushTimeout(10 * time.Second); err != nil && ctx.Err() == nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("writer: subscribe %s: %w", w.cfg.Subject, err)
	}
	w.ready.Store(true)
	w.log.Info("writer serving", "subject", w.cfg.Subject, "queue", w.cfg.Queue)

	<-ctx.Done()
	w.ready.Store(false)
	drained := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		w.log.Warn("drain subscription", "err", err)
	}
	timer := time.NewTimer(w.cfg.DrainTimeout)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		w.log.Warn("drain timed out")
	}
	done := make(chan struct{})
	go func() { w.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-timer.C:
		w.log.Warn("mutations still in flight at shutdown")
	}
	w.log.Info("writer stopped")
	return nil
}

// warm loads the type map and every sync table.
func (w *Writer) warm(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.StatementTimeout)
	defer cancel()
	if err := w.types.Refresh(ctx, w.pool); err != nil {
		return err
	}
	_, err := w.tables.load(ctx, w.pool, "")
	return err
}

// accept decodes a request message. A malformed or invalid request is
// answered at once (ok false); a valid one is returned for its lane.
func (w *Writer) accept(msg *nats.Msg) (p *pending, ok bool) {
	p = &pending{msg: msg, start: time.Now()}
	w.metrics.inflight.Inc()
	if err := json.Unmarshal(msg.Data, &p.req); err != nil {
		w.respond(p, rejectedReply(schema.MutationReply{}, CodeInvalidArgument, "malformed mutation request: "+err.Error()))
		return nil, false
	}
	base := schema.MutationReply{ClientID: p.req.ClientID, MutationID: p.req.MutationID}
	if p.req.ClientID == "" || len(p.req.ClientID) > maxClientIDLen {
		w.respond(p, rejectedReply(base, CodeInvalidArgument, fmt.Sprintf("client_id must be 1 to %d bytes", maxClientIDLen)))
		return nil, false
	}
	if p.req.MutationID < 1 {
		w.respond(p, rejectedReply(base, CodeInvalidArgument, "mutation_id must be a positive integer"))
		return nil, false
	}
	return p, true
}

// respond sends a request's reply and ends its accounting.
func (w *Writer) respond(p *pending, reply schema.MutationReply) {
	defer w.inflight.Done()
	defer w.metrics.inflight.Dec()
	w.metrics.mutations.WithLabelValues(reply.Status, reply.Code).Inc()
	w.metrics.duration.Observe(time.Since(p.start).Seconds())
	if p.msg.Reply == "" {
		return
	}
	data, err := json.Marshal(reply)
	if err != nil {
		w.log.Error("encode reply", "err", err)
		return
	}
	if err := p.msg.Respond(data); err != nil {
		w.log.Warn("send reply", "client_id", reply.ClientID, "mutation_id", reply.MutationID, "err", err)
	}
}

// Healthy reports whether the writer can reach the database.
func (w *Writer) Healthy(ctx context.Context) error {
	if err := w.pool.Ping(ctx); err != nil {
		return fmt.Errorf("writer: database: %w", err)
	}
	return nil
}

// Ready reports whether the writer is serving: subscribed, connected to
// NATS, and able to reach the database.
func (w *Writer) Ready(ctx context.Context) error {
	if !w.ready.Load() {
		return errors.New("writer: not serving")
	}
	if nc := w.nc.Load(); nc == nil || !nc.IsConnected() {
		return errors.New("writer: not connected to NATS")
	}
	return w.Healthy(ctx)
}

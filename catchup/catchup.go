package catchup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ripple-sync/ripple/schema"
)

// Errors callers branch on. They are wrapped with detail; test with errors.Is.
var (
	// ErrReplicaLag is returned when the replica did not replay up to the
	// request's MinLSN within Config.ReplicaWaitTimeout. It also wraps
	// context.DeadlineExceeded. The client may retry (protocol code
	// replica_lag).
	ErrReplicaLag = errors.New("catchup: replica replay did not reach the requested LSN in time")
	// ErrBadCursor is returned for a resume cursor that cannot come from this
	// database: it lies beyond the primary's next transaction id.
	ErrBadCursor = errors.New("catchup: cursor from the future")
	// ErrBadOrg is returned when the organisation is not a valid value of the
	// table's root key column (for example "acme" for a uuid column).
	ErrBadOrg = errors.New("catchup: organisation is not a valid root key value")
	// ErrModeChanged is returned when a catch-up that already announced
	// resume mode (Request.Begin) had to be retried and the tombstone horizon
	// passed its cursor in between: the caller must start the catch-up again
	// (it will then be a full snapshot).
	ErrModeChanged = errors.New("catchup: cursor fell below the tombstone horizon during a retry")
)

// Request asks for the rows of one (table, organisation).
type Request struct {
	// Table is the registry name of a sync table.
	Table string
	// Org is the organisation: the value of the table's root key.
	Org string
	// Columns restricts the rows to these columns (nil: every column). The
	// primary key columns are always included. An unknown column gives
	// ErrBadColumns.
	Columns []string
	// Cursor is the resume cursor the client holds (nil: full snapshot).
	// A cursor below the stored tombstone horizon gets a full snapshot.
	Cursor *schema.XID8
	// MinLSN is the position a replica must have replayed before the
	// snapshot is taken: max(D of the barrier, the client's last applied
	// LSN). Ignored on a primary.
	MinLSN schema.LSN
	// Begin, when set, is called once, after the snapshot was taken and
	// before the first batch, with Mode, U and Cursor filled in (Rows and
	// Bytes zero): the caller learns whether the batches that follow are a
	// full snapshot or a resume before it sees them. If Begin returns an
	// error, Run stops and returns it. A retried attempt does not call it
	// again; Run's Result has the final U and Cursor.
	Begin func(Result) error
}

// Result describes a finished catch-up.
type Result struct {
	// Mode is schema.SnapshotFull (the operations replace everything the
	// client held for the subscription) or schema.SnapshotResume (they
	// apply on top).
	Mode string
	// U is the upper bound: every commit visible in the snapshot has an LSN
	// <= U. The client may show the snapshot once it has applied every live
	// commit up to U.
	U schema.LSN
	// Cursor is the snapshot's xmin: the resume cursor of the state the
	// snapshot shows.
	Cursor schema.XID8
	// Xmax and InProgress complete the snapshot (pg_snapshot_xmax and
	// pg_snapshot_xip): see Visible.
	Xmax       schema.XID8
	InProgress []schema.XID8
	// Rows is the number of operations handed to emit (inserts and deletes,
	// over all attempts).
	Rows int
	// Bytes is the size of their encoded rows and keys.
	Bytes int
	// Attempts is how many times the catch-up ran (more than 1 after
	// recovery conflicts on a replica).
	Attempts int
}

// Visible reports whether the snapshot sees the changes of transaction xid,
// provided xid committed: false when xid was still in progress when the
// snapshot was taken (or had not begun). A commit can be decoded, published
// and received by a gateway before it is visible to new snapshots on the
// primary (its commit record is flushed before the backend leaves the proc
// array), so a gateway checks the commits it received just before a
// catch-up began against Visible.
func (r Result) Visible(xid schema.XID8) bool {
	if xid < r.Cursor {
		return true
	}
	if xid >= r.Xmax {
		return false
	}
	return !slices.Contains(r.InProgress, xid)
}

// Catchup runs catch-up queries: snapshots and resumes of (table,
// organisation) pairs, on a replica or the primary. It is safe for
// concurrent use; each Run uses one pooled connection.
type Catchup struct {
	cfg  Config
	log  *slog.Logger
	pool *pgxpool.Pool
	reg  registry
	m    *metrics

	checked atomic.Bool // checkRole ran
}

// New returns a Catchup for cfg. It does not connect yet: connections are
// opened as catch-ups need them.
func New(ctx context.Context, cfg Config) (*Catchup, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.url())
	if err != nil {
		return nil, fmt.Errorf("%w: database URL: %w", ErrBadConfig, err)
	}
	pcfg.MaxConns = cfg.MaxConns
	schema.ApplySessionSettings(&pcfg.ConnConfig.Config)
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		m.unregister()
		return nil, fmt.Errorf("catchup: connection pool: %w", err)
	}
	target := "primary"
	if cfg.ReplicaURL != "" {
		target = "replica"
	}
	return &Catchup{
		cfg:  cfg,
		log:  cfg.Logger.With(slog.String("component", "catchup"), slog.String("target", target)),
		pool: pool,
		m:    m,
	}, nil
}

// Close closes the connection pool and unregisters the metrics. Catch-ups
// still running fail.
func (c *Catchup) Close() {
	c.pool.Close()
	c.m.unregister()
}

// Table returns the sync table called name (the registry name: "todos", or
// "schema.todos" outside public). On a miss it reloads the registry once;
// an unknown table gives an error wrapping schema.ErrUnknownTable.
func (c *Catchup) Table(ctx context.Context, name string) (*schema.Table, error) {
	e, _, err := c.entry(ctx, name)
	if err != nil {
		return nil, err
	}
	return e.Table, nil
}

// Reload reads the registry and the database's types again. Call it when a
// table's columns changed (a schema_change resync).
func (c *Catchup) Reload(ctx context.Context) error {
	_, _, gen := c.reg.lookup("")
	return c.reg.reload(ctx, c.pool, gen)
}

func (c *Catchup) entry(ctx context.Context, name string) (*schema.TableDef, *schema.Types, error) {
	e, types, gen := c.reg.lookup(name)
	if e == nil {
		if err := c.reg.reload(ctx, c.pool, gen); err != nil {
			return nil, nil, err
		}
		e, types, _ = c.reg.lookup(name)
		if !c.checked.Swap(true) {
			c.checkRole(ctx)
		}
	}
	if e == nil {
		return nil, nil, fmt.Errorf("%w: %q", schema.ErrUnknownTable, name)
	}
	return e, types, nil
}

// checkRole warns when the primary uses synchronous replication and the
// role cannot see other sessions' wait events, which the snapshot needs to
// tell commits waiting for their standby (see snapshotSQL).
func (c *Catchup) checkRole(ctx context.Context) {
	var ok bool
	err := c.pool.QueryRow(ctx, `SELECT pg_catalog.pg_is_in_recovery()
		OR pg_catalog.current_setting('synchronous_standby_names') = ''
		OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')`).Scan(&ok)
	if err == nil && !ok {
		c.log.Warn("synchronous replication is on but this role cannot see other sessions' wait events; " +
			"grant it pg_read_all_stats so that catch-ups never miss a commit waiting for its standby")
	}
}

// Project resolves a column list against table (see NewProjection): the
// gateway uses it to project live rows exactly as Run projects snapshot
// rows for the same list.
func (c *Catchup) Project(table *schema.Table, columns []string) (*Projection, error) {
	return NewProjection(table, columns)
}

// Run catches one (table, organisation) up: a full snapshot, or with a
// cursor a resume (rows and tombstones with a transaction id >= the cursor),
// from one REPEATABLE READ READ ONLY transaction. It hands the operations to
// emit in batches of at most Config.BatchRows operations and about
// Config.BatchBytes bytes; emit must not keep the slice or the bytes it
// points into after it returns (they are reused). If emit returns an error
// Run stops and returns it.
//
// Within the operations, deletes come before inserts: applied in order they
// leave the client with exactly the snapshot's rows of the organisation.
func (c *Catchup) Run(ctx context.Context, req Request, emit func(ops []schema.Op) error) (Result, error) {
	start := time.Now()
	res, err := c.run(ctx, req, emit)
	c.m.observeRun(res, err, time.Since(start))
	if err != nil {
		c.log.LogAttrs(ctx, slog.LevelDebug, "catch-up failed", slog.String("table", req.Table),
			slog.String("org", req.Org), slog.Any("error", err))
	}
	return res, err
}

func (c *Catchup) run(ctx context.Context, req Request, emit func(ops []schema.Op) error) (Result, error) {
	if emit == nil {
		return Result{}, errors.New("catchup: nil emit")
	}
	e, types, err := c.entry(ctx, req.Table)
	if err != nil {
		return Result{}, err
	}
	proj, err := NewProjection(e.Table, req.Columns)
	if err != nil {
		return Result{}, err
	}
	r, err := c.newRun(ctx, e, types, proj, req, emit)
	if err != nil {
		return Result{}, err
	}
	for {
		r.res.Attempts++
		err := r.attempt(ctx)
		r.res.Rows, r.res.Bytes = r.b.rows, r.b.bytes
		if err == nil {
			return r.res, nil
		}
		if !isRecoveryConflict(err) || r.res.Attempts >= c.cfg.MaxAttempts || ctx.Err() != nil {
			if isSchemaChange(err) {
				// The registry is stale (a column or the table went away):
				// reload it so that the next catch-up sees the table as it is.
				_ = c.Reload(ctx)
			}
			return r.res, err
		}
		c.m.retries.Inc()
		c.log.LogAttrs(ctx, slog.LevelWarn, "catch-up cancelled by recovery conflict; retrying",
			slog.String("table", req.Table), slog.Int("attempt", r.res.Attempts), slog.Any("error", err))
	}
}

// newRun builds the encoders of one catch-up; a column type the loaded types
// do not know makes it reload them once.
func (c *Catchup) newRun(ctx context.Context, e *schema.TableDef, types *schema.Types, proj *Projection,
	req Request, emit func([]schema.Op) error) (*run, error) {
	keyCols := make([]schema.Column, 0, len(e.PrimaryKey))
	for _, i := range e.KeyIndexes() {
		keyCols = append(keyCols, e.Columns[i])
	}
	for reloaded := false; ; reloaded = true {
		enc, err := types.RowEncoder(proj.Columns())
		var keyEnc *schema.RowEncoder
		if err == nil {
			keyEnc, err = types.RowEncoder(keyCols)
		}
		if err == nil {
			return &run{c: c, e: e, proj: proj, enc: enc, keyEnc: keyEnc, req: req,
				b: &batcher{maxRows: c.cfg.BatchRows, maxBytes: c.cfg.BatchBytes, emit: emit}}, nil
		}
		if reloaded || !errors.Is(err, schema.ErrUnsupportedType) {
			return nil, fmt.Errorf("catchup: %s: %w", e.Name, err)
		}
		if err := types.Refresh(ctx, c.pool); err != nil {
			return nil, fmt.Errorf("catchup: %w", err)
		}
	}
}

// isRecoveryConflict reports whether err is a query a hot standby cancelled
// because of a recovery conflict: worth running the catch-up again.
func isRecoveryConflict(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", "40P01": // serialization_failure, deadlock_detected (buffer pin)
		return true
	}
	return false
}

func isSchemaChange(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "42703", "42P01", "42804", "42883": // undefined column/table, datatype mismatch, undefined function
		return true
	}
	return false
}

func isBadOrg(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "22P02", "22003", "22007", "22008", "22023", "22021": // invalid text / out of range / bad datetime / bad encoding
		return true
	}
	return false
}

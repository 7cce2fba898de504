package catchup

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/ripple-sync/ripple/schema"
)

// run is one catch-up, possibly over several attempts. It is owned by the
// goroutine calling Run.
type run struct {
	c      *Catchup
	e      *schema.TableDef
	proj   *Projection
	enc    *schema.RowEncoder // rows, projected
	keyEnc *schema.RowEncoder // tombstone keys
	req    Request
	b      *batcher
	res    Result

	begun bool // Request.Begin was called (the mode is announced)
	// deletesSince is set when an attempt in full mode emitted operations
	// and failed: the next attempt must also delete what that attempt sent
	// and the newer snapshot no longer holds (tombstones with xid >= it).
	deletesSince *schema.XID8
}

// snapshotInfo is what the first statement of the transaction reads.
type snapshotInfo struct {
	xmin, xmax schema.XID8
	xip        []schema.XID8 // in progress, between xmin and xmax
	snapshot   string
	recovery   bool
	u          schema.LSN
	horizon    schema.XID8
}

// snapshotSQL is the first statement of every catch-up transaction: it takes
// the REPEATABLE READ snapshot and, evaluated after it, reads the upper bound
// U (rule 3), the cursor (the snapshot's xmin, rule 5), the tombstone horizon
// as of this snapshot (rule 6), and whether the snapshot lists as in progress
// a transaction that has already committed (rule 3: synchronous replication).
// On a standby the receive position can trail the replay position after the
// WAL receiver restarted, so U is the larger of the two.
//
// A commit waiting for its synchronous standby has its commit record in WAL
// (the ingest may decode and publish it) and is marked committed in the
// commit log, but it stays in the proc array, so it is invisible to new
// snapshots and pg_xact_status() still reports it "in progress" (it asks the
// proc array first), and a waiting transaction with the newest xid is not
// even in pg_snapshot_xip (it is >= xmax): neither can see it. Such a backend
// waits on the event IPC/SyncRep, which is what is read instead: every such
// backend, at the time of this statement, holds a commit invisible to the
// snapshot. Seeing other roles' wait events needs superuser or
// pg_read_all_stats; the registry load logs a warning when synchronous
// replication is configured and the role lacks both.
const snapshotSQL = `SELECT pg_catalog.pg_snapshot_xmin(q.s)::text, pg_catalog.pg_snapshot_xmax(q.s)::text, q.s::text,
	pg_catalog.pg_is_in_recovery(),
	(CASE WHEN pg_catalog.pg_is_in_recovery()
		THEN GREATEST(pg_catalog.pg_last_wal_receive_lsn(), pg_catalog.pg_last_wal_replay_lsn())
		ELSE pg_catalog.pg_current_wal_insert_lsn() END)::text,
	ARRAY(SELECT a.backend_xid::text FROM pg_catalog.pg_stat_activity a
		WHERE a.wait_event_type = 'IPC' AND a.wait_event = 'SyncRep' AND a.backend_xid IS NOT NULL),
	coalesce((SELECT h.xid FROM ripple.horizon h), '0')::text
FROM (SELECT pg_catalog.pg_current_snapshot() AS s) q`

func (r *run) attempt(ctx context.Context) error {
	c := r.c
	conn, err := c.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("catchup: connect: %w", err)
	}
	defer conn.Release()
	if c.cfg.ReplicaURL != "" && r.req.MinLSN > 0 {
		if err := r.waitReplay(ctx, conn); err != nil {
			return err
		}
	}
	tx, snap, err := r.begin(ctx, conn)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()

	mode := schema.SnapshotFull
	if r.req.Cursor != nil && *r.req.Cursor >= snap.horizon {
		mode = schema.SnapshotResume
		if !snap.recovery && *r.req.Cursor > snap.xmax {
			return fmt.Errorf("%w: cursor %s, next transaction id %s", ErrBadCursor, r.req.Cursor, snap.xmax)
		}
	}
	if r.begun && mode != r.res.Mode {
		return fmt.Errorf("%w: cursor %s, horizon %s", ErrModeChanged, r.req.Cursor, snap.horizon)
	}
	r.res.Mode, r.res.U, r.res.Cursor = mode, snap.u, snap.xmin
	r.res.Xmax, r.res.InProgress = snap.xmax, snap.xip
	if !r.begun {
		r.begun = true
		if r.req.Begin != nil {
			if err := r.req.Begin(r.res); err != nil {
				return err
			}
		}
	}
	r.b.reset()
	emittedBefore := r.b.rows
	if err := r.stream(ctx, conn.Conn().PgConn(), mode); err != nil {
		if mode == schema.SnapshotFull && r.b.rows > emittedBefore && r.deletesSince == nil {
			x := snap.xmin
			r.deletesSince = &x
		}
		if isBadOrg(err) {
			return fmt.Errorf("%w: %q for %s.%s: %w", ErrBadOrg, r.req.Org, r.e.Name, r.e.RootKey, err)
		}
		return err
	}
	// Every row of the snapshot has been read: ending the read-only
	// transaction can fail (say a recovery conflict that arrived after the
	// last row) without changing anything sent.
	_ = tx.Rollback(ctx)
	if !snap.recovery {
		if err := flushPast(ctx, conn, snap.u); err != nil {
			c.cfg.Logger.Warn("catchup: could not flush WAL past the snapshot bound", "u", snap.u.String(), "err", err)
		}
	}
	return nil
}

// flushPast makes sure the primary's WAL is flushed up to u, the snapshot's
// upper bound. The ingest decodes only flushed WAL, so its decoded-through
// position D reaches u only then, and the gateway shows a snapshot only once
// D >= u. WAL that nothing flushes can sit past the flush position for a
// long time: a read-only query writes some (heap pruning) without a commit
// record, and on a quiet primary only the bgwriter's next running-xacts
// record (about every 15 s) flushes it. A tiny transaction that takes an xid
// writes a commit record and flushes everything before it.
func flushPast(ctx context.Context, conn *pgxpool.Conn, u schema.LSN) error {
	var flushed bool
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_flush_lsn() >= $1::text::pg_lsn", u.String()).Scan(&flushed); err != nil {
		return err
	}
	if flushed {
		return nil
	}
	_, err := conn.Exec(ctx, "SELECT pg_catalog.pg_current_xact_id()")
	return err
}

// stream sends the operations of one attempt: tombstones first, then rows.
func (r *run) stream(ctx context.Context, pgc *pgconn.PgConn, mode string) error {
	org := []byte(r.req.Org)
	if mode == schema.SnapshotFull {
		if r.deletesSince != nil {
			if err := r.tombstones(ctx, pgc, *r.deletesSince); err != nil {
				return err
			}
		}
		if err := r.query(ctx, pgc, r.rowsSQL(false), [][]byte{org}, schema.OpInsert, r.enc); err != nil {
			return err
		}
	} else {
		if err := r.tombstones(ctx, pgc, *r.req.Cursor); err != nil {
			return err
		}
		cur := []byte(r.req.Cursor.String())
		if err := r.query(ctx, pgc, r.rowsSQL(true), [][]byte{org, cur}, schema.OpInsert, r.enc); err != nil {
			return err
		}
	}
	return r.b.flush()
}

func (r *run) tombstones(ctx context.Context, pgc *pgconn.PgConn, since schema.XID8) error {
	params := [][]byte{[]byte(r.e.Name), []byte(r.req.Org), []byte(since.String()), []byte(r.req.Org)}
	return r.query(ctx, pgc, r.tombstonesSQL(), params, schema.OpDelete, r.keyEnc)
}

// rowsSQL selects the projected columns of the organisation's rows, with
// resume only those written at or after the cursor ($2); the index on
// (root key, ripple_xid) serves both.
func (r *run) rowsSQL(resume bool) string {
	t := r.e.Table
	var b strings.Builder
	b.WriteString("SELECT ")
	for i, col := range r.proj.Columns() {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(col.Name))
	}
	b.WriteString(" FROM ")
	b.WriteString(quoteTable(t))
	b.WriteString(" WHERE ")
	b.WriteString(quoteIdent(t.RootKey))
	b.WriteString(" = $1")
	if resume {
		b.WriteString(" AND ")
		b.WriteString(quoteIdent(schema.XIDColumn))
		b.WriteString(" >= $2::pg_catalog.xid8")
	}
	return b.String()
}

// tombstonesSQL selects the primary key text values of the organisation's
// tombstones with xid >= $3 whose key has no live row in the organisation
// written by the same or a later transaction (where both exist, the larger
// xid wins: a row deleted and inserted again is sent as the row).
func (r *run) tombstonesSQL() string {
	t := r.e.Table
	var b strings.Builder
	// Each text key is cast back to its column's type with its modifier,
	// so that it is rendered as the column renders it: the trigger's text
	// cast drops a char(n) value's padding, which the stream keeps.
	keys := t.KeyIndexes()
	b.WriteString("SELECT DISTINCT ")
	for i, col := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "ts.pk[%d]::%s", i+1, r.e.Attributes[col].FullTypeName)
	}
	b.WriteString(" FROM ripple.tombstones ts WHERE ts.table_name = $1 AND ts.root_key = $2 AND ts.xid >= $3::pg_catalog.xid8")
	b.WriteString(" AND NOT EXISTS (SELECT 1 FROM ")
	b.WriteString(quoteTable(t))
	b.WriteString(" r WHERE r.")
	b.WriteString(quoteIdent(t.RootKey))
	b.WriteString(" = $4")
	for i, col := range keys {
		fmt.Fprintf(&b, " AND r.%s = ts.pk[%d]::%s", quoteIdent(t.PrimaryKey[i]), i+1, r.e.Attributes[col].FullTypeName)
	}
	b.WriteString(" AND r.")
	b.WriteString(quoteIdent(schema.XIDColumn))
	b.WriteString(" >= ts.xid)")
	return b.String()
}

// query runs one statement with text-format parameters and results and
// streams its rows, one at a time, into the batcher: memory stays bounded
// whatever the number of rows.
func (r *run) query(ctx context.Context, pgc *pgconn.PgConn, sql string, params [][]byte, op string, enc *schema.RowEncoder) error {
	qctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rr := pgc.ExecParams(qctx, sql, params, nil, nil, nil)
	var failed error
	for rr.NextRow() {
		if err := r.b.add(op, enc, rr.Values()); err != nil {
			failed = err
			cancel() // stop the server sending the rest
			break
		}
	}
	_, err := rr.Close()
	if failed != nil {
		return failed
	}
	if err != nil {
		return fmt.Errorf("catchup: query %s: %w", r.e.Name, err)
	}
	return nil
}

// begin opens the REPEATABLE READ READ ONLY transaction and takes its
// snapshot. If, when the snapshot was taken, some commits were waiting for
// their synchronous standby (written and perhaps already published by the
// ingest, yet invisible), it rolls back, waits until those commits are
// visible and takes the snapshot once more. Commits that start waiting after
// the first snapshot wrote their commit record after the catch-up began, so
// they are past MinLSN and reach the client through the live stream; waiting
// only for the first set keeps a busy synchronous primary from starving the
// catch-up.
func (r *run) begin(ctx context.Context, conn *pgxpool.Conn) (pgx.Tx, snapshotInfo, error) {
	for retaken := false; ; retaken = true {
		tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
		if err != nil {
			return nil, snapshotInfo{}, fmt.Errorf("catchup: begin: %w", err)
		}
		var (
			s                      snapshotInfo
			xmin, xmax, u, horizon string
			inRecovery             bool
			waiters                []string
		)
		err = tx.QueryRow(ctx, snapshotSQL).Scan(&xmin, &xmax, &s.snapshot, &inRecovery, &u, &waiters, &horizon)
		if err == nil {
			s.recovery = inRecovery
			err = parseSnapshot(&s, xmin, xmax, u, horizon)
		}
		if err != nil {
			_ = tx.Rollback(context.Background())
			return nil, snapshotInfo{}, fmt.Errorf("catchup: take snapshot: %w", err)
		}
		if len(waiters) == 0 || retaken {
			return tx, s, nil
		}
		_ = tx.Rollback(ctx)
		r.c.m.snapshotRetakes.Inc()
		if err := r.waitSyncCommits(ctx, conn, waiters); err != nil {
			return nil, snapshotInfo{}, err
		}
	}
}

// waitSyncCommits waits until none of the transactions xids (32-bit, as
// pg_stat_activity.backend_xid shows them) still waits for synchronous
// replication, for at most Config.ReplicaWaitTimeout.
func (r *run) waitSyncCommits(ctx context.Context, conn *pgxpool.Conn, xids []string) error {
	c := r.c
	wctx, cancel := context.WithTimeout(ctx, c.cfg.ReplicaWaitTimeout)
	defer cancel()
	var err error
	delay := 200 * time.Microsecond
	for err == nil {
		var n int
		err = conn.QueryRow(wctx, `SELECT count(*) FROM pg_catalog.pg_stat_activity a
			WHERE a.backend_xid::text = ANY($1) AND a.wait_event_type = 'IPC' AND a.wait_event = 'SyncRep'`, xids).Scan(&n)
		if err != nil || n == 0 {
			break
		}
		t := time.NewTimer(delay)
		select {
		case <-wctx.Done():
			t.Stop()
			err = wctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, c.cfg.ReplicaPollInterval)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && wctx.Err() != nil {
		c.m.replicaLag.Inc()
		return fmt.Errorf("%w: commits still wait for their synchronous standby after %v: %w",
			ErrReplicaLag, c.cfg.ReplicaWaitTimeout, context.DeadlineExceeded)
	}
	return fmt.Errorf("catchup: wait for synchronous commits: %w", err)
}

func parseSnapshot(s *snapshotInfo, xmin, xmax, u, horizon string) error {
	var err error
	if s.xmin, err = schema.ParseXID8(xmin); err != nil {
		return err
	}
	if s.xmax, err = schema.ParseXID8(xmax); err != nil {
		return err
	}
	if s.u, err = schema.ParseLSN(u); err != nil {
		return err
	}
	// pg_snapshot's text form is xmin:xmax:xip,xip,...
	if parts := strings.SplitN(s.snapshot, ":", 3); len(parts) == 3 && parts[2] != "" {
		for _, x := range strings.Split(parts[2], ",") {
			v, err := schema.ParseXID8(x)
			if err != nil {
				return fmt.Errorf("snapshot %q: %w", s.snapshot, err)
			}
			s.xip = append(s.xip, v)
		}
	}
	s.horizon, err = schema.ParseXID8(horizon)
	return err
}

// waitReplay waits until the replica has replayed up to MinLSN (rule 3),
// polling pg_last_wal_replay_lsn() with a short, growing interval, for at
// most Config.ReplicaWaitTimeout. A server that is not in recovery (a
// promoted replica) needs no wait.
func (r *run) waitReplay(ctx context.Context, conn *pgxpool.Conn) error {
	c := r.c
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, c.cfg.ReplicaWaitTimeout)
	defer cancel()
	delay := 500 * time.Microsecond
	var last string
	for {
		var (
			recovery bool
			replay   *string
		)
		err := conn.QueryRow(wctx, "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_last_wal_replay_lsn()::text").Scan(&recovery, &replay)
		if err != nil {
			if ctx.Err() == nil && wctx.Err() != nil {
				return r.lagError(last)
			}
			return fmt.Errorf("catchup: read replay position: %w", err)
		}
		if !recovery {
			return nil
		}
		if replay != nil {
			last = *replay
			lsn, err := schema.ParseLSN(*replay)
			if err != nil {
				return fmt.Errorf("catchup: read replay position: %w", err)
			}
			if lsn >= r.req.MinLSN {
				c.m.replicaWait.Observe(time.Since(start).Seconds())
				return nil
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-wctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.lagError(last)
		case <-t.C:
		}
		delay = min(2*delay, c.cfg.ReplicaPollInterval)
	}
}

func (r *run) lagError(last string) error {
	r.c.m.replicaLag.Inc()
	if last == "" {
		last = "unknown"
	}
	return fmt.Errorf("%w: replayed up to %s, need %s within %v: %w",
		ErrReplicaLag, last, r.req.MinLSN, r.c.cfg.ReplicaWaitTimeout, context.DeadlineExceeded)
}

// batcher collects encoded operations into bounded batches for emit. The
// encoded bytes of a batch live in one buffer that is reused once emit
// returns.
type batcher struct {
	maxRows, maxBytes int
	emit              func([]schema.Op) error

	pending []pendingOp
	ops     []schema.Op
	buf     []byte

	rows, bytes int // totals handed to emit
}

type pendingOp struct {
	op         string
	start, end int
}

func (b *batcher) add(op string, enc *schema.RowEncoder, vals [][]byte) error {
	start := len(b.buf)
	buf, err := enc.AppendRow(b.buf, vals)
	if err != nil {
		return fmt.Errorf("catchup: encode: %w", err)
	}
	b.buf = buf
	b.pending = append(b.pending, pendingOp{op: op, start: start, end: len(buf)})
	if len(b.pending) >= b.maxRows || len(b.buf) >= b.maxBytes {
		return b.flush()
	}
	return nil
}

// reset drops operations collected but not yet emitted (by a failed
// attempt).
func (b *batcher) reset() {
	b.pending, b.buf = b.pending[:0], b.buf[:0]
}

func (b *batcher) flush() error {
	if len(b.pending) == 0 {
		return nil
	}
	b.ops = b.ops[:0]
	for _, p := range b.pending {
		data := b.buf[p.start:p.end:p.end]
		o := schema.Op{Op: p.op}
		if p.op == schema.OpDelete {
			o.Key = data
		} else {
			o.Row = data
		}
		b.ops = append(b.ops, o)
	}
	n, size := len(b.pending), len(b.buf)
	b.pending, b.buf = b.pending[:0], b.buf[:0]
	if err := b.emit(b.ops); err != nil {
		return err
	}
	b.rows += n
	b.bytes += size
	return nil
}

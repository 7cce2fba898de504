// Package catchup is Ripple's query side: it catches a client's
// subscription to one (table, organisation) up from PostgreSQL, with a full
// snapshot or a resume by cursor, on the region's read replica or on the
// primary (BRIEF rules 3, 5, 6 and 10).
//
// # Use
//
//	c, err := catchup.New(ctx, catchup.Config{ReplicaURL: url})
//	defer c.Close()
//	res, err := c.Run(ctx, catchup.Request{
//		Table: "todos", Org: "acme",
//		Columns: nil,             // every column; a list always gets the primary key
//		Cursor:  cursor,          // nil: full snapshot
//		MinLSN:  max(d, applied), // replica replay must reach it first
//		Begin:   func(r catchup.Result) error { /* snapshot_begin with r.Mode */ return nil },
//	}, func(ops []schema.Op) error { /* send one bounded batch */ return nil })
//	// res.Mode, res.U (upper bound LSN), res.Cursor (next resume cursor)
//
// Live rows for a subscription with a column list go through the same
// Projection (c.Project or NewProjection; Apply, AppendApply, ApplyOp): an
// ingest row projected by it is byte for byte what a snapshot with that
// column list sends.
//
// # What a catch-up does
//
// Every Run uses one pooled connection (at most Config.MaxConns at once)
// with schema's session settings, so text forms match the ingest's.
//
//  1. On a replica with a MinLSN, it polls pg_last_wal_replay_lsn() until
//     replay reaches MinLSN, for at most Config.ReplicaWaitTimeout; then
//     ErrReplicaLag (wrapping context.DeadlineExceeded). So a snapshot never
//     shows data older than the live stream's barrier or than what the client
//     already applied.
//  2. It opens one REPEATABLE READ READ ONLY transaction. Its first statement
//     takes the snapshot and, after it, reads the upper bound U
//     (pg_current_wal_insert_lsn() on a primary; on a standby the larger of
//     pg_last_wal_receive_lsn() and pg_last_wal_replay_lsn()), the cursor
//     (pg_snapshot_xmin of the snapshot), the tombstone horizon
//     (ripple.horizon) and which sessions wait for their synchronous
//     standby (pg_stat_activity wait event IPC/SyncRep): their commits are
//     written, maybe already published by the ingest, yet invisible. If
//     there are any it rolls back, waits until those commits are visible (at
//     most Config.ReplicaWaitTimeout, else ErrReplicaLag) and takes the
//     snapshot again, once. (pg_xact_status cannot tell: it asks the proc
//     array first and says "in progress" for them, and the newest of them is
//     not even in pg_snapshot_xip. Seeing other roles' wait events needs
//     superuser or pg_read_all_stats.)
//  3. Full snapshot (no cursor, or a cursor below the horizon, rule 6):
//     SELECT of the projected columns in attribute order WHERE root key =
//     org, as insert operations. Resume: tombstones with xid >= cursor whose
//     key has no live row in the organisation written by the same or a later
//     transaction, as delete operations keyed by the primary key, then the
//     rows with ripple_xid >= cursor as insert operations (the index on
//     (root key, ripple_xid) serves both row queries).
//  4. Rows are read one at a time (pgconn, text format) and encoded with the
//     one codec (schema.Types.RowEncoder) straight into a batch buffer;
//     emit gets a batch at Config.BatchRows operations or Config.BatchBytes
//     bytes. Memory is bounded by one batch whatever the table size.
//
// # Lifecycle
//
// New validates the Config and builds the pool without connecting; Close
// closes the pool and unregisters the metrics. The registry of sync tables
// (schema.LoadRegistry, every table at once) and the database's types are
// loaded on first use and again when a table is not found (Table, Run), on
// Reload (call it after a schema_change resync) and after a catch-up failed
// because the table changed under it; concurrent misses share one reload. A
// registered table whose relation no longer exists is unknown; a database
// without Ripple's schema has no sync tables.
//
// # Concurrency
//
// A Catchup is safe for concurrent use. Each Run is owned by its calling
// goroutine: emit and Begin are called on it, never concurrently. The slice
// handed to emit, and the bytes its operations point into, are reused once
// emit returns. Projections are immutable.
//
// # Invariants
//
//   - The operations of one Run, applied in order, turn the client's state
//     into the snapshot's state of the organisation: a full snapshot
//     replaces it, a resume applies on top (deletes come before inserts).
//   - Cursor = the snapshot's xmin: every transaction not visible to the
//     snapshot has an id >= Cursor (rule 5), so a resume from it misses
//     nothing; it may resend rows (the cursor is a lower bound).
//   - A cursor below the horizon gets Mode "full", never a silent gap.
//   - On a replica a recovery conflict (SQLSTATE 40001, 40P01) runs the
//     catch-up again, up to Config.MaxAttempts in all, in the same mode and
//     without a second Begin. A full snapshot that had already emitted rows
//     also sends, first, deletes for tombstones since the failed attempt's
//     cursor, so rows deleted in between do not linger. If the horizon
//     passed a resume's cursor in between, Run returns ErrModeChanged and the
//     caller starts again.
//   - Row bytes equal the ingest's for the same row; Projection.Apply of an
//     ingest row equals the snapshot's encoding with the same column list.
//
// # Errors
//
// schema.ErrUnknownTable, ErrBadColumns, ErrBadOrg (org not a valid root
// key value), ErrBadCursor (a cursor beyond the primary's next xid),
// ErrReplicaLag (replica replay, or a synchronous standby, too slow: retry
// later), ErrModeChanged (start again), ErrBadConfig.
package catchup

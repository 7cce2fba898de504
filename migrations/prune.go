package migrations

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// PruneResult reports what Prune did.
type PruneResult struct {
	// Deleted is the number of tombstones deleted.
	Deleted int64
	// Horizon is the stored horizon after the prune (it never goes down): a
	// resume cursor below it cannot be served.
	Horizon uint64
	// Cutoff is the deletion time below which tombstones were deleted.
	Cutoff time.Time
}

// Prune deletes tombstones whose deleted_at is older than retention and, in
// the same transaction, raises the stored horizon to one more than the
// largest xid it deleted. Concurrent Prune calls are serialised by a lock on
// the horizon row. A retention of 0 deletes every committed tombstone.
func Prune(ctx context.Context, conn *pgx.Conn, retention time.Duration) (PruneResult, error) {
	if retention < 0 {
		return PruneResult{}, fmt.Errorf("%w: %v", ErrBadRetention, retention)
	}
	var res PruneResult
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT 1 FROM ripple.horizon FOR UPDATE"); err != nil {
			return fmt.Errorf("migrations: lock horizon: %w", err)
		}
		// clock_timestamp, not now(): a tombstone written by a transaction
		// that committed just before this one started has deleted_at <= now()
		// of this one, possibly equal to it.
		var horizon string
		err := tx.QueryRow(ctx, `
WITH cutoff AS (
    SELECT clock_timestamp() - make_interval(secs => $1::float8 / 1e6) AS at
), deleted AS (
    DELETE FROM ripple.tombstones WHERE deleted_at <= (SELECT at FROM cutoff) RETURNING xid
), top AS (
    SELECT count(*) AS n, max(xid::text::numeric) AS maxxid FROM deleted
), upd AS (
    UPDATE ripple.horizon h
    SET xid = CASE WHEN top.maxxid IS NULL OR h.xid::text::numeric > top.maxxid THEN h.xid
                   ELSE (top.maxxid + 1)::text::xid8 END,
        pruned_at = now()
    FROM top
    RETURNING h.xid::text AS xid
)
SELECT top.n, upd.xid, (SELECT at FROM cutoff) FROM top, upd`,
			retention.Microseconds()).Scan(&res.Deleted, &horizon, &res.Cutoff)
		if err != nil {
			return fmt.Errorf("migrations: prune tombstones: %w", err)
		}
		res.Horizon, err = strconv.ParseUint(horizon, 10, 64)
		if err != nil {
			return fmt.Errorf("migrations: bad horizon %q: %w", horizon, err)
		}
		return nil
	})
	if err != nil {
		return PruneResult{}, err
	}
	return res, nil
}

// Horizon returns the stored pruned horizon: every tombstone with an xid
// below it may have been pruned, so a resume cursor below it cannot be
// served (the client must resynchronise in full). 0 means nothing was ever
// pruned. Run it in the catch-up's own transaction to compare it with the
// same snapshot.
func Horizon(ctx context.Context, q Querier) (xid uint64, err error) {
	var s string
	if err := q.QueryRow(ctx, "SELECT xid::text FROM ripple.horizon").Scan(&s); err != nil {
		return 0, fmt.Errorf("migrations: read horizon: %w", err)
	}
	xid, err = strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("migrations: bad horizon %q: %w", s, err)
	}
	return xid, nil
}

// CheckCursor returns ErrCursorTooOld when a resume cursor lies below the
// pruned horizon, nil when tombstones from the cursor on are all still
// stored.
func CheckCursor(ctx context.Context, q Querier, cursor uint64) error {
	h, err := Horizon(ctx, q)
	if err != nil {
		return err
	}
	if cursor < h {
		return fmt.Errorf("%w: cursor %d, horizon %d", ErrCursorTooOld, cursor, h)
	}
	return nil
}

// pruneMutationsBatch is how many mutation records one transaction of
// PruneMutations deletes: every deleted record is replicated (the ingest
// decodes it), so a large backlog goes in several small transactions.
const pruneMutationsBatch = 10000

// PruneMutations deletes the records of ripple.mutations created more than
// retention ago, pruneMutationsBatch per transaction, and returns how many it
// deleted. A record only answers a retry of its mutation: a client that
// sends a mutation again after its record was pruned gets the final
// rejection mutation_expired (its outcome is unknown; synced data shows its
// effect, if it had one) and is never applied twice, because the client's
// row of ripple.clients keeps its last mutation id. A retention of 0 deletes
// every record.
func PruneMutations(ctx context.Context, conn *pgx.Conn, retention time.Duration) (int64, error) {
	if retention < 0 {
		return 0, fmt.Errorf("%w: %v", ErrBadRetention, retention)
	}
	var cutoff time.Time
	if err := conn.QueryRow(ctx, "SELECT clock_timestamp() - make_interval(secs => $1::float8 / 1e6)",
		retention.Microseconds()).Scan(&cutoff); err != nil {
		return 0, fmt.Errorf("migrations: prune mutations: %w", err)
	}
	var total int64
	for {
		tag, err := conn.Exec(ctx, `DELETE FROM ripple.mutations WHERE ctid = ANY(ARRAY(
			SELECT ctid FROM ripple.mutations WHERE created_at <= $1 LIMIT $2))`, cutoff, pruneMutationsBatch)
		if err != nil {
			return total, fmt.Errorf("migrations: prune mutations: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneMutationsBatch {
			return total, nil
		}
	}
}

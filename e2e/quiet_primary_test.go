package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// TestQuietPrimarySubscribe: with catch-up on the primary (no replica), a
// subscription on a quiet database must become ready promptly. The
// catch-up's read-only transaction can write WAL (heap pruning) that nothing
// flushes, so its U = pg_current_wal_insert_lsn() lies beyond the flush
// position; the walsender cannot decode past the flush position, and the
// ingest's D would reach U only when the bgwriter logs its next running-xacts
// record (~15 s later) unless catch-up flushes past U (catchup.flushPast).
func TestQuietPrimarySubscribe(t *testing.T) {
	tp := Start(t, Options{NoReplica: true})
	c := Dial(t, tp.Gateways[0].URL, Token(t, schema.Claims{Orgs: []string{"acme"}}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Subscribe(ctx, "items", "acme")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.WaitReady(ctx); err != nil {
		var ins, fl string
		_ = tp.Pool.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text`).Scan(&ins, &fl)
		t.Fatalf("not ready after %v: %v (insert lsn %s, flush lsn %s, ingest D %s)", time.Since(t0), err, ins, fl, tp.Ingest.State().D)
	}
}

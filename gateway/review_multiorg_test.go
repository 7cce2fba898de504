package gateway

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// Review (rules 4, 7). A connection following two organisations gets one
// commit frame per transaction, held back (hub.finish: hc.deferred) until
// "the stream moved past" it. hub.onTick once flushed held commit frames on
// every tick, also between the last part of a transaction's first
// organisation and the first part of its second one (the ingest publishes
// them one after another; they reach the hub separately). The commit frame
// then goes out after the first organisation's parts only; the second
// organisation's parts follow it, and hub.finish drops their commit (its
// LSN is not above hc.lastLSN). A client applies parts on their
// transaction's commit frame, so the second organisation's part of that
// transaction would never be applied: an update lost (until a resync).
// Each transaction inserts a row of its own in the second organisation, so
// every lost part leaves a row missing from the client's view.
func TestReviewMultiOrgPartsAfterCommit(t *testing.T) {
	// Ticks every 10ms (a quarter of BarrierTimeout), so that one falls
	// between the two organisations' parts of some transaction; the second
	// organisation's part is some 25 KB (400 rows), so it reaches the hub a
	// little after the first one.
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.BarrierTimeout = 40 * time.Millisecond }})
	ctx := context.Background()
	e.exec("INSERT INTO accounts (org, id, balance) VALUES ('a1', 1, 0)")
	e.exec("INSERT INTO accounts (org, id, balance) SELECT 'b1', g, 0 FROM generate_series(1, 400) g")
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"a1", "b1"}}))
	c.subscribe("a", "accounts", "a1")
	c.subscribe("b", "accounts", "b1")
	c.waitReady("a", 1)
	c.waitReady("b", 1)

	const n = 600
	for i := 1; i <= n; i++ {
		tx, err := e.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, org := range []string{"a1", "b1"} {
			if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = $1 WHERE org = $2 AND id <= 400", i, org); err != nil {
				t.Fatal(err)
			}
		}
		// A row of its own per transaction: a lost part shows as a row
		// missing for good.
		if _, err := tx.Exec(ctx, "INSERT INTO accounts (org, id, balance) VALUES ('b1', $1, $2)", 100000+i, i); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var last schema.LSN
	waitFor(t, 60*time.Second, "every transaction committed to the client", func() bool {
		commits := 0
		for _, f := range c.frames() {
			if f.Type == schema.FrameCommit && f.ID == "" {
				commits++
				last = f.LSN
			}
		}
		return commits >= n
	})
	committed := map[schema.XID8]bool{}
	late := 0
	for _, f := range c.frames() {
		switch {
		case f.Type == schema.FrameCommit && f.ID == "":
			committed[f.XID] = true
		case f.Type == schema.FramePart && f.ID == "" && committed[f.XID]:
			if late < 5 {
				t.Errorf("part of xid %s (org %s) after that transaction's commit frame", f.XID, f.Org)
			}
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d parts arrived after their transaction's commit frame (never applied); last commit %s", late, last)
	}
	want := e.tableRows("accounts", "b1")
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Equal(c.viewOf("b"), want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.viewOf("b"); !slices.Equal(got, want) {
		missing := 0
		for _, r := range want {
			if !slices.Contains(got, r) {
				missing++
			}
		}
		t.Errorf("org b1 view never converges: %d of %d rows missing or stale", missing, len(want))
	}
}

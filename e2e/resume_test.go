package e2e

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/client"
	"github.com/ripple-sync/ripple/schema"
)

// versionCheck tracks, per row id, the versions (items.v) a subscription
// showed: they must never go down (a state older than one already shown),
// and with strict set each change must be exactly the next version.
type versionCheck struct {
	name   string
	v      *violations
	strict bool
	mu     sync.Mutex
	max    map[string]int64
	first  schema.LSN // LSN of the first state shown
	seen   int
}

func newVersionCheck(name string, v *violations, strict bool) *versionCheck {
	return &versionCheck{name: name, v: v, strict: strict, max: map[string]int64{}}
}

func (c *versionCheck) onChange(ch client.Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.first == 0 {
		c.first = ch.LSN
	}
	if ch.Row == nil {
		c.v.add("%s: unexpected delete of %v", c.name, ch.Key)
		return
	}
	id := ch.Row["id"].(string)
	ver := num(ch.Row["v"])
	prev, ok := c.max[id]
	switch {
	case ok && ver < prev:
		c.v.add("%s: row %s went back from v%d to v%d at %s", c.name, id, prev, ver, ch.LSN)
	case c.strict && ch.LSN != c.first && ver != prev+1:
		c.v.add("%s: row %s jumped from v%d to v%d at %s (lost versions)", c.name, id, prev, ver, ch.LSN)
	}
	c.max[id] = max(prev, ver)
	c.seen++
}

// stats returns the LSN of the first state shown and the changes seen.
func (c *versionCheck) stats() (schema.LSN, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.first, c.seen
}

// sampleView checks the whole view against the versions already shown.
func (c *versionCheck) sampleView(s *client.Subscription) {
	rows := s.Rows()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range rows {
		id := r["id"].(string)
		if ver := num(r["v"]); ver < c.max[id] {
			c.v.add("%s: view shows row %s at v%d after v%d", c.name, id, ver, c.max[id])
		}
	}
}

// bump updates one random item of org to its next version.
func (tp *Topology) bump(org string, ids int) func(ctx context.Context, rng *rand.Rand) error {
	return func(ctx context.Context, rng *rand.Rand) error {
		_, err := tp.Pool.Exec(ctx, `UPDATE items SET v = v + 1 WHERE org = $1 AND id = $2`, org, 1+rng.IntN(ids))
		return err
	}
}

// TestReplicaReplayPaused: with the gateway's catch-up on a replica whose
// replay is paused while commits flow, a new subscription waits (replica_lag)
// and a resuming client keeps its data; nobody shows a state older than one
// it showed; after ResumeReplay everyone converges.
func TestReplicaReplayPaused(t *testing.T) {
	tp := Start(t, Options{Catchup: func(c *catchup.Config) { c.ReplicaWaitTimeout = 300 * time.Millisecond }})
	gw := tp.Gateways[0]
	tp.Exec(`INSERT INTO items (org, id, v) SELECT 'acme', g, 1 FROM generate_series(1, 30) g`)
	tok := Token(t, schema.Claims{Orgs: []string{"acme"}})
	v := &violations{}
	checks := map[string]*versionCheck{}
	sub := func(name, url string, wait bool) *client.Subscription {
		ck := newVersionCheck(name, v, false)
		checks[name] = ck
		c := Dial(t, url, tok)
		if wait {
			return Subscribe(t, c, "items", "acme", client.OnChangeFunc(ck.onChange))
		}
		s, err := c.Subscribe(context.Background(), "items", "acme", client.OnChangeFunc(ck.onChange))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	live := sub("live", gw.URL, true)
	proxy := NewProxy(t, gw)
	resumer := sub("resumer", proxy.URL(), true)
	w := startWorkload(t, 2, 2*time.Millisecond, tp.bump("acme", 30))
	w.waitCommits(t, 50)

	tp.Replica.PauseReplay(t)
	w.waitCommits(t, 50)
	lagBefore := gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"result": "replica_lag"})
	// A state the stream already passed: the new subscription must not
	// show anything older.
	liveLSN := live.LSN()
	ckLive := checks["live"]
	ckLive.mu.Lock()
	floor := map[string]int64{}
	for k, x := range ckLive.max {
		floor[k] = x
	}
	ckLive.mu.Unlock()
	late := sub("late", gw.URL, false)
	proxy.Cut()
	resumerLSN := resumer.LSN()
	waitFor(t, 15*time.Second, "replica_lag while replay is paused", func() bool {
		return gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"result": "replica_lag"}) >= lagBefore+2
	})
	w.waitCommits(t, 30)
	if late.Ready() {
		t.Fatalf("late subscription became ready while the replica is paused behind the stream")
	}
	if resumer.LSN() < resumerLSN {
		t.Fatalf("resumer went back from %s to %s", resumerLSN, resumer.LSN())
	}
	if live.LSN() <= liveLSN {
		t.Fatalf("live subscription stopped receiving while replay was paused (lsn %s)", live.LSN())
	}
	checks["live"].sampleView(live)
	checks["resumer"].sampleView(resumer)
	tp.Replica.ResumeReplay(t)
	w.waitCommits(t, 30)
	w.Stop(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := late.WaitReady(ctx); err != nil {
		t.Fatalf("late subscription after resume: %v", err)
	}
	// OnChange callbacks run after the view changed: wait until the late
	// subscription's callback has seen its initial rows.
	waitFor(t, 15*time.Second, "late subscription's initial rows reach OnChange", func() bool {
		_, seen := checks["late"].stats()
		return seen >= 30
	})
	if first, _ := checks["late"].stats(); first < liveLSN {
		t.Errorf("late subscription's first state %s is older than the stream at subscribe (%s)", first, liveLSN)
	}
	ckLate := checks["late"]
	ckLate.mu.Lock()
	for k, x := range floor {
		if ckLate.max[k] < x {
			v.add("late: first state has row %s at v%d, older than v%d already streamed", k, ckLate.max[k], x)
		}
	}
	ckLate.mu.Unlock()
	for name, s := range map[string]*client.Subscription{"live": live, "resumer": resumer, "late": late} {
		tp.WaitConverged(s, 15*time.Second)
		checks[name].sampleView(s)
	}
	v.check(t)
}

// TestSuperCluster: the ingest publishes on cluster A, the gateway is
// attached to cluster B; clients lose nothing: every committed version of
// every row arrives, in order, and the final views equal the table.
func TestSuperCluster(t *testing.T) {
	tp := Start(t, Options{SuperCluster: true})
	gw := tp.Gateways[0]
	tok := Token(t, schema.Claims{Orgs: []string{"acme"}})
	v := &violations{}
	early := newVersionCheck("early", v, true)
	c1 := Dial(t, gw.URL, tok)
	s1 := Subscribe(t, c1, "items", "acme", client.OnChangeFunc(early.onChange))
	// One writer: each commit inserts a row at v1 or moves one to the next
	// version, so versions per row are consecutive.
	w := startWorkload(t, 1, time.Millisecond, func(ctx context.Context, rng *rand.Rand) error {
		return pgx.BeginFunc(ctx, tp.Pool, func(tx pgx.Tx) error {
			for _, id := range rng.Perm(40)[:1+rng.IntN(3)] { // distinct rows
				if _, err := tx.Exec(ctx, `INSERT INTO items (org, id, v) VALUES ('acme', $1, 1)
					ON CONFLICT (org, id) DO UPDATE SET v = items.v + 1`, 1+id); err != nil {
					return err
				}
			}
			return nil
		})
	})
	w.waitCommits(t, 150)
	mid := newVersionCheck("mid", v, true)
	c2 := Dial(t, gw.URL, tok)
	s2 := Subscribe(t, c2, "items", "acme", client.OnChangeFunc(mid.onChange))
	w.waitCommits(t, 150)
	w.Stop(t)
	tp.WaitConverged(s1, 15*time.Second)
	tp.WaitConverged(s2, 15*time.Second)
	v.check(t)
	if _, seen := early.stats(); seen < 150 {
		t.Fatalf("early client saw only %d changes", seen)
	}
}

// TestRule5Interleaving: O opens (with an xid); T inserts; O commits; the
// client's snapshot has T in progress (cursor <= T's xid); T commits while
// the client is offline; the client resumes by cursor and has T's row.
func TestRule5Interleaving(t *testing.T) {
	tp := Start(t, Options{})
	gw := tp.Gateways[0]
	ctx := context.Background()
	oConn := tp.PG.Connect(t, tp.DB)
	tConn := tp.PG.Connect(t, tp.DB)
	o, err := oConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var xidO, xidT uint64
	if err := o.QueryRow(ctx, `INSERT INTO items (org, id, title) VALUES ('acme', 1, 'O') RETURNING pg_current_xact_id()::text::int8`).Scan(&xidO); err != nil {
		t.Fatal(err)
	}
	tx, err := tConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.QueryRow(ctx, `INSERT INTO items (org, id, title) VALUES ('acme', 2, 'T') RETURNING pg_current_xact_id()::text::int8`).Scan(&xidT); err != nil {
		t.Fatal(err)
	}
	if xidT <= xidO {
		t.Fatalf("xid T %d not after O %d", xidT, xidO)
	}
	if err := o.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	proxy := NewProxy(t, gw)
	c := Dial(t, proxy.URL(), Token(t, schema.Claims{Orgs: []string{"acme"}}))
	s := Subscribe(t, c, "items", "acme")
	if _, ok := s.Get("acme", "1"); !ok {
		t.Fatalf("snapshot lacks O's row: %v", s.Rows())
	}
	if _, ok := s.Get("acme", "2"); ok {
		t.Fatalf("snapshot has T's row before T committed")
	}
	if uint64(s.Cursor()) > xidT {
		t.Fatalf("cursor %d passed the open transaction T %d", s.Cursor(), xidT)
	}
	resumes := gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"mode": "resume", "result": "ok"})
	fulls := gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"mode": "full"})
	proxy.Block()
	proxy.Cut()
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Let the commit pass the stream (and the replica) before the client
	// comes back, so it can only get T's row from the resume.
	tp.Replica.WaitReplayed(t, tp.PG.CurrentLSN(t))
	if _, ok := s.Get("acme", "2"); ok {
		t.Fatalf("offline client received T's row")
	}
	proxy.Unblock()
	waitFor(t, 15*time.Second, "T's row after resume", func() bool { _, ok := s.Get("acme", "2"); return ok })
	tp.WaitConverged(s, 5*time.Second)
	if got := gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"mode": "resume", "result": "ok"}); got <= resumes {
		t.Fatalf("no resume catch-up ran (resume runs %v)", got)
	}
	if got := gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"mode": "full"}); got != fulls {
		t.Fatalf("the client resynchronised in full (%v full runs, want %v)", got, fulls)
	}
}

// TestOfflineClientResume: a client offline while rows are inserted,
// updated and deleted resumes by cursor, receives only the changes (at most
// 1.1x the rows changed) and ends identical to the table.
func TestOfflineClientResume(t *testing.T) {
	tp := Start(t, Options{})
	gw := tp.Gateways[0]
	ctx := context.Background()
	var seedXID uint64
	if err := tp.Pool.QueryRow(ctx, `WITH ins AS (INSERT INTO items (org, id, v, title) SELECT 'acme', g, 1, 'seed' FROM generate_series(1, 1000) g)
		SELECT pg_current_xact_id()::text::int8`).Scan(&seedXID); err != nil {
		t.Fatal(err)
	}
	proxy := NewProxy(t, gw)
	c := Dial(t, proxy.URL(), Token(t, schema.Claims{Orgs: []string{"acme"}}))
	s := Subscribe(t, c, "items", "acme")
	tp.WaitConverged(s, 10*time.Second)
	// A checkpoint moves the cursor past the seed: a resume must not send
	// the 1,000 rows again.
	waitFor(t, 10*time.Second, "cursor past the seed", func() bool { return uint64(s.Cursor()) > seedXID })

	opsBefore := gw.Counter(t, "ripple_catchup_ops_total", nil)
	resumes := gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"mode": "resume", "result": "ok"})
	fulls := gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"mode": "full"})
	proxy.Block()
	proxy.Cut()
	const n = 50
	for i := 1; i <= n; i++ {
		tp.Exec(`INSERT INTO items (org, id, v, title) VALUES ('acme', $1, 1, 'new')`, 1000+i)
		tp.Exec(`UPDATE items SET v = v + 1, title = 'updated' WHERE org = 'acme' AND id = $1`, i)
		tp.Exec(`DELETE FROM items WHERE org = 'acme' AND id = $1`, 100+i)
	}
	tp.Replica.WaitReplayed(t, tp.PG.CurrentLSN(t))
	if got := len(s.Rows()); got != 1000 {
		t.Fatalf("offline view changed: %d rows", got)
	}
	proxy.Unblock()
	tp.WaitConverged(s, 15*time.Second)
	waitFor(t, 5*time.Second, "resume catch-up counted", func() bool {
		return gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"mode": "resume", "result": "ok"}) > resumes
	})
	if got := gw.Counter(t, "ripple_catchup_runs_total", map[string]string{"mode": "full"}); got != fulls {
		t.Fatalf("the client resynchronised in full (%v full runs, want %v)", got, fulls)
	}
	sent := gw.Counter(t, "ripple_catchup_ops_total", nil) - opsBefore
	changed := float64(3 * n)
	t.Logf("rows changed %v, rows sent in the resume %v", changed, sent)
	if sent > 1.1*changed {
		t.Fatalf("resume sent %v rows for %v changed (more than 1.1x)", sent, changed)
	}
	if sent < changed {
		t.Fatalf("resume sent %v rows for %v changed: it cannot have carried every change", sent, changed)
	}
}

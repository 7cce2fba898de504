package catchup_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// TestReplica runs catch-ups on a streaming replica. max_standby_streaming_delay
// is 0 so that a conflicting lock cancels catch-up queries at once.
func TestReplica(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.WithName("catchup"), testenv.WithSetting("max_standby_streaming_delay", "0"))
	replica := pg.StartReplica(t)
	t.Run("waits for replay to reach MinLSN, with a bound", func(t *testing.T) { testReplicaWait(t, pg, replica) })
	t.Run("a recovery conflict in a resume is retried", func(t *testing.T) { testConflictResume(t, pg, replica) })
	t.Run("a recovery conflict mid-snapshot is retried without leaving deleted rows", func(t *testing.T) {
		testConflictFull(t, pg, replica)
	})
	t.Run("a horizon that passes the cursor before a retry asks to start again", func(t *testing.T) {
		testConflictModeChanged(t, pg, replica)
	})
}

func replicaURL(replica *testenv.Postgres, db, app string) string {
	return replica.URL(db) + "&application_name=" + app
}

func testReplicaWait(t *testing.T, pg, replica *testenv.Postgres) {
	f := newFixture(t, pg)
	ctx := t.Context()
	f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES (1, 'acme', 'one')")
	l1 := f.insertLSN(t)
	replica.WaitCaughtUp(t)

	short := newCatchup(t, catchup.Config{ReplicaURL: replicaURL(replica, f.db, "short"), ReplicaWaitTimeout: 300 * time.Millisecond})
	res, ops, err := collect(ctx, short, catchup.Request{Table: "todos", Org: "acme", MinLSN: l1})
	if err != nil || len(ops) != 1 || res.U < l1 {
		t.Fatalf("replica caught up: %+v, %v, %v", res, ops, err)
	}

	replica.PauseReplay(t)
	f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES (2, 'acme', 'two')")
	l2 := f.insertLSN(t)

	start := time.Now()
	_, ops, err = collect(ctx, short, catchup.Request{Table: "todos", Org: "acme", MinLSN: l2})
	if !errors.Is(err, catchup.ErrReplicaLag) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("paused replay: err = %v, want ErrReplicaLag wrapping DeadlineExceeded", err)
	}
	if len(ops) != 0 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("ErrReplicaLag after %v with %d ops", time.Since(start), len(ops))
	}

	// A catch-up with a longer bound waits, and succeeds once replay resumes.
	long := newCatchup(t, catchup.Config{ReplicaURL: replicaURL(replica, f.db, "long"), ReplicaWaitTimeout: 30 * time.Second})
	type outcome struct {
		res catchup.Result
		ops []op
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, ops, err := collect(ctx, long, catchup.Request{Table: "todos", Org: "acme", MinLSN: l2})
		done <- outcome{res, ops, err}
	}()
	waitFor(t, "the catch-up to poll the replica", func() bool {
		return countSessions(t, replica, f.db, "long") > 0
	})
	select {
	case o := <-done:
		t.Fatalf("catch-up finished while replay was paused: %+v %v", o.res, o.err)
	default:
	}
	replica.ResumeReplay(t)
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.res.U < l2 {
		t.Fatalf("U = %s below MinLSN %s", o.res.U, l2)
	}
	if got := (view{}).apply(t, o.res.Mode, o.ops); !reflect.DeepEqual(got, f.tableView(t, "acme")) {
		t.Fatalf("snapshot after the wait %v lacks what MinLSN promised", got)
	}
}

func countSessions(t *testing.T, pg *testenv.Postgres, db, app string) int {
	t.Helper()
	conn := connect(t, pg.URL(db))
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds, for at most 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval of a condition
	}
}

// lockOnPrimary takes and releases an ACCESS EXCLUSIVE lock on todos on the
// primary: replaying it on the replica conflicts with any catch-up holding
// the table. It returns the LSN after the commit.
func lockOnPrimary(t *testing.T, f *fixture) schema.LSN {
	t.Helper()
	err := pgx.BeginFunc(context.Background(), f.conn, func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), "LOCK TABLE todos IN ACCESS EXCLUSIVE MODE")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return f.insertLSN(t)
}

func testConflictResume(t *testing.T, pg, replica *testenv.Postgres) {
	f := newFixture(t, pg)
	ctx := t.Context()
	f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES (1, 'acme', 'a'), (2, 'acme', 'b'), (3, 'acme', 'c')")
	replica.WaitCaughtUp(t)
	c := newCatchup(t, catchup.Config{ReplicaURL: replicaURL(replica, f.db, "conflict"), BatchRows: 1})
	min := f.insertLSN(t)
	res, ops, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme", MinLSN: min})
	if err != nil {
		t.Fatal(err)
	}
	v := view{}.apply(t, res.Mode, ops)
	f.exec(t, "DELETE FROM todos WHERE id = 3")
	f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES (4, 'acme', 'd')")
	min = f.insertLSN(t)

	var got []op
	calls := 0
	res2, err := c.Run(ctx, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(res.Cursor), MinLSN: min},
		func(batch []schema.Op) error {
			calls++
			if calls == 1 {
				// The first batch (a tombstone) is out; the transaction holds
				// its locks. A conflicting lock replayed now ends it.
				replica.WaitReplayed(t, lockOnPrimary(t, f).String())
			}
			for _, o := range batch {
				d := o.Row
				if o.Op == schema.OpDelete {
					d = o.Key
				}
				got = append(got, op{o.Op, string(d)})
			}
			return nil
		})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res2.Attempts != 2 {
		t.Fatalf("attempts = %d, want 2 (one cancelled by the recovery conflict)", res2.Attempts)
	}
	if res2.Mode != schema.SnapshotResume || res2.Rows != len(got) {
		t.Fatalf("result %+v with %d ops", res2, len(got))
	}
	if v = v.apply(t, res2.Mode, got); !reflect.DeepEqual(v, f.tableView(t, "acme")) {
		t.Fatalf("view after retried resume %v", v)
	}
}

func testConflictFull(t *testing.T, pg, replica *testenv.Postgres) {
	f := newFixture(t, pg)
	ctx := t.Context()
	// Enough rows that the result cannot sit in socket buffers: the
	// replica's backend is still executing when the conflict arrives.
	const n = 50000
	f.exec(t, fmt.Sprintf(`INSERT INTO todos (id, org_id, title) SELECT g, 'acme', repeat('t', 400) FROM generate_series(1, %d) g`, n))
	min := f.insertLSN(t)
	replica.WaitCaughtUp(t)
	c := newCatchup(t, catchup.Config{ReplicaURL: replicaURL(replica, f.db, "conflict-full"), BatchRows: 500})

	var got []op
	calls := 0
	res, err := c.Run(ctx, catchup.Request{Table: "todos", Org: "acme", MinLSN: min}, func(batch []schema.Op) error {
		calls++
		if calls == 1 {
			// Rows of the first batch go away on the primary, then a lock
			// conflicts with the running snapshot: the retry must delete
			// what this attempt already sent.
			f.exec(t, "DELETE FROM todos WHERE id <= 10")
			replica.WaitReplayed(t, lockOnPrimary(t, f).String())
		}
		for _, o := range batch {
			d := o.Row
			if o.Op == schema.OpDelete {
				d = o.Key
			}
			got = append(got, op{o.Op, string(d)})
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Attempts != 2 || res.Mode != schema.SnapshotFull {
		t.Fatalf("result %+v, want 2 attempts in full mode", res)
	}
	v := view{}.apply(t, res.Mode, got)
	if want := f.tableView(t, "acme"); len(v) != n-10 || !reflect.DeepEqual(v, want) {
		t.Fatalf("view after retried snapshot has %d rows, table %d", len(v), len(want))
	}
}

func testConflictModeChanged(t *testing.T, pg, replica *testenv.Postgres) {
	f := newFixture(t, pg)
	ctx := t.Context()
	f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES (1, 'acme', 'a'), (2, 'acme', 'b')")
	replica.WaitCaughtUp(t)
	c := newCatchup(t, catchup.Config{ReplicaURL: replicaURL(replica, f.db, "mode"), BatchRows: 1})
	res, _, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	f.exec(t, "DELETE FROM todos WHERE id = 2")
	min := f.insertLSN(t)
	var modes []string
	_, err = c.Run(ctx, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(res.Cursor), MinLSN: min,
		Begin: func(r catchup.Result) error { modes = append(modes, r.Mode); return nil }},
		func([]schema.Op) error {
			if len(modes) == 1 && modes[0] == schema.SnapshotResume {
				modes = append(modes, "emitted")
				// Prune everything: the horizon passes the cursor; then end
				// this attempt with a recovery conflict.
				if _, err := migrations.Prune(ctx, f.conn, 0); err != nil {
					t.Fatal(err)
				}
				replica.WaitReplayed(t, lockOnPrimary(t, f).String())
			}
			return nil
		})
	if !errors.Is(err, catchup.ErrModeChanged) {
		t.Fatalf("err = %v (modes %v), want ErrModeChanged", err, modes)
	}
	// Started again, the catch-up is a full snapshot.
	res2, ops, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(res.Cursor), MinLSN: f.insertLSN(t)})
	if err != nil || res2.Mode != schema.SnapshotFull || len(ops) != 1 {
		t.Fatalf("after ErrModeChanged: %+v, %v, %v", res2, ops, err)
	}
}

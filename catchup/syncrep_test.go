package catchup_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/testenv"
)

// TestSynchronousCommitNotYetVisible covers the last clause of rule 3: with
// synchronous replication a commit is in the commit log (and may already be
// decoded and published by the ingest) while it still waits for its standby
// and is invisible to new snapshots. A catch-up must not take a snapshot
// then: it takes it again until the commit is visible.
func TestSynchronousCommitNotYetVisible(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.WithName("syncrep"))
	f := newFixture(t, pg)
	ctx := t.Context()
	f.exec(t, "INSERT INTO todos (id, org_id, title) VALUES (1, 'acme', 'before')")
	reg := prometheus.NewRegistry()
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url, Registerer: reg})

	// A standby that never answers: synchronous commits wait forever.
	f.exec(t, "ALTER SYSTEM SET synchronous_standby_names = 'ghost'")
	f.exec(t, "SELECT pg_reload_conf()")
	t.Cleanup(func() {
		admin := connect(t, pg.URL("postgres"))
		_, _ = admin.Exec(context.Background(), "ALTER SYSTEM RESET synchronous_standby_names")
		_, _ = admin.Exec(context.Background(), "SELECT pg_reload_conf()")
	})
	writer := connect(t, f.url)
	committed := make(chan error, 1)
	go func() {
		_, err := writer.Exec(ctx, "INSERT INTO todos (id, org_id, title) VALUES (2, 'acme', 'sync')")
		committed <- err
	}()
	// The commit record is written and the commit log says committed, yet
	// the transaction stays in the proc array while it waits; pg_xact_status
	// reports it "in progress", so it cannot be used to tell.
	waitFor(t, "the insert to commit locally and wait for its standby", func() bool {
		var n int
		err := f.conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event = 'SyncRep' AND backend_xid IS NOT NULL`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	})

	// With a short bound the catch-up gives up with a clear error.
	short := newCatchup(t, catchup.Config{PrimaryURL: f.url, ReplicaWaitTimeout: 200 * time.Millisecond})
	if _, ops, err := collect(ctx, short, catchup.Request{Table: "todos", Org: "acme"}); !errors.Is(err, catchup.ErrReplicaLag) || len(ops) != 0 {
		t.Fatalf("bounded wait: %d ops, err %v, want ErrReplicaLag", len(ops), err)
	}

	type outcome struct {
		ops []op
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		_, ops, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme"})
		done <- outcome{ops, err}
	}()
	retakes := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "ripple_catchup_snapshot_retakes_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	waitFor(t, "the catch-up to drop a snapshot", func() bool {
		select {
		case o := <-done:
			t.Fatalf("catch-up finished while a committed transaction was invisible: %v %v", o.ops, o.err)
		default:
		}
		return retakes() >= 1
	})

	f.exec(t, "ALTER SYSTEM RESET synchronous_standby_names")
	f.exec(t, "SELECT pg_reload_conf()")
	if err := <-committed; err != nil {
		t.Fatal(err)
	}
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	if got, want := (view{}).apply(t, "full", o.ops), f.tableView(t, "acme"); !reflect.DeepEqual(got, want) || len(got) != 2 {
		t.Fatalf("snapshot %v, want %v", got, want)
	}
}

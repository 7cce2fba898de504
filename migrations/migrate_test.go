package migrations_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/migrations"
)

func TestMigrate(t *testing.T) {
	tests := []struct {
		name  string
		runs  int
		setup func(t *testing.T, conn *pgx.Conn) // between the first and the later runs
	}{
		{name: "once", runs: 1},
		{name: "twice", runs: 2},
		{name: "publication dropped in between", runs: 2, setup: func(t *testing.T, conn *pgx.Conn) {
			exec(t, conn, "DROP PUBLICATION ripple")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			conn, _ := newDB(t)
			if v, err := migrations.Version(ctx, conn); err != nil || v != 0 {
				t.Fatalf("Version before Migrate = %d, %v; want 0, nil", v, err)
			}
			var first string
			for i := 0; i < tt.runs; i++ {
				if i == 1 && tt.setup != nil {
					tt.setup(t, conn)
				}
				if err := migrations.Migrate(ctx, conn); err != nil {
					t.Fatalf("Migrate run %d: %v", i+1, err)
				}
				state := queryString(t, conn, rippleState)
				if i == 0 {
					first = state
				} else if state != first {
					t.Fatalf("state after run %d differs:\n%s\nwant:\n%s", i+1, state, first)
				}
			}
			v, err := migrations.Version(ctx, conn)
			if err != nil || v != migrations.LatestVersion() || v < 1 {
				t.Fatalf("Version = %d, %v; want %d", v, err, migrations.LatestVersion())
			}
			// One row per migration file (versions 1..LatestVersion).
			if n, want := queryString(t, conn, "SELECT count(*)::text FROM ripple.schema_migrations"), strconv.Itoa(migrations.LatestVersion()); n != want {
				t.Fatalf("schema_migrations rows = %s, want %s", n, want)
			}
			for _, q := range []struct{ sql, want string }{
				{"SELECT pubinsert::text || pubupdate::text || pubdelete::text || pubtruncate::text FROM pg_publication WHERE pubname = 'ripple'", "truetruetruetrue"},
				{"SELECT string_agg(schemaname || '.' || tablename, ',') FROM pg_publication_tables WHERE pubname = 'ripple'", "ripple.mutations"},
				{"SELECT relreplident::text FROM pg_class WHERE oid = 'ripple.mutations'::regclass", "f"},
				{"SELECT xid::text || ' ' || (pruned_at IS NULL)::text FROM ripple.horizon", "0 true"},
			} {
				if got := queryString(t, conn, q.sql); got != q.want {
					t.Errorf("%s = %q, want %q", q.sql, got, q.want)
				}
			}
			if h, err := migrations.Horizon(ctx, conn); err != nil || h != 0 {
				t.Fatalf("Horizon = %d, %v; want 0", h, err)
			}
		})
	}
}

// TestMigrateConcurrent makes two Migrate calls race on an empty database:
// a third connection holds Ripple's advisory lock until both are queued on
// it, so both start their work at the same moment.
func TestMigrateConcurrent(t *testing.T) {
	ctx := testCtx(t)
	blocker, url := newDB(t)
	tx, err := blocker.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrations.LockKey); err != nil {
		t.Fatal(err)
	}
	conns := []*pgx.Conn{connect(t, url), connect(t, url)}
	errs := make([]error, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = migrations.Migrate(ctx, c)
		}()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		err := blocker.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		if waiting == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d Migrate calls queued on the advisory lock", waiting)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Migrate %d: %v", i, err)
		}
	}
	if n, want := queryString(t, blocker, "SELECT count(*)::text FROM ripple.schema_migrations"), strconv.Itoa(migrations.LatestVersion()); n != want {
		t.Fatalf("schema_migrations rows = %s, want %s", n, want)
	}
	if n := queryString(t, blocker, "SELECT count(*)::text FROM ripple.horizon"); n != "1" {
		t.Fatalf("horizon rows = %s, want 1", n)
	}
}

func TestVersionInsideTransaction(t *testing.T) {
	ctx := testCtx(t)
	conn, _ := newDB(t)
	// Version on an empty database must not abort the caller's transaction.
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if v, err := migrations.Version(ctx, tx); err != nil || v != 0 {
			t.Fatalf("Version = %d, %v", v, err)
		}
		var one int
		return tx.QueryRow(context.Background(), "SELECT 1").Scan(&one)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeKeepsWriterState builds a database of version 2 holding the
// bookkeeping of a writer of that version (ripple.begin_mutations, records,
// the advance of last_mutation_id), upgrades it and checks that
// ripple.begin_mutations with p_advance (version 3) carries on from that state: recorded
// mutations are answered with their records, the next id follows on, and
// the advance commits or rolls back with the transaction.
func TestUpgradeKeepsWriterState(t *testing.T) {
	ctx := testCtx(t)
	conn, _ := newDB(t)
	if err := migrations.MigrateTo(ctx, conn, 2); err != nil {
		t.Fatal(err)
	}
	if v, err := migrations.Version(ctx, conn); err != nil || v != 2 {
		t.Fatalf("Version = %d, %v; want 2", v, err)
	}
	// A version 2 writer applies c1's mutations 1 (applied) and 2
	// (rejected).
	exec(t, conn, "BEGIN")
	exec(t, conn, "SELECT * FROM ripple.begin_mutations('{c1,c1}', '{1,2}')")
	exec(t, conn, `INSERT INTO ripple.mutations (client_id, mutation_id, org, status, code, message, result) VALUES
		('c1', 1, 'acme', 'applied', NULL, NULL, '{"id": "1"}'), ('c1', 2, 'acme', 'rejected', 'forbidden', 'no', NULL)`)
	exec(t, conn, "UPDATE ripple.clients SET last_mutation_id = 2, updated_at = now() WHERE client_id = 'c1'")
	exec(t, conn, "COMMIT")

	if err := migrations.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if v, err := migrations.Version(ctx, conn); err != nil || v != migrations.LatestVersion() {
		t.Fatalf("Version = %d, %v; want %d", v, err, migrations.LatestVersion())
	}
	const claim = `SELECT string_agg(concat_ws(' ', o_ord, o_expected, coalesce(o_status, '-'), o_code, o_result), '; ' ORDER BY o_ord)
		FROM ripple.begin_mutations($1::text[], $2::bigint[], true)`
	const last = `SELECT coalesce(string_agg(client_id || '=' || last_mutation_id, ' ' ORDER BY client_id), '') FROM ripple.clients`
	tests := []struct {
		name      string
		clients   []string
		ids       []int64
		want      string // one "ord expected status code result" per mutation
		commit    bool
		wantAfter string // ripple.clients after the transaction
	}{
		{"recorded mutations are answered with their records", []string{"c1", "c1"}, []int64{2, 1},
			`1 3 rejected forbidden; 2 3 applied {"id": "1"}`, true, "c1=2"},
		{"the next ids follow on and advance with the commit", []string{"c1", "c2", "c1", "c1"}, []int64{3, 1, 6, 4},
			"1 3 -; 2 1 -; 3 5 -; 4 4 -", true, "c1=4 c2=1"},
		{"a rolled back claim advances nothing", []string{"c1", "c3"}, []int64{5, 1},
			"1 5 -; 2 1 -", false, "c1=4 c2=1"},
		{"an id ahead is out of order and advances nothing", []string{"c1"}, []int64{7},
			"1 5 -", true, "c1=4 c2=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exec(t, conn, "BEGIN")
			if got := queryString(t, conn, claim, tt.clients, tt.ids); got != tt.want {
				exec(t, conn, "ROLLBACK")
				t.Fatalf("begin_mutations(%v, %v, true) = %q, want %q", tt.clients, tt.ids, got, tt.want)
			}
			if tt.commit {
				exec(t, conn, "COMMIT")
			} else {
				exec(t, conn, "ROLLBACK")
			}
			if got := queryString(t, conn, last); got != tt.wantAfter {
				t.Fatalf("ripple.clients = %q, want %q", got, tt.wantAfter)
			}
		})
	}
	// Writers of version 2 keep working next to later ones: their
	// transactions (bookkeeping call, records with jsonb results one by one
	// and in batches, the advance) still go through.
	exec(t, conn, "BEGIN")
	if got := queryString(t, conn, `SELECT string_agg(o_expected::text, ',' ORDER BY o_ord) FROM ripple.begin_mutations('{c1,c2}', '{5,2}')`); got != "5,2" {
		exec(t, conn, "ROLLBACK")
		t.Fatalf("begin_mutations after the upgrade = %q, want 5,2", got)
	}
	if got := queryString(t, conn, last); got != "c1=4 c2=1" {
		exec(t, conn, "ROLLBACK")
		t.Fatalf("begin_mutations without p_advance changed ripple.clients to %q", got)
	}
	exec(t, conn, `INSERT INTO ripple.mutations (client_id, mutation_id, org, status, code, message, result)
		VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb) RETURNING ripple_xid::text, result::text`,
		"c1", 5, "acme", "applied", nil, nil, `{"b":1,"a":2}`)
	exec(t, conn, `INSERT INTO ripple.mutations (client_id, mutation_id, org, status, code, message, result)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]::jsonb[])
		RETURNING client_id, mutation_id, ripple_xid::text, result::text`,
		[]string{"c2"}, []int64{2}, []string{"acme"}, []string{"applied"}, []*string{nil}, []*string{nil}, []string{`[1]`})
	exec(t, conn, `UPDATE ripple.clients c SET last_mutation_id = v.id, updated_at = now()
		FROM unnest($1::text[], $2::bigint[]) AS v(client_id, id) WHERE c.client_id = v.client_id`, []string{"c1", "c2"}, []int64{5, 2})
	exec(t, conn, "COMMIT")
	exec(t, conn, "BEGIN")
	got := queryString(t, conn, claim, []string{"c1", "c2"}, []int64{5, 2})
	exec(t, conn, "ROLLBACK")
	if want := `1 6 applied {"a": 2, "b": 1}; 2 3 applied [1]`; got != want {
		t.Fatalf("records of an earlier writer read back as %q, want %q", got, want)
	}
}

// TestBeginMutationsConcurrent runs groups of overlapping clients, new ones
// among them, from several connections at once, as writers of version 3 and
// of version 2 do: no group deadlocks on the clients' rows, and each client's last_mutation_id ends at the number of
// its mutations that were claimed to run and committed.
func TestBeginMutationsConcurrent(t *testing.T) {
	ctx := testCtx(t)
	conn, url := newDB(t)
	if err := migrations.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	const workers, rounds, clients = 6, 40, 8
	ran := make([]map[string]int64, workers)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		c := connect(t, url)
		ran[w] = map[string]int64{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = beginRounds(ctx, c, w, rounds, clients, ran[w])
		}()
	}
	wg.Wait()
	want := map[string]int64{}
	for w, err := range errs {
		if err != nil {
			t.Fatalf("worker %d: %v", w, err)
		}
		for k, n := range ran[w] {
			want[k] += n
		}
	}
	for k, n := range want {
		if got := queryString(t, conn, "SELECT last_mutation_id::text FROM ripple.clients WHERE client_id = $1", k); got != strconv.FormatInt(n, 10) {
			t.Errorf("client %s: last_mutation_id %s, want %d (mutations claimed to run and committed)", k, got, n)
		}
	}
}

// beginRounds claims, in each of its transactions, the next id of a few
// clients (worker-dependent, in varying order) as read without a lock, so
// that some are out of order by the time the rows are locked. Every third
// worker does it as a writer of version 2 does (begin_mutations without
// p_advance, then its own UPDATE of ripple.clients). It counts the
// mutations claimed to run in the transactions it commits (every other
// one).
func beginRounds(ctx context.Context, c *pgx.Conn, w, rounds, clients int, ran map[string]int64) error {
	for r := range rounds {
		var ids []string
		var mids []int64
		for i := range 3 {
			k := "k" + strconv.Itoa((w*7+r*(i+1)*3)%clients)
			if slices.Contains(ids, k) {
				continue
			}
			var last int64
			if err := c.QueryRow(ctx, "SELECT coalesce((SELECT last_mutation_id FROM ripple.clients WHERE client_id = $1), 0)", k).Scan(&last); err != nil {
				return err
			}
			ids, mids = append(ids, k), append(mids, last+1)
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		v2 := w%3 == 2
		rows, err := tx.Query(ctx, "SELECT o_ord, o_expected, o_status FROM ripple.begin_mutations($1::text[], $2::bigint[], $3)", ids, mids, !v2)
		if err != nil {
			return err
		}
		runs := map[string]int64{}
		for rows.Next() {
			var ord int32
			var expected int64
			var status *string
			if err := rows.Scan(&ord, &expected, &status); err != nil {
				return err
			}
			if status == nil && expected == mids[ord-1] {
				runs[ids[ord-1]]++
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("round %d: %w", r, err)
		}
		if v2 {
			for i, k := range ids {
				if runs[k] > 0 {
					if _, err := tx.Exec(ctx, "UPDATE ripple.clients SET last_mutation_id = $2, updated_at = now() WHERE client_id = $1", k, mids[i]); err != nil {
						return err
					}
				}
			}
		}
		if r%2 == 1 {
			if err := tx.Rollback(ctx); err != nil {
				return err
			}
			continue
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		for k, n := range runs {
			ran[k] += n
		}
	}
	return nil
}

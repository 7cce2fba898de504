package ingest

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{DatabaseURL: "postgres://x", NATSURL: "nats://x"}, true},
		{"no database", Config{NATSURL: "nats://x"}, false},
		{"no nats", Config{DatabaseURL: "postgres://x"}, false},
		{"bad slot", Config{DatabaseURL: "postgres://x", NATSURL: "nats://x", SlotName: "Bad-Slot"}, false},
		{"bad publication", Config{DatabaseURL: "postgres://x", NATSURL: "nats://x", Publication: "a'b"}, false},
		{"tiny cap", Config{DatabaseURL: "postgres://x", NATSURL: "nats://x", MaxMessageBytes: 100}, false},
		{"buffer below cap", Config{DatabaseURL: "postgres://x", NATSURL: "nats://x", MaxMessageBytes: 1 << 20, MaxBufferedBytes: 1 << 19}, false},
		{"negative interval", Config{DatabaseURL: "postgres://x", NATSURL: "nats://x", HeartbeatInterval: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ing, err := New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New: err=%v, want ok=%v", err, tt.ok)
			}
			if err == nil && (ing.cfg.SlotName != "ripple" || ing.cfg.MaxMessageBytes != 256<<10 || ing.Epoch() == "") {
				t.Fatalf("defaults not applied: %+v", ing.cfg)
			}
		})
	}
}

// TestRouting: one transaction with rows of two organisations in two tables
// reaches exactly four subjects; each part names only its own
// organisation's subjects; a subscriber of a third organisation gets
// nothing.
func TestRouting(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	e.start(t, cfg)
	all := collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	third := collect(t, e.nats.Connect(t), "sync.orgc.>", schema.SubjectControl)

	end := e.txn(t,
		"INSERT INTO todos (org_id, id, title) VALUES ('orga', 1, 'a1'), ('orgb', 1, 'b1'), ('orga', 2, 'a2')",
		"INSERT INTO lists (org_id, id, name) VALUES ('orga', 1, 'la'), ('orgb', 2, 'lb')",
		"INSERT INTO plain (v) VALUES ('not synced')")
	recs := all.wait(10*time.Second, "heartbeat past the commit", func(r []rec) bool { return maxD(r) >= end })
	parts := lastParts(recs)
	want := map[string][]string{
		schema.DataSubject("orga", "todos"): {schema.DataSubject("orga", "lists"), schema.DataSubject("orga", "todos")},
		schema.DataSubject("orga", "lists"): {schema.DataSubject("orga", "lists"), schema.DataSubject("orga", "todos")},
		schema.DataSubject("orgb", "todos"): {schema.DataSubject("orgb", "lists"), schema.DataSubject("orgb", "todos")},
		schema.DataSubject("orgb", "lists"): {schema.DataSubject("orgb", "lists"), schema.DataSubject("orgb", "todos")},
	}
	for s := range want {
		sort.Strings(want[s])
	}
	if len(parts) != len(want) {
		t.Fatalf("got parts on %d subjects, want 4: %v", len(parts), keys(parts))
	}
	var lsn schema.LSN
	var xid schema.XID8
	rows := 0
	for subject, ps := range parts {
		if len(ps) != 1 {
			t.Fatalf("%s: %d parts, want 1", subject, len(ps))
		}
		p := ps[0]
		if !reflect.DeepEqual(p.Subjects, want[subject]) {
			t.Errorf("%s: subjects %v, want %v", subject, p.Subjects, want[subject])
		}
		if schema.DataSubject(p.Org, p.Table) != subject || p.Seq != 0 || p.Epoch == "" || p.CommitTime.IsZero() {
			t.Errorf("%s: bad part header %+v", subject, p)
		}
		if lsn == 0 {
			lsn, xid = p.LSN, p.XID
		}
		if p.LSN != lsn || p.XID != xid || p.LSN == 0 || p.LSN > end || p.XID == 0 {
			t.Errorf("%s: lsn %v xid %v, want one commit lsn <= %v", subject, p.LSN, p.XID, end)
		}
		rows += len(p.Ops)
	}
	if rows != 5 {
		t.Errorf("got %d ops, want 5", rows)
	}
	// The xid is the transaction's full xid8 (the rows' ripple_xid).
	var rx string
	if err := e.conn.QueryRow(context.Background(), "SELECT ripple_xid::text FROM todos WHERE org_id='orga' AND id=1").Scan(&rx); err != nil {
		t.Fatal(err)
	}
	if rx != xid.String() {
		t.Errorf("part xid %v, row ripple_xid %s", xid, rx)
	}
	// Metrics counted the commit and its rows.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	metric := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			metric[mf.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	if metric["ripple_ingest_commits_total"] < 1 || metric["ripple_ingest_rows_total"] < 5 ||
		metric["ripple_ingest_published_bytes_total"] == 0 || metric["ripple_ingest_leader"] != 1 {
		t.Errorf("metrics: %v", metric)
	}
	// The third organisation's subscriber has seen a heartbeat past the
	// commit (published after it on the same connection) and no data.
	for _, r := range third.wait(10*time.Second, "third org heartbeat", func(r []rec) bool { return maxD(r) >= end }) {
		if r.kind != schema.KindHeartbeat {
			t.Errorf("third organisation received %s on %s", r.kind, r.subject)
		}
	}
}

func keys[M ~map[string]V, V any](m M) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOps checks the operations each kind of change turns into.
func TestOps(t *testing.T) {
	e := newEnv(t)
	e.start(t, e.config(t))
	c := collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	big := strings.Repeat("0123456789abcdef", 1) // replaced below by an incompressible TOASTed value
	if err := e.conn.QueryRow(context.Background(), "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i").Scan(&big); err != nil {
		t.Fatal(err)
	}
	bigJSON, _ := json.Marshal(big)
	type op struct{ subject, op, data string }
	todo := func(org string) string { return schema.DataSubject(org, "todos") }
	list := func(org string) string { return schema.DataSubject(org, "lists") }
	tests := []struct {
		name  string
		setup []string
		tx    []string
		want  []op
	}{
		{"insert", nil, []string{"INSERT INTO todos VALUES ('o1', 1, 'hi', true, NULL)"},
			[]op{{todo("o1"), "insert", `{"org_id":"o1","id":"1","title":"hi","done":true,"body":null}`}}},
		{"update", []string{"INSERT INTO todos VALUES ('o1', 2, 'x')"},
			[]string{"UPDATE todos SET title = 'y' WHERE org_id = 'o1' AND id = 2"},
			[]op{{todo("o1"), "update", `{"org_id":"o1","id":"2","title":"y","done":false,"body":null}`}}},
		{"delete", []string{"INSERT INTO todos VALUES ('o1', 3, 'x')"},
			[]string{"DELETE FROM todos WHERE org_id = 'o1' AND id = 3"},
			[]op{{todo("o1"), "delete", `{"org_id":"o1","id":"3"}`}}},
		{"move to another organisation", []string{"INSERT INTO lists VALUES ('o1', 10, 'n')"},
			[]string{"UPDATE lists SET org_id = 'o2' WHERE id = 10"},
			[]op{{list("o1"), "delete", `{"id":10}`}, {list("o2"), "insert", `{"org_id":"o2","id":10,"name":"n"}`}}},
		{"primary key change", []string{"INSERT INTO todos VALUES ('o1', 5, 'x')"},
			[]string{"UPDATE todos SET id = 6 WHERE org_id = 'o1' AND id = 5"},
			[]op{{todo("o1"), "delete", `{"org_id":"o1","id":"5"}`}, {todo("o1"), "update", `{"org_id":"o1","id":"6","title":"x","done":false,"body":null}`}}},
		{"unchanged toast filled from the old row", []string{"INSERT INTO todos VALUES ('o1', 7, 'x', false, '" + big + "')"},
			[]string{"UPDATE todos SET title = 'z' WHERE org_id = 'o1' AND id = 7"},
			[]op{{todo("o1"), "update", `{"org_id":"o1","id":"7","title":"z","done":false,"body":` + string(bigJSON) + `}`}}},
		{"escaped organisation", nil, []string{"INSERT INTO todos VALUES ('a.b c*>', 1, 'e')"},
			[]op{{todo("a.b c*>"), "insert", `{"org_id":"a.b c*>","id":"1","title":"e","done":false,"body":null}`}}},
		{"mutation record", nil, []string{`INSERT INTO ripple.mutations (client_id, mutation_id, org, status, result, created_at)
			VALUES ('c1', 1, 'o1', 'applied', '{"ok":1}', '2024-01-02 03:04:05+00')`},
			[]op{{schema.DataSubject("o1", schema.MutationsTable), "insert",
				`{"client_id":"c1","mutation_id":"1","org":"o1","status":"applied","code":null,"message":null,"result":{"ok":1},"created_at":"2024-01-02 03:04:05+00"}`}}},
		{"plain and ripple tables never leak", nil, []string{"INSERT INTO plain (v) VALUES ('x')", "INSERT INTO ripple.clients (client_id) VALUES ('c9')",
			"INSERT INTO todos VALUES ('o3', 1, 'only')"},
			[]op{{todo("o3"), "insert", `{"org_id":"o3","id":"1","title":"only","done":false,"body":null}`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, s := range tt.setup {
				e.exec(t, s)
			}
			before := e.currentLSN(t)
			end := e.txn(t, tt.tx...)
			recs := c.wait(10*time.Second, "heartbeat past the commit", func(r []rec) bool { return maxD(r) >= end })
			var got []op
			for _, r := range recs {
				if r.part == nil || !r.part.Last || r.part.LSN <= before || r.part.LSN > end {
					continue
				}
				for _, o := range r.part.Ops {
					d := o.Row
					if o.Op == schema.OpDelete {
						d = o.Key
					}
					got = append(got, op{r.subject, o.Op, string(d)})
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d ops %v, want %v", len(got), got, tt.want)
			}
			for i := range got {
				var g, w any
				if err := json.Unmarshal([]byte(got[i].data), &g); err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal([]byte(tt.want[i].data), &w); err != nil {
					t.Fatal(err)
				}
				if got[i].subject != tt.want[i].subject || got[i].op != tt.want[i].op || !reflect.DeepEqual(g, w) {
					t.Errorf("op %d: got %s %s %.200s, want %s %s %.200s", i, got[i].subject, got[i].op, got[i].data,
						tt.want[i].subject, tt.want[i].op, tt.want[i].data)
				}
			}
		})
	}
	// Deletes and moves left tombstones carrying the old root key.
	var n int
	if err := e.conn.QueryRow(context.Background(),
		"SELECT count(*) FROM ripple.tombstones WHERE (table_name, root_key) IN (('todos', 'o1'), ('lists', 'o1'))").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Errorf("got %d tombstones of organisation o1, want >= 3 (delete, move, key change)", n)
	}
}

// TestQuietSystemAdvancesD: WAL written only by tables outside the
// publication still moves D forward in heartbeats (rule 1).
func TestQuietSystemAdvancesD(t *testing.T) {
	e := newEnv(t)
	e.start(t, e.config(t))
	c := collect(t, e.nats.Connect(t), schema.SubjectControl)
	for range 3 {
		e.exec(t, "INSERT INTO plain (v) SELECT md5(i::text) FROM generate_series(1, 100) i")
		end := e.currentLSN(t)
		recs := c.wait(10*time.Second, "D past a write to a plain table", func(r []rec) bool { return maxD(r) >= end })
		prev := schema.LSN(0)
		for _, r := range recs {
			if r.hb == nil || r.hb.Epoch == "" {
				t.Fatalf("unexpected message %+v", r)
			}
			if r.hb.D < prev {
				t.Fatalf("D went back from %v to %v", prev, r.hb.D)
			}
			prev = r.hb.D
			if cp := r.hb.Checkpoint; cp != nil && cp.LSN > r.hb.D {
				t.Fatalf("checkpoint %v released before D %v", cp.LSN, r.hb.D)
			}
		}
	}
	// Checkpoints are released once D passed them.
	c.wait(10*time.Second, "a checkpoint", func(r []rec) bool {
		return slices.ContainsFunc(r, func(r rec) bool { return r.hb.Checkpoint != nil && r.hb.Checkpoint.XMin > 0 })
	})
}

// TestResync: TRUNCATE and a column change of a sync table publish resync
// markers on the control subject.
func TestResync(t *testing.T) {
	e := newEnv(t)
	e.start(t, e.config(t))
	c := collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	e.exec(t, "INSERT INTO lists VALUES ('o1', 1, 'a')")
	e.exec(t, "INSERT INTO todos VALUES ('o1', 1, 'a')")
	before := e.currentLSN(t)
	e.exec(t, "TRUNCATE todos")
	e.exec(t, "ALTER TABLE lists ADD COLUMN color text DEFAULT 'red'")
	end := e.txn(t, "INSERT INTO lists (org_id, id, name, color) VALUES ('o1', 2, 'b', 'blue')")
	recs := c.wait(10*time.Second, "heartbeat past the commits", func(r []rec) bool { return maxD(r) >= end })
	got := map[string]schema.Resync{}
	for _, r := range recs {
		if r.resync != nil {
			if r.resync.LSN <= before || r.resync.LSN > end || r.resync.Epoch == "" {
				t.Errorf("resync %+v outside (%v, %v]", r.resync, before, end)
			}
			got[r.resync.Table+"/"+r.resync.Reason] = *r.resync
		}
	}
	if _, ok := got["todos/truncate"]; !ok {
		t.Errorf("no truncate resync for todos: %v", got)
	}
	if _, ok := got["lists/schema_change"]; !ok {
		t.Errorf("no schema_change resync for lists: %v", got)
	}
	// The row after the change carries the new column.
	var found bool
	for _, ps := range lastParts(recs) {
		for _, p := range ps {
			for _, o := range p.Ops {
				if strings.Contains(string(o.Row), `"color":"blue"`) {
					found = true
				}
			}
		}
	}
	if !found {
		for _, r := range recs {
			t.Logf("%s %s %+v %+v", r.subject, r.kind, r.part, r.resync)
		}
		t.Error("row with the new column not published")
	}
}

// TestReplicaIdentityDefault: without REPLICA IDENTITY FULL a delete cannot
// be routed to its organisation; it becomes a resync marker of the table,
// never a silent loss. Key changes still delete the old key.
func TestReplicaIdentityDefault(t *testing.T) {
	e := newEnv(t)
	e.start(t, e.config(t))
	c := collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	e.exec(t, "INSERT INTO lists VALUES ('o1', 1, 'a'), ('o1', 2, 'b')")
	e.exec(t, "ALTER TABLE lists REPLICA IDENTITY DEFAULT")
	before := e.currentLSN(t)
	e.exec(t, "UPDATE lists SET id = 3 WHERE id = 2")
	end := e.txn(t, "DELETE FROM lists WHERE id = 1")
	recs := c.wait(10*time.Second, "heartbeat past the commits", func(r []rec) bool { return maxD(r) >= end })
	var ops []string
	var resync *schema.Resync
	for _, r := range recs {
		if r.part != nil && r.part.Last && r.part.LSN > before {
			for _, o := range r.part.Ops {
				ops = append(ops, r.subject+" "+o.Op+" "+string(o.Key)+string(o.Row))
			}
		}
		if r.resync != nil && r.resync.LSN > before {
			resync = r.resync
		}
	}
	want := []string{
		schema.DataSubject("o1", "lists") + ` delete {"id":2}`,
		schema.DataSubject("o1", "lists") + ` update {"org_id":"o1","id":3,"name":"b"}`,
	}
	if !reflect.DeepEqual(ops, want) {
		t.Errorf("ops %q, want %q", ops, want)
	}
	if resync == nil || resync.Table != "lists" || resync.Reason != "unroutable_delete" {
		t.Errorf("resync %+v, want lists/unroutable_delete", resync)
	}
}

// TestEnableAtRuntime: a table enabled while the ingest runs streams
// without a restart.
func TestEnableAtRuntime(t *testing.T) {
	e := newEnv(t)
	e.start(t, e.config(t))
	c := collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	e.exec(t, "CREATE TABLE notes (org_id text NOT NULL, id int4 PRIMARY KEY, body text)")
	e.exec(t, "INSERT INTO notes VALUES ('o1', 1, 'before enable')")
	if _, err := migrations.Enable(context.Background(), e.conn, "notes", "org_id"); err != nil {
		t.Fatal(err)
	}
	end := e.txn(t, "INSERT INTO notes VALUES ('o1', 2, 'after enable')")
	recs := c.wait(10*time.Second, "heartbeat past the commit", func(r []rec) bool { return maxD(r) >= end })
	var got []string
	for _, r := range recs {
		if r.part != nil {
			for _, o := range r.part.Ops {
				got = append(got, r.subject+" "+string(o.Row))
			}
		}
	}
	want := []string{schema.DataSubject("o1", "notes") + ` {"org_id":"o1","id":2,"body":"after enable"}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestSchemaChangeWhileStopped: a column change made while no ingest runs
// still publishes a schema_change resync marker when the next ingest first
// streams the table: the columns last streamed are kept in
// ripple.streamed_relations, not only in the ingest's memory.
func TestSchemaChangeWhileStopped(t *testing.T) {
	e := newEnv(t)
	cfg := e.config(t)
	_, stop := e.run(t, cfg)
	end := e.txn(t, "INSERT INTO lists VALUES ('o1', 1, 'a')")
	// The slot confirms the insert: the next ingest starts after it and
	// never sees the table's old columns.
	waitFor(t, 20*time.Second, "slot confirmed past the insert", func() bool {
		var confirmed string
		if err := e.conn.QueryRow(context.Background(), "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", cfg.SlotName).Scan(&confirmed); err != nil {
			t.Fatal(err)
		}
		l, err := schema.ParseLSN(confirmed)
		return err == nil && l >= end
	})
	if err := stop(); err != nil {
		t.Fatalf("first ingest: %v", err)
	}

	e.exec(t, "ALTER TABLE lists ADD COLUMN color text DEFAULT 'red'")
	c := collect(t, e.nats.Connect(t), schema.SubjectControl)
	e.start(t, cfg)
	end = e.txn(t, "INSERT INTO lists (org_id, id, name) VALUES ('o1', 2, 'b')")
	recs := c.wait(10*time.Second, "heartbeat past the insert", func(r []rec) bool { return maxD(r) >= end })
	if !slices.ContainsFunc(recs, func(r rec) bool {
		return r.resync != nil && r.resync.Table == "lists" && r.resync.Reason == "schema_change"
	}) {
		t.Fatal("no schema_change resync for lists after a change made while no ingest ran")
	}
}

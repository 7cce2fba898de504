package writer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
)

// tableState returns every row of todos and accounts as text, to prove that
// nothing changed.
func (e *env) tableState(t *testing.T) string {
	t.Helper()
	var s string
	err := e.db.QueryRow(context.Background(), `SELECT
		coalesce((SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s', id, org, title, n, amount, due, tags, meta), ';' ORDER BY id) FROM todos), '') || '#' ||
		coalesce((SELECT string_agg(format('%s|%s|%s', id, org, balance), ';' ORDER BY id) FROM accounts), '')`).Scan(&s)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) lastMutationID(t *testing.T, client string) int64 {
	t.Helper()
	var n int64
	err := e.db.QueryRow(context.Background(), `SELECT coalesce((SELECT last_mutation_id FROM ripple.clients WHERE client_id = $1), 0)`, client).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *env) recorded(t *testing.T, client string) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(context.Background(), `SELECT count(*) FROM ripple.mutations WHERE client_id = $1`, client).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestBuiltinMutators(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	cl := claims("acme")
	steps := []struct {
		name    string
		mutator string
		args    any
		want    string // the reply's result, exactly
		state   string // SELECT of the todo afterwards
	}{
		{
			name: "insert every kind of value", mutator: "insert",
			args: map[string]any{"table": "todos", "row": map[string]any{
				"id": "t1", "org": "acme", "title": "milk", "n": "9007199254740993", "amount": "12.5",
				"due": "2026-01-02T03:04:05Z", "tags": []any{"a", "b \"c\"", nil}, "meta": map[string]any{"k": []int{1, 2}},
			}},
			want:  `{"id":"t1","org":"acme","title":"milk","n":"9007199254740993","amount":"12.50","due":"2026-01-02 03:04:05+00","tags":["a","b \"c\"",null],"meta":{"k": [1, 2]},"seq":"1"}`,
			state: `t1|acme|milk|9007199254740993|12.50|{a,"b \"c\"",NULL}|{"k": [1, 2]}`,
		},
		{
			name: "partial update keeps other columns", mutator: "update",
			args:  map[string]any{"table": "todos", "key": map[string]any{"id": "t1"}, "set": map[string]any{"title": "oat milk", "n": 7}},
			want:  `{"id":"t1","org":"acme","title":"oat milk","n":"7","amount":"12.50","due":"2026-01-02 03:04:05+00","tags":["a","b \"c\"",null],"meta":{"k": [1, 2]},"seq":"1"}`,
			state: `t1|acme|oat milk|7|12.50|{a,"b \"c\"",NULL}|{"k": [1, 2]}`,
		},
		{
			name: "update to null", mutator: "update",
			args:  map[string]any{"table": "todos", "key": map[string]any{"id": "t1"}, "set": map[string]any{"tags": nil, "meta": nil}},
			want:  `{"id":"t1","org":"acme","title":"oat milk","n":"7","amount":"12.50","due":"2026-01-02 03:04:05+00","tags":null,"meta":null,"seq":"1"}`,
			state: `t1|acme|oat milk|7|12.50||`,
		},
		{
			name: "delete returns the key", mutator: "delete",
			args:  map[string]any{"table": "todos", "key": map[string]any{"id": "t1"}},
			want:  `{"id":"t1"}`,
			state: ``,
		},
	}
	var prevXID schema.XID8
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			rep, _ := mustSend(t, nc, schema.MutationRequest{ClientID: "c1", MutationID: int64(i + 1), Mutator: s.mutator, Args: args(s.args), Claims: cl})
			if rep.Status != schema.MutationApplied {
				t.Fatalf("reply %+v", rep)
			}
			if !jsonEqual(t, rep.Result, s.want) {
				t.Errorf("result\n got %s\nwant %s", rep.Result, s.want)
			}
			if rep.XID <= prevXID {
				t.Errorf("xid %d not after previous %d", rep.XID, prevXID)
			}
			prevXID = rep.XID
			var state string
			err := e.db.QueryRow(context.Background(), `SELECT coalesce((SELECT format('%s|%s|%s|%s|%s|%s|%s', id, org, title, n, amount, tags, meta) FROM todos WHERE id = 't1'), '')`).Scan(&state)
			if err != nil {
				t.Fatal(err)
			}
			if state != s.state {
				t.Errorf("row\n got %s\nwant %s", state, s.state)
			}
			// The record carries the same xid as the row's stamp.
			var recXID string
			if err := e.db.QueryRow(context.Background(), `SELECT ripple_xid::text FROM ripple.mutations WHERE client_id = 'c1' AND mutation_id = $1`, i+1).Scan(&recXID); err != nil {
				t.Fatal(err)
			}
			if recXID != rep.XID.String() {
				t.Errorf("recorded xid %s, reply %s", recXID, rep.XID)
			}
		})
	}
}

// jsonEqual compares JSON by value.
func jsonEqual(t *testing.T, got json.RawMessage, want string) bool {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("result %s: %v", got, err)
	}
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatalf("want %s: %v", want, err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

func TestRejections(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	ctx := context.Background()
	if _, err := e.db.Exec(ctx, `INSERT INTO todos (id, org, title) VALUES ('a1', 'acme', 'mine'), ('g1', 'globex', 'theirs')`); err != nil {
		t.Fatal(err)
	}
	todoArgs := func(kv ...any) json.RawMessage {
		row := map[string]any{"id": "new", "org": "acme", "title": "t"}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "<absent>" {
				delete(row, kv[i].(string))
				continue
			}
			row[kv[i].(string)] = kv[i+1]
		}
		return args(map[string]any{"table": "todos", "row": row})
	}
	onlyTables := claims("acme")
	onlyTables.Tables = []string{"accounts"}
	cases := []struct {
		name    string
		mutator string
		args    json.RawMessage
		claims  schema.Claims
		code    string
		msg     string // substring of the message
	}{
		{"unknown mutator", "launch_rockets", args(map[string]any{}), claims("acme"), "unknown_mutator", "launch_rockets"},
		{"unknown table", "insert", args(map[string]any{"table": "nope", "row": map[string]any{"id": "x"}}), claims("acme"), "unknown_table", "nope"},
		{"table not enabled", "insert", args(map[string]any{"table": "local_notes", "row": map[string]any{"id": "x", "org": "acme"}}), claims("acme"), "unknown_table", "local_notes"},
		{"insert into another org", "insert", todoArgs("org", "globex"), claims("acme"), "forbidden", "globex"},
		{"insert without org", "insert", todoArgs("org", "<absent>"), claims("acme"), "constraint_violation", "org"},
		{"update another org's row", "update", args(map[string]any{"table": "todos", "key": map[string]any{"id": "g1"}, "set": map[string]any{"title": "mine now"}}), claims("acme"), "forbidden", "globex"},
		{"move a row to another org", "update", args(map[string]any{"table": "todos", "key": map[string]any{"id": "a1"}, "set": map[string]any{"org": "globex"}}), claims("acme"), "forbidden", "globex"},
		{"delete another org's row", "delete", args(map[string]any{"table": "todos", "key": map[string]any{"id": "g1"}}), claims("acme"), "forbidden", "globex"},
		{"table outside the tables claim", "insert", todoArgs(), onlyTables, "forbidden", "todos"},
		{"token without write orgs", "noop", args(map[string]any{}), claims(), "forbidden", "no organisation"},
		{"int8 from a word", "insert", todoArgs("n", "many"), claims("acme"), "invalid_argument", "bigint"},
		{"int8 out of range", "insert", todoArgs("n", "99999999999999999999"), claims("acme"), "invalid_argument", "out of range"},
		{"numeric overflow", "insert", todoArgs("amount", "123456789012.5"), claims("acme"), "invalid_argument", "numeric"},
		{"bad timestamp", "insert", todoArgs("due", "next tuesday-ish"), claims("acme"), "invalid_argument", "timestamp"},
		{"object for a text column", "insert", todoArgs("title", map[string]any{"a": 1}), claims("acme"), "invalid_argument", "title"},
		{"array for a scalar column", "insert", todoArgs("n", []int{1}), claims("acme"), "invalid_argument", "n"},
		{"unknown column", "insert", todoArgs("colour", "red"), claims("acme"), "invalid_argument", "colour"},
		{"xid column", "insert", todoArgs("ripple_xid", "5"), claims("acme"), "invalid_argument", "ripple_xid"},
		{"args not an object", "insert", json.RawMessage(`[1,2]`), claims("acme"), "invalid_argument", "object"},
		{"row not an object", "insert", args(map[string]any{"table": "todos", "row": "id=1"}), claims("acme"), "invalid_argument", "row"},
		{"unexpected args field", "delete", args(map[string]any{"table": "todos", "key": map[string]any{"id": "a1"}, "where": "true"}), claims("acme"), "invalid_argument", "where"},
		{"key not the primary key", "update", args(map[string]any{"table": "todos", "key": map[string]any{"title": "mine"}, "set": map[string]any{"title": "x"}}), claims("acme"), "invalid_argument", "primary key"},
		{"empty set", "update", args(map[string]any{"table": "todos", "key": map[string]any{"id": "a1"}, "set": map[string]any{}}), claims("acme"), "invalid_argument", "set"},
		{"check constraint", "insert", todoArgs("title", ""), claims("acme"), "constraint_violation", "title_not_empty"},
		{"duplicate key", "insert", todoArgs("id", "a1"), claims("acme"), "constraint_violation", "todos_pkey"},
		{"update of a missing row", "update", args(map[string]any{"table": "todos", "key": map[string]any{"id": "zzz"}, "set": map[string]any{"title": "x"}}), claims("acme"), "not_found", "todos"},
		{"delete of a missing row", "delete", args(map[string]any{"table": "todos", "key": map[string]any{"id": "zzz"}}), claims("acme"), "not_found", "todos"},
		{"custom mutator fails after a write", "insert_then_fail", args(map[string]any{}), claims("acme"), "constraint_violation", "title_not_empty"},
		{"custom mutator swallows an error", "swallow_error", args(map[string]any{}), claims("acme"), "internal", "aborted"},
		{"custom mutator panics", "panics", args(map[string]any{}), claims("acme"), "internal", "boom"},
		{"custom business rule", "transfer", args(map[string]any{"from": "x", "to": "x", "amount": 1}), claims("acme"), "invalid_argument", "transfer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := e.tableState(t)
			client := "c-" + strings.ReplaceAll(c.name, " ", "-")
			req := schema.MutationRequest{ClientID: client, MutationID: 1, Mutator: c.mutator, Args: c.args, Claims: c.claims}
			rep, raw := mustSend(t, nc, req)
			if rep.Status != schema.MutationRejected || rep.Code != c.code || !strings.Contains(rep.Message, c.msg) {
				t.Fatalf("reply %s, want rejected %s containing %q", raw, c.code, c.msg)
			}
			if rep.XID == 0 {
				t.Errorf("a recorded rejection carries its xid: %s", raw)
			}
			if after := e.tableState(t); after != before {
				t.Errorf("data changed:\n before %s\n after  %s", before, after)
			}
			// Recorded: the retry gets exactly the same reply.
			_, raw2 := mustSend(t, nc, req)
			if !bytes.Equal(raw, raw2) {
				t.Errorf("retry answered differently:\n first %s\n retry %s", raw, raw2)
			}
			var status, code, org string
			if err := e.db.QueryRow(ctx, `SELECT status, code, org FROM ripple.mutations WHERE client_id = $1 AND mutation_id = 1`, client).Scan(&status, &code, &org); err != nil {
				t.Fatal(err)
			}
			if status != "rejected" || code != c.code {
				t.Errorf("recorded %s %s", status, code)
			}
			if len(c.claims.WriteOrgs) > 0 && org != c.claims.WriteOrgs[0] {
				t.Errorf("rejection recorded under org %q, want one of the token's write orgs", org)
			}
			if n := e.lastMutationID(t, client); n != 1 {
				t.Errorf("last_mutation_id %d, want 1", n)
			}
			// The client goes on.
			if len(c.claims.WriteOrgs) > 0 {
				next, raw := mustSend(t, nc, schema.MutationRequest{ClientID: client, MutationID: 2, Mutator: "noop", Args: args(map[string]any{}), Claims: c.claims})
				if next.Status != schema.MutationApplied {
					t.Errorf("next mutation: %s", raw)
				}
			}
		})
	}
}

func TestMalformedRequests(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	cases := []struct {
		name string
		body string
	}{
		{"not json", `{"client_id":`},
		{"no client id", `{"mutation_id":1,"mutator":"noop","args":{},"claims":{"write_orgs":["acme"]}}`},
		{"zero mutation id", `{"client_id":"m","mutation_id":0,"mutator":"noop","args":{},"claims":{"write_orgs":["acme"]}}`},
		{"negative mutation id", `{"client_id":"m","mutation_id":-4,"mutator":"noop","args":{},"claims":{"write_orgs":["acme"]}}`},
		{"huge client id", `{"client_id":"` + strings.Repeat("x", 300) + `","mutation_id":1,"mutator":"noop","args":{},"claims":{"write_orgs":["acme"]}}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			msg, err := nc.Request(schema.SubjectMutate, []byte(c.body), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var rep schema.MutationReply
			if err := json.Unmarshal(msg.Data, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Status != schema.MutationRejected || rep.Code != "invalid_argument" || rep.XID != 0 {
				t.Fatalf("reply %s", msg.Data)
			}
		})
	}
	var n int
	if err := e.db.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM ripple.mutations) + (SELECT count(*) FROM ripple.clients)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows recorded for malformed requests", n)
	}
}

func TestExactlyOnceUnderRetries(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	req := schema.MutationRequest{ClientID: "retry", MutationID: 1, Mutator: "insert", Claims: claims("acme"),
		Args: args(map[string]any{"table": "todos", "row": map[string]any{"id": "r1", "org": "acme", "title": "once"}})}
	// The same mutation sent by several senders at once (a gateway retrying
	// after a lost reply while the first attempt still runs), on two
	// writers.
	const senders = 8
	replies := make([][]byte, senders)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, raw, err := send(context.Background(), nc, req, 10*time.Second)
			if err != nil {
				t.Error(err)
			}
			replies[i] = raw
		}()
	}
	close(start)
	wg.Wait()
	var first schema.MutationReply
	if err := json.Unmarshal(replies[0], &first); err != nil {
		t.Fatal(err)
	}
	if first.Status != schema.MutationApplied {
		t.Fatalf("reply %s", replies[0])
	}
	for i, r := range replies {
		if !bytes.Equal(r, replies[0]) {
			t.Errorf("reply %d differs:\n %s\n %s", i, r, replies[0])
		}
	}
	// A later mutation, then the first one once more.
	mustSend(t, nc, schema.MutationRequest{ClientID: "retry", MutationID: 2, Mutator: "noop", Args: args(map[string]any{}), Claims: claims("acme")})
	_, again := mustSend(t, nc, req)
	if !bytes.Equal(again, replies[0]) {
		t.Errorf("late retry differs:\n %s\n %s", again, replies[0])
	}
	var n int
	if err := e.db.QueryRow(context.Background(), `SELECT count(*) FROM todos WHERE id = 'r1'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 || e.recorded(t, "retry") != 2 || e.lastMutationID(t, "retry") != 2 {
		t.Errorf("rows %d, recorded %d, last %d", n, e.recorded(t, "retry"), e.lastMutationID(t, "retry"))
	}
}

func TestOutOfOrder(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	ins := func(id int64) schema.MutationRequest {
		return schema.MutationRequest{ClientID: "ooo", MutationID: id, Mutator: "insert", Claims: claims("acme"),
			Args: args(map[string]any{"table": "todos", "row": map[string]any{"id": "o" + string(rune('0'+id)), "org": "acme", "title": "x"}})}
	}
	before := e.tableState(t)
	for _, skip := range []int64{3, 2} {
		rep, raw := mustSend(t, nc, ins(skip))
		var res schema.OutOfOrderResult
		if rep.Status != schema.MutationRejected || rep.Code != "mutation_out_of_order" || !strings.Contains(rep.Message, "expected mutation_id 1") {
			t.Fatalf("reply %s", raw)
		}
		if err := json.Unmarshal(rep.Result, &res); err != nil || res.Expected != 1 {
			t.Fatalf("result %s: %v", rep.Result, err)
		}
		if schema.MutationCodeFinal(rep.Code) {
			t.Error("out of order must not be final")
		}
	}
	if e.tableState(t) != before || e.recorded(t, "ooo") != 0 || e.lastMutationID(t, "ooo") != 0 {
		t.Fatal("an out-of-order mutation was recorded or applied")
	}
	for id := int64(1); id <= 3; id++ {
		if rep, raw := mustSend(t, nc, ins(id)); rep.Status != schema.MutationApplied {
			t.Fatalf("mutation %d: %s", id, raw)
		}
	}
	// Skipping ahead again after progress names the new expected id.
	rep, _ := mustSend(t, nc, ins(7))
	if rep.Code != "mutation_out_of_order" || !strings.Contains(rep.Message, "expected mutation_id 4") {
		t.Fatalf("reply %+v", rep)
	}
	if e.recorded(t, "ooo") != 3 {
		t.Fatalf("recorded %d", e.recorded(t, "ooo"))
	}
}

func TestTransferNoOverdraft(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	ctx := context.Background()
	if _, err := e.db.Exec(ctx, `INSERT INTO accounts VALUES ('A', 'acme', 100), ('B', 'acme', 0)`); err != nil {
		t.Fatal(err)
	}
	// Hold account A so both transfers are inside their transactions,
	// waiting for it, before either can decide.
	hold, err := e.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `SELECT 1 FROM accounts WHERE id = 'A' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	reqs := []schema.MutationRequest{
		{ClientID: "alice", MutationID: 1, Mutator: "transfer", Args: args(map[string]any{"from": "A", "to": "B", "amount": 70}), Claims: claims("acme")},
		{ClientID: "bob", MutationID: 1, Mutator: "transfer", Args: args(map[string]any{"from": "A", "to": "B", "amount": 70}), Claims: claims("acme")},
	}
	replies := make([]schema.MutationReply, len(reqs))
	raws := make([][]byte, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, raw, err := send(ctx, nc, r, 20*time.Second)
			if err != nil {
				t.Error(err)
			}
			replies[i], raws[i] = rep, raw
		}()
	}
	pool := e.pg.Connect(t, dbName(e.url))
	// Both transfers wait for the lock inside their transactions when they
	// fall into different lanes of the writer (clients are hashed to lanes
	// with a random seed); in the same lane they run one after the other,
	// the second inside the first one's batch or the next. Either way at
	// least one waits here, and the outcome must be the same.
	waitFor(t, 10*time.Second, "a transfer waiting for the account lock", func() bool {
		var n int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ripple-writer' AND wait_event_type = 'Lock' AND query LIKE '%FROM accounts%'`).Scan(&n)
		return err == nil && n >= 1
	})
	if err := hold.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	applied, rejected := -1, -1
	for i, r := range replies {
		switch {
		case r.Status == schema.MutationApplied:
			applied = i
		case r.Status == schema.MutationRejected && r.Code == "insufficient_funds":
			rejected = i
		}
	}
	if applied < 0 || rejected < 0 {
		t.Fatalf("want one applied and one insufficient_funds: %s / %s", raws[0], raws[1])
	}
	if !jsonEqual(t, replies[applied].Result, `{"from_balance":30}`) {
		t.Errorf("result %s", replies[applied].Result)
	}
	var a, b int64
	if err := e.db.QueryRow(ctx, `SELECT (SELECT balance FROM accounts WHERE id='A'), (SELECT balance FROM accounts WHERE id='B')`).Scan(&a, &b); err != nil {
		t.Fatal(err)
	}
	if a != 30 || b != 70 {
		t.Errorf("balances A=%d B=%d", a, b)
	}
	// The rejection stands on retry, even though nothing would stop it now
	// being re-decided differently.
	if _, err := e.db.Exec(ctx, `UPDATE accounts SET balance = 1000 WHERE id = 'A'`); err != nil {
		t.Fatal(err)
	}
	_, again := mustSend(t, nc, reqs[rejected])
	if !bytes.Equal(again, raws[rejected]) {
		t.Errorf("retry of the rejection:\n %s\n %s", again, raws[rejected])
	}
}

// TestSchemaChangesWhileRunning: tables enabled, columns added and columns
// dropped after the writer loaded its metadata are picked up, never
// rejected because of stale metadata.
func TestSchemaChangesWhileRunning(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	ctx := context.Background()
	// Warm the cache for todos.
	if rep, raw := mustSend(t, nc, todoInsert("schema", 1)); rep.Status != schema.MutationApplied {
		t.Fatal(string(raw))
	}
	steps := []struct {
		name string
		ddl  string
		req  schema.MutationRequest
		want string
	}{
		{"table enabled later", `CREATE TABLE later (id int4 PRIMARY KEY, org text NOT NULL, note text)`,
			schema.MutationRequest{Mutator: "insert", Args: args(map[string]any{"table": "later", "row": map[string]any{"id": 1, "org": "acme", "note": "hi"}})},
			`{"id":1,"org":"acme","note":"hi"}`},
		{"column added later", `ALTER TABLE todos ADD COLUMN colour text`,
			schema.MutationRequest{Mutator: "insert", Args: args(map[string]any{"table": "todos", "row": map[string]any{"id": "c1", "org": "acme", "title": "x", "colour": "red"}})},
			`{"id":"c1","org":"acme","title":"x","n":null,"amount":null,"due":null,"tags":null,"meta":null,"seq":"2","colour":"red"}`},
		{"column dropped later", `ALTER TABLE todos DROP COLUMN amount`,
			schema.MutationRequest{Mutator: "update", Args: args(map[string]any{"table": "todos", "key": map[string]any{"id": "c1"}, "set": map[string]any{"title": "y"}})},
			`{"id":"c1","org":"acme","title":"y","n":null,"due":null,"tags":null,"meta":null,"seq":"2","colour":"red"}`},
	}
	for i, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if _, err := e.db.Exec(ctx, s.ddl); err != nil {
				t.Fatal(err)
			}
			if s.name == "table enabled later" {
				if _, err := migrations.Enable(ctx, e.db, "later", "org"); err != nil {
					t.Fatal(err)
				}
			}
			req := s.req
			req.ClientID, req.MutationID, req.Claims = "schema", int64(i+2), claims("acme")
			rep, raw := mustSend(t, nc, req)
			if rep.Status != schema.MutationApplied || !jsonEqual(t, rep.Result, s.want) {
				t.Fatalf("reply %s, want result %s", raw, s.want)
			}
		})
	}
}

// Once mutation records are pruned (migrations.PruneMutations), a retry of a
// pruned mutation gets the final rejection mutation_expired and changes
// nothing; the client's next mutation is applied as usual.
func TestRetryAfterRecordsPruned(t *testing.T) {
	e := setup(t)
	e.startWriter(t)
	nc := e.nats.Connect(t)
	ins := func(id int64, key string) schema.MutationRequest {
		return schema.MutationRequest{ClientID: "old", MutationID: id, Mutator: "insert", Claims: claims("acme"),
			Args: args(map[string]any{"table": "todos", "row": map[string]any{"id": key, "org": "acme", "title": "x"}})}
	}
	for id, key := range []string{"p1", "p2"} {
		if rep, raw := mustSend(t, nc, ins(int64(id+1), key)); rep.Status != schema.MutationApplied {
			t.Fatalf("mutation %d: %s", id+1, raw)
		}
	}
	n, err := migrations.PruneMutations(context.Background(), e.db, 0)
	if err != nil || n != 2 {
		t.Fatalf("pruned %d records (err %v), want 2", n, err)
	}
	before := e.tableState(t)
	rep, raw := mustSend(t, nc, ins(1, "p1"))
	if rep.Status != schema.MutationRejected || rep.Code != schema.MutationCodeExpired || !schema.MutationCodeFinal(rep.Code) {
		t.Fatalf("retry of a pruned mutation: %s", raw)
	}
	if e.tableState(t) != before || e.recorded(t, "old") != 0 || e.lastMutationID(t, "old") != 2 {
		t.Fatalf("the retry changed something: recorded %d, last %d", e.recorded(t, "old"), e.lastMutationID(t, "old"))
	}
	if rep, raw := mustSend(t, nc, ins(3, "p3")); rep.Status != schema.MutationApplied {
		t.Fatalf("next mutation after the prune: %s", raw)
	}
}

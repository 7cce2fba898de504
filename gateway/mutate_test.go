package gateway

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/writer"
)

func startWriter(t *testing.T, e *env) {
	t.Helper()
	w, err := writer.New(writer.Config{DatabaseURL: e.url, NATSURL: e.nats.URL()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 20*time.Second, "writer ready", func() bool { return w.Ready(ctx) == nil })
}

func mutateFrame(cid string, id int64, args string) schema.ClientFrame {
	return schema.ClientFrame{Type: schema.FrameMutate, ClientID: cid, MutationID: id, Mutator: "insert", Args: []byte(args)}
}

// Mutations go through the writer; each applied one is confirmed in the
// commit frame of the transaction that made it part of synced data, to its
// writer only; rejections come back with their code; a mutation for an
// organisation outside the token writes nothing.
func TestMutations(t *testing.T) {
	e := newEnv(t, envOpts{})
	startWriter(t, e)
	writerTok := token(t, schema.Claims{Orgs: []string{"acme"}, WriteOrgs: []string{"acme"}})
	a := dial(t, e).start()
	a.auth(writerTok)
	a.subscribe("s", "accounts", "acme")
	b := dial(t, e).start() // another client of the organisation
	b.auth(token(t, schema.Claims{Orgs: []string{"acme"}, WriteOrgs: []string{"acme"}}))
	b.subscribe("s", "accounts", "acme")
	a.waitReady("s", 1)
	b.waitReady("s", 1)
	b.sendJSON(mutateFrame("client-b", 1, `{"table":"accounts","row":{"org":"acme","id":"500","balance":"7"}}`))
	b.waitFrame(10*time.Second, "b's reply", func(f schema.ServerFrame) bool { return f.Type == schema.FrameMutation })

	// One at a time: the writer answers a mutation that overtook its
	// predecessor with mutation_out_of_order (the client sends it again).
	for i := int64(1); i <= 6; i++ {
		args := `{"table":"accounts","row":{"org":"acme","id":"` + strconv.FormatInt(i, 10) + `","balance":"1"}}`
		if i == 6 {
			args = `{"table":"accounts","row":{"org":"other","id":"9","balance":"1"}}`
		}
		a.sendJSON(mutateFrame("client-a", i, args))
		f := a.waitFrame(10*time.Second, "reply", func(f schema.ServerFrame) bool { return f.Type == schema.FrameMutation && f.MutationID == i })
		want := schema.MutationApplied
		if i == 6 {
			want = schema.MutationRejected
			if f.Code != schema.MutationCodeForbidden {
				t.Errorf("mutation 6: code %q, want forbidden", f.Code)
			}
		}
		if f.Status != want {
			t.Errorf("mutation %d: %+v", i, f)
		}
	}
	// Every mutation is confirmed exactly once, to a only, in a commit
	// whose parts carry the mutation's row.
	// The rejection (6) is recorded too, so it is confirmed as well.
	waitFor(t, 10*time.Second, "confirmations", func() bool { return len(confirmed(a)) == 6 })
	if got := confirmed(a); !slices.Equal(got, []int64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("confirmed %v", got)
	}
	waitFor(t, 10*time.Second, "b's confirmation", func() bool { return slices.Equal(confirmed(b), []int64{1}) })
	for _, f := range a.frames() {
		if f.Type == schema.FramePart && f.Table == schema.MutationsTable {
			t.Fatal("a mutation record was forwarded as a part")
		}
	}
	want := e.tableRows("accounts", "acme")
	waitFor(t, 10*time.Second, "views converge", func() bool {
		return slices.Equal(a.viewOf("s"), want) && slices.Equal(b.viewOf("s"), want)
	})
	if len(want) != 6 {
		t.Fatalf("table has %d rows", len(want))
	}
	var n int
	if err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM accounts WHERE org = 'other'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("forbidden mutation wrote %d rows (%v)", n, err)
	}
	// A confirmation arrives in the commit of the transaction holding the
	// row: the part with the row precedes that commit.
	fr := a.frames()
	for i, f := range fr {
		if f.Type != schema.FrameCommit || len(f.Confirmed) == 0 || f.Confirmed[0] == 6 {
			continue
		}
		found := false
		for _, p := range fr[:i] {
			if p.Type == schema.FramePart && p.XID == f.XID {
				found = true
			}
		}
		if !found {
			t.Errorf("commit %s confirms %v without its part", f.XID, f.Confirmed)
		}
	}
}

func confirmed(c *tclient) []int64 {
	var out []int64
	for _, f := range c.frames() {
		if f.Type == schema.FrameCommit {
			out = append(out, f.Confirmed...)
		}
	}
	return out
}

// A transaction touching two tables of one organisation reaches a client
// subscribed to both as one unit: one commit after both parts.
func TestMultiTableTransaction(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"acme"}}))
	c.subscribe("a", "accounts", "acme")
	c.subscribe("t", "todos", "acme")
	c.waitReady("a", 1)
	c.waitReady("t", 1)
	ctx := context.Background()
	for i := range 20 {
		tx, err := e.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO accounts (org, id, balance) VALUES ('acme', $1, 1)`, i); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO todos (org, id, title) VALUES ('acme', $1, 'x')`, i); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Every visible state has as many accounts as todos.
	waitFor(t, 10*time.Second, "all commits", func() bool { return len(c.viewOf("t")) == 20 })
	var commits int
	parts := map[schema.XID8]int{}
	for _, f := range c.frames() {
		switch f.Type {
		case schema.FramePart:
			parts[f.XID]++
		case schema.FrameCommit:
			commits++
			if parts[f.XID] != 2 {
				t.Errorf("commit of %s after %d parts", f.XID, parts[f.XID])
			}
		}
	}
	if commits != 20 {
		t.Fatalf("%d commits, want 20", commits)
	}
	if got := len(c.viewOf("a")); got != 20 {
		t.Fatalf("%d accounts", got)
	}
	_ = strings.Contains
}

// Without a writer a mutation is answered rejected/unavailable in time
// (not final: the client sends it again).
func TestMutationWithoutWriter(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.MutationTimeout = 300 * time.Millisecond }})
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"acme"}, WriteOrgs: []string{"acme"}}))
	c.sendJSON(mutateFrame("c1", 1, `{"table":"accounts","row":{"org":"acme","id":"1","balance":"1"}}`))
	f := c.waitFrame(5*time.Second, "reply", func(f schema.ServerFrame) bool { return f.Type == schema.FrameMutation })
	if f.Status != schema.MutationRejected || f.Code != schema.ErrCodeUnavailable || schema.MutationCodeFinal(f.Code) {
		t.Fatalf("reply %+v", f)
	}
	c.sendJSON(schema.ClientFrame{Type: schema.FrameMutate, ClientID: "c1", MutationID: 0, Mutator: "insert"})
	c.waitFrame(5*time.Second, "bad mutate", isErr("", schema.ErrCodeBadFrame))
}

// A transaction touching two organisations reaches a client that follows
// both as one commit (strictly increasing LSNs on the connection), and a
// client of one organisation gets its part only.
func TestMultiOrgTransaction(t *testing.T) {
	e := newEnv(t, envOpts{})
	both := dial(t, e).start()
	both.auth(token(t, schema.Claims{Orgs: []string{"o1", "o2"}}))
	both.subscribe("a", "accounts", "o1")
	both.subscribe("b", "accounts", "o2")
	one := dial(t, e).start()
	one.auth(token(t, schema.Claims{Orgs: []string{"o2"}}))
	one.subscribe("b", "accounts", "o2")
	both.waitReady("a", 1)
	both.waitReady("b", 1)
	one.waitReady("b", 1)
	ctx := context.Background()
	for i := range 10 {
		tx, err := e.pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, org := range []string{"o1", "o2"} {
			if _, err := tx.Exec(ctx, `INSERT INTO accounts (org, id, balance) VALUES ($1, $2, 1)`, org, i); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "both orgs", func() bool { return len(both.viewOf("a")) == 10 && len(both.viewOf("b")) == 10 })
	waitFor(t, 10*time.Second, "one org", func() bool { return len(one.viewOf("b")) == 10 })
	count := func(c *tclient) (commits int) {
		for _, f := range c.frames() {
			if f.Type == schema.FrameCommit {
				commits++
			}
			if f.Type == schema.FramePart && f.Org == "o1" && c == one {
				t.Error("a part of another organisation")
			}
		}
		return commits
	}
	if n := count(both); n != 10 {
		t.Fatalf("multi-org client got %d commits, want 10", n)
	}
	if n := count(one); n != 10 {
		t.Fatalf("single-org client got %d commits", n)
	}
}

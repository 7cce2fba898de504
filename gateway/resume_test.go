package gateway

import (
	"context"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// A client offline while rows are inserted, updated and deleted resumes by
// cursor and receives only the changes (at most 1.1x the rows changed), and
// ends identical to the table.
func TestResumeSendsOnlyChanges(t *testing.T) {
	e := newEnv(t, envOpts{})
	for i := range 500 {
		e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', $1, 'initial')`, i)
	}
	tok := token(t, schema.Claims{Orgs: []string{"acme"}})
	c := dial(t, e).start()
	c.auth(tok)
	c.subscribe("s", "todos", "acme")
	c.waitReady("s", 1)
	c.ws.Close()
	<-c.closed
	ctx := context.Background()
	changed := 0
	for i := range 40 {
		e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', $1, 'new')`, 1000+i)
		changed++
	}
	tag, err := e.pool.Exec(ctx, `UPDATE todos SET title = 'upd' WHERE org = 'acme' AND id < 30`)
	if err != nil {
		t.Fatal(err)
	}
	changed += int(tag.RowsAffected())
	tag, err = e.pool.Exec(ctx, `DELETE FROM todos WHERE org = 'acme' AND id >= 100 AND id < 130`)
	if err != nil {
		t.Fatal(err)
	}
	changed += int(tag.RowsAffected())
	r := dial(t, e).start()
	r.auth(tok)
	r.resume(c, "s")
	r.waitReady("s", 1)
	ops := 0
	for _, f := range r.frames() {
		if f.Type == schema.FrameSnapshot && f.ID == "s" {
			ops += len(f.Ops)
		}
		if f.Type == schema.FrameSnapshotBegin && f.Mode != schema.SnapshotResume {
			t.Fatalf("mode %q", f.Mode)
		}
	}
	if ops > changed*11/10 {
		t.Fatalf("resume sent %d operations for %d changed rows", ops, changed)
	}
	want := e.tableRows("todos", "acme")
	waitFor(t, 10*time.Second, "converges", func() bool { return slices.Equal(r.viewOf("s"), want) })
	t.Logf("%d rows changed, %d operations sent", changed, ops)
}

// Readiness, metrics and a graceful shutdown (close code 1001).
func TestReadyMetricsShutdown(t *testing.T) {
	e := newEnv(t, envOpts{})
	resp, err := http.Get(e.srv.URL + PathReady)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %d %s", resp.StatusCode, body)
	}
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"acme"}}))
	c.subscribe("s", "todos", "acme")
	c.waitReady("s", 1)
	e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', 1, 'x')`)
	c.waitFrame(10*time.Second, "commit", func(f schema.ServerFrame) bool { return f.Type == schema.FrameCommit })
	for name, v := range map[string]float64{
		"clients":       testutilValue(e.gw.m.clients),
		"subscriptions": testutilValue(e.gw.m.subscriptions),
		"topics":        testutilValue(e.gw.m.topics),
		"messages out":  testutilValue(e.gw.m.messagesOut),
	} {
		if v < 1 {
			t.Errorf("metric %s = %v", name, v)
		}
	}
	mfs, err := e.reg.Gather()
	if err != nil || len(mfs) < 5 {
		t.Fatalf("registry: %d families, %v", len(mfs), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	<-c.closed
	if got := closeCode(c.closeErr); got != closeGoingAway {
		t.Fatalf("close code %d (%v)", got, c.closeErr)
	}
	if e.gw.Ready() {
		t.Fatal("ready after shutdown")
	}
}

// A checkpoint starts no writer of its own (it waits for the connection's
// next write), yet reaches a connection that receives nothing else: here
// every commit is in another organisation.
func TestCheckpointReachesQuietConnection(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"acme"}}))
	c.subscribe("s", "todos", "acme")
	c.waitReady("s", 1)
	var ready schema.XID8
	for _, f := range c.frames() {
		if f.Type == schema.FrameReady && f.ID == "s" && f.Cursor != nil {
			ready = *f.Cursor
		}
	}
	i := 0
	c.waitFrame(15*time.Second, "a checkpoint past the ready cursor", func(f schema.ServerFrame) bool {
		if f.Type == schema.FrameCheckpoint && f.ID == "s" && f.Cursor != nil && *f.Cursor > ready {
			return true
		}
		i++
		e.exec(`INSERT INTO todos (org, id, title) VALUES ('globex', $1, 'x')`, i) // moves xmin on
		return false
	})
	for _, f := range c.frames() {
		if f.Type == schema.FrameCommit || f.Type == schema.FramePart {
			t.Fatalf("the connection received %s frames of another organisation", f.Type)
		}
	}
}

package gateway

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// A subscription with a column list gets projected rows (snapshot and live,
// tagged with its id) while another subscription of the same (table, org)
// on the same connection gets the shared full rows.
func TestColumnProjection(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', 1, 'a')`)
	c := dial(t, e).start()
	c.auth(token(t, schema.Claims{Orgs: []string{"acme"}}))
	c.mu.Lock()
	c.subs["p"] = &tsub{table: "todos", org: "acme", cols: true}
	c.mu.Unlock()
	c.sendJSON(schema.ClientFrame{Type: schema.FrameSubscribe, ID: "p", Table: "todos", Org: "acme", Columns: []string{"title"}})
	c.subscribe("full", "todos", "acme")
	c.waitReady("p", 1)
	c.waitReady("full", 1)
	e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', 2, 'b')`)
	e.exec(`UPDATE todos SET done = true WHERE org = 'acme' AND id = 1`)
	waitFor(t, 10*time.Second, "live rows", func() bool { return len(c.viewOf("p")) == 2 && len(c.viewOf("full")) == 2 })
	keys := func(row string) []string {
		var m map[string]any
		_ = json.Unmarshal([]byte(row), &m)
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	for _, row := range c.viewOf("p") {
		if got := keys(row); !slices.Equal(got, []string{"id", "org", "title"}) {
			t.Fatalf("projected row has columns %v", got)
		}
	}
	want := e.tableRows("todos", "acme")
	waitFor(t, 10*time.Second, "full view", func() bool { return slices.Equal(c.viewOf("full"), want) })
	tagged := 0
	for _, f := range c.frames() {
		if f.Type == schema.FramePart && f.ID == "p" {
			tagged++
		}
	}
	if tagged < 2 {
		t.Fatalf("%d projected parts", tagged)
	}
}

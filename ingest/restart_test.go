package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// TestRestarts: the ingest survives a Postgres crash and restart and a
// NATS restart; commits made after each still arrive.
func TestRestarts(t *testing.T) {
	pg := testenv.StartPostgres(t)
	e := newEnvOn(t, pg)
	ing := e.start(t, e.config(t))
	c := collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	has := func(id int) func([]rec) bool {
		return func(recs []rec) bool {
			for _, r := range recs {
				if r.part == nil {
					continue
				}
				for _, o := range r.part.Ops {
					var row struct{ ID string }
					_ = json.Unmarshal(o.Row, &row)
					if row.ID == fmt.Sprint(id) {
						return true
					}
				}
			}
			return false
		}
	}
	insert := func(id int) {
		t.Helper()
		e.exec(t, "INSERT INTO todos (org_id, id) VALUES ('r', $1)", id)
	}
	insert(1)
	c.wait(10*time.Second, "row 1", has(1))

	pg.Kill(t)
	waitFor(t, 10*time.Second, "ingest to notice", func() bool { return !ing.Ready() })
	pg.Start(t)
	conn, err := pgx.Connect(context.Background(), e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	e.conn = conn
	insert(2)
	c.wait(30*time.Second, "row 2 after a Postgres restart", has(2))

	e.nats.Restart(t)
	c = collect(t, e.nats.Connect(t), "sync.>", schema.SubjectControl)
	insert(3)
	c.wait(30*time.Second, "row 3 after a NATS restart", has(3))
	if !ing.Healthy() {
		t.Errorf("not healthy after restarts: %+v", ing.State())
	}
}

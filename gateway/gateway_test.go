package gateway

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// Writers commit continuously while clients subscribe at different moments;
// every client's final view equals the table.
func TestSnapshotLiveMerge(t *testing.T) {
	e := newEnv(t, envOpts{})
	for i := range 200 {
		e.exec(`INSERT INTO todos (org, id, title) VALUES ('acme', $1, $2)`, i, fmt.Sprint("t", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for n := 0; ctx.Err() == nil; n++ {
				id := r.IntN(300)
				var err error
				switch r.IntN(4) {
				case 0:
					_, err = e.pool.Exec(ctx, `DELETE FROM todos WHERE org='acme' AND id=$1`, id)
				default:
					_, err = e.pool.Exec(ctx, `INSERT INTO todos (org, id, title) VALUES ('acme', $1, $2)
						ON CONFLICT (org, id) DO UPDATE SET title = excluded.title`, id, fmt.Sprint("w", w, "-", n))
				}
				if err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	tok := token(t, schema.Claims{Orgs: []string{"acme"}})
	var clients []*tclient
	for range 4 {
		c := dial(t, e).start()
		c.auth(tok)
		c.subscribe("s", "todos", "acme")
		clients = append(clients, c)
		c.waitReady("s", 1)
		// Let live commits reach this client before the next one subscribes.
		c.waitFrame(10*time.Second, "a live commit", func(f schema.ServerFrame) bool { return f.Type == schema.FrameCommit && f.ID == "" })
	}
	cancel()
	wg.Wait()
	want := e.tableRows("todos", "acme")
	for i, c := range clients {
		waitFor(t, 15*time.Second, fmt.Sprint("client ", i, " converges"), func() bool {
			return slices.Equal(c.viewOf("s"), want)
		})
		n := 0
		for _, f := range c.frames() {
			if f.Type == schema.FrameCommit {
				n++
			}
		}
		t.Logf("client %d: %d commits, %d frames", i, n, len(c.frames()))
	}
}

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/client"
)

// TestMutationBurst: a client with 200 pending mutations (as after coming
// back online) gets them all applied in order without a single
// mutation_out_of_order round trip. The gateway forwards one connection's
// mutations to the writers in the order they were sent; forwarded
// concurrently, writers of a queue group receive them out of order, answer
// mutation_out_of_order, and the client resends after a back-off, a few
// mutations per round.
func TestMutationBurst(t *testing.T) {
	tp := Start(t, Options{Writers: 2})
	c := Dial(t, tp.Gateways[0].URL, writeToken(t, []string{"acme"}, []string{"acme"}))
	Subscribe(t, c, "chain", "acme")
	var ps []*client.Pending
	for i := 1; i <= 200; i++ {
		row := map[string]any{"org": "acme", "id": fmt.Sprint(i), "prev": nil}
		if i > 1 {
			row["prev"] = fmt.Sprint(i - 1)
		}
		p, err := c.Mutate(context.Background(), "insert", insertArgs{Table: "chain", Row: row})
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	t0 := time.Now()
	waitAll(t, ps, 15*time.Second)
	t.Logf("200 mutations settled in %v", time.Since(t0))
	if n := tp.Gateways[0].Counter(t, "ripple_gateway_mutations_total", map[string]string{"status": "rejected"}); n != 0 {
		t.Fatalf("%v mutations were rejected (out of order) on the way; want 0", n)
	}
	if n := tp.Gateways[0].Counter(t, "ripple_gateway_mutations_total", map[string]string{"status": "applied"}); n != 200 {
		t.Fatalf("%v mutations applied, want 200", n)
	}
}

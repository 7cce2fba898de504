package catchup_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  catchup.Config
	}{
		{"no database URL", catchup.Config{}},
		{"negative wait", catchup.Config{PrimaryURL: "postgres://x/y", ReplicaWaitTimeout: -time.Second}},
		{"negative batch rows", catchup.Config{PrimaryURL: "postgres://x/y", BatchRows: -1}},
		{"negative batch bytes", catchup.Config{PrimaryURL: "postgres://x/y", BatchBytes: -1}},
		{"negative pool", catchup.Config{PrimaryURL: "postgres://x/y", MaxConns: -1}},
		{"unparsable URL", catchup.Config{ReplicaURL: "postgres://x:notaport/y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := catchup.New(context.Background(), tt.cfg); !errors.Is(err, catchup.ErrBadConfig) {
				t.Fatalf("err = %v, want ErrBadConfig", err)
			}
		})
	}
}

func TestBadCursorAndMetrics(t *testing.T) {
	f := newFixture(t, testenv.SharedPostgres(t))
	f.exec(t, "INSERT INTO todos (id, org_id) VALUES (1, 'acme')")
	reg := prometheus.NewRegistry()
	c := newCatchup(t, catchup.Config{PrimaryURL: f.url, Registerer: reg})
	ctx := t.Context()
	if _, _, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme", Cursor: ptr(schema.XID8(1 << 60))}); !errors.Is(err, catchup.ErrBadCursor) {
		t.Fatalf("cursor from the future: err = %v, want ErrBadCursor", err)
	}
	if _, _, err := collect(ctx, c, catchup.Request{Table: "todos", Org: "acme"}); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP ripple_catchup_ops_total Operations (rows and tombstone deletes) sent by catch-ups.
# TYPE ripple_catchup_ops_total counter
ripple_catchup_ops_total 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ripple_catchup_ops_total"); err != nil {
		t.Fatal(err)
	}
	// A second Catchup on the same registry is refused, not silently merged.
	if _, err := catchup.New(ctx, catchup.Config{PrimaryURL: f.url, Registerer: reg}); err == nil {
		t.Fatal("second registration accepted")
	}
}

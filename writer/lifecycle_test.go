package writer_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/writer"
)

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name string
		cfg  writer.Config
		ok   bool
	}{
		{"minimal", writer.Config{DatabaseURL: "postgres://x@127.0.0.1/db", NATSURL: "nats://127.0.0.1:4222"}, true},
		{"no database", writer.Config{NATSURL: "nats://127.0.0.1:4222"}, false},
		{"no nats", writer.Config{DatabaseURL: "postgres://x@127.0.0.1/db"}, false},
		{"bad database url", writer.Config{DatabaseURL: "::nope", NATSURL: "nats://127.0.0.1:4222"}, false},
		{"negative conns", writer.Config{DatabaseURL: "postgres://x@127.0.0.1/db", NATSURL: "n", MaxConns: -1}, false},
		{"negative timeout", writer.Config{DatabaseURL: "postgres://x@127.0.0.1/db", NATSURL: "n", StatementTimeout: -time.Second}, false},
		{"negative attempts", writer.Config{DatabaseURL: "postgres://x@127.0.0.1/db", NATSURL: "n", MaxAttempts: -1}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := writer.New(c.cfg)
			if c.ok && err != nil {
				t.Fatal(err)
			}
			if !c.ok && !errors.Is(err, writer.ErrBadConfig) {
				t.Fatalf("err %v, want ErrBadConfig", err)
			}
		})
	}
}

func TestRegister(t *testing.T) {
	e := setup(t)
	w, err := writer.New(writer.Config{DatabaseURL: e.url, NATSURL: e.nats.URL(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	noop := func(context.Context, *writer.Tx, schema.Claims, json.RawMessage) (any, error) { return nil, nil }
	for _, name := range []string{"insert", "update", "delete"} {
		if err := w.Register(name, noop); !errors.Is(err, writer.ErrDuplicateMutator) {
			t.Errorf("Register(%q): %v", name, err)
		}
	}
	if err := w.Register("mine", noop); err != nil {
		t.Fatal(err)
	}
	if err := w.Register("mine", noop); !errors.Is(err, writer.ErrDuplicateMutator) {
		t.Errorf("second Register: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, 10*time.Second, "ready", func() bool { return w.Ready(ctx) == nil })
	if err := w.Register("late", noop); !errors.Is(err, writer.ErrRunning) {
		t.Errorf("Register after Run: %v", err)
	}
	if err := w.Run(ctx); !errors.Is(err, writer.ErrRunning) {
		t.Errorf("second Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := w.Ready(context.Background()); err == nil {
		t.Error("ready after Run returned")
	}
}

// TestDrainOnShutdown: a mutation in flight when the writer is told to stop
// still completes and gets its reply; Run returns only then.
func TestDrainOnShutdown(t *testing.T) {
	e := setup(t)
	w, err := writer.New(writer.Config{DatabaseURL: e.url, NATSURL: e.nats.URL(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, 10*time.Second, "ready", func() bool { return w.Ready(ctx) == nil })
	if err := w.Healthy(ctx); err != nil {
		t.Fatal(err)
	}

	bg := context.Background()
	if _, err := e.db.Exec(bg, `INSERT INTO accounts VALUES ('A', 'acme', 1)`); err != nil {
		t.Fatal(err)
	}
	hold, err := e.db.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(bg, `SELECT 1 FROM accounts WHERE id = 'A' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	nc := e.nats.Connect(t)
	type result struct {
		rep schema.MutationReply
		err error
	}
	res := make(chan result, 1)
	go func() {
		rep, _, err := send(bg, nc, schema.MutationRequest{ClientID: "drain", MutationID: 1, Mutator: "update", Claims: claims("acme"),
			Args: args(map[string]any{"table": "accounts", "key": map[string]any{"id": "A"}, "set": map[string]any{"balance": 2}})}, 20*time.Second)
		res <- result{rep, err}
	}()
	watch := e.pg.Connect(t, dbName(e.url))
	waitFor(t, 10*time.Second, "the mutation waiting for the row lock", func() bool {
		var n int
		err := watch.QueryRow(bg, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ripple-writer' AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n == 1
	})
	cancel()
	waitFor(t, 10*time.Second, "not ready after cancel", func() bool { return w.Ready(bg) != nil })
	select {
	case err := <-done:
		t.Fatalf("Run returned (%v) with a mutation in flight", err)
	default:
	}
	if err := hold.Commit(bg); err != nil {
		t.Fatal(err)
	}
	r := <-res
	if r.err != nil || r.rep.Status != schema.MutationApplied {
		t.Fatalf("in-flight mutation: %+v %v", r.rep, r.err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// Environment of a re-executed test binary running an ingest (role "ingest").
const (
	envDB     = "RIPPLE_TEST_DATABASE_URL"
	envNATS   = "RIPPLE_TEST_NATS_URL"
	envSlot   = "RIPPLE_TEST_SLOT"
	envMax    = "RIPPLE_TEST_MAX_BUFFERED"
	envMaxMsg = "RIPPLE_TEST_MAX_MESSAGE"
)

func TestMain(m *testing.M) {
	if testenv.Role() == "ingest" {
		os.Exit(runIngestChild())
	}
	os.Exit(testenv.Main(m))
}

// runIngestChild runs an ingest until SIGTERM (or death by SIGKILL).
func runIngestChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cfg := Config{
		DatabaseURL:         os.Getenv(envDB),
		NATSURL:             os.Getenv(envNATS),
		SlotName:            os.Getenv(envSlot),
		HeartbeatInterval:   200 * time.Millisecond,
		StandbyPollInterval: 200 * time.Millisecond,
		CheckpointInterval:  500 * time.Millisecond,
		Logger:              slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if v := os.Getenv(envMaxMsg); v != "" {
		fmt.Sscan(v, &cfg.MaxMessageBytes)
	}
	if v := os.Getenv(envMax); v != "" {
		fmt.Sscan(v, &cfg.MaxBufferedBytes)
	}
	ing, err := New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := ing.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// env is one test's database (migrated, with sync tables todos and lists
// rooted at org_id and a plain table that is not synced) and NATS server.
type env struct {
	pg   *testenv.Postgres
	url  string
	nats *testenv.NATS
	slot string
	conn *pgx.Conn
}

var slotSeq atomic.Int64

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

func slotName(t testing.TB) string {
	n := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(n) > 40 {
		n = n[:40]
	}
	return fmt.Sprintf("s_%s_%d_%d", n, os.Getpid(), slotSeq.Add(1))
}

const testSchema = `
CREATE TABLE todos (org_id text NOT NULL, id int8 NOT NULL, title text, done bool DEFAULT false, body text,
	PRIMARY KEY (org_id, id));
CREATE TABLE lists (org_id text NOT NULL, id int4 NOT NULL, name text, PRIMARY KEY (id));
CREATE TABLE plain (id serial PRIMARY KEY, v text);
`

func newEnv(t testing.TB) *env {
	t.Helper()
	return newEnvOn(t, testenv.SharedPostgres(t))
}

func newEnvOn(t testing.TB, pg *testenv.Postgres) *env {
	t.Helper()
	e := &env{pg: pg, url: pg.CreateDatabase(t), slot: slotName(t)}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	e.conn = conn
	if err := migrations.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, testSchema); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []string{"todos", "lists"} {
		if _, err := migrations.Enable(ctx, conn, tbl, "org_id"); err != nil {
			t.Fatal(err)
		}
	}
	e.nats = testenv.StartNATS(t)
	return e
}

func (e *env) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := e.conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (e *env) config(t testing.TB) Config {
	return Config{
		DatabaseURL:         e.url,
		NATSURL:             e.nats.URL(),
		SlotName:            e.slot,
		HeartbeatInterval:   100 * time.Millisecond,
		CheckpointInterval:  200 * time.Millisecond,
		StandbyPollInterval: 100 * time.Millisecond,
		Logger:              slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
}

// start runs an ingest in this process until the test ends.
func (e *env) start(t testing.TB, cfg Config) *Ingest {
	t.Helper()
	ing, stop := e.run(t, cfg)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ing
}

// run starts an ingest in this process, waits until it is ready and
// returns it with a function that stops it and returns what Run returned.
func (e *env) run(t testing.TB, cfg Config) (*Ingest, func() error) {
	t.Helper()
	ing, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ing.Run(ctx) }()
	waitFor(t, 20*time.Second, "ingest ready", func() bool { return ing.Ready() })
	return ing, func() error {
		cancel()
		return <-done
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rec is one received NATS message, decoded by kind.
type rec struct {
	subject string
	kind    schema.Kind
	part    *schema.Part
	barrier *schema.Barrier
	hb      *schema.Heartbeat
	resync  *schema.Resync
	at      time.Time
}

// collector records every message of its subjects in arrival order: one
// wildcard subscription (one delivery goroutine, so the publisher's order
// across subjects is kept) that stamps each message when NATS delivers it.
type collector struct {
	t    testing.TB
	mu   sync.Mutex
	recs []rec
	ch   chan stamped
	done chan struct{}
}

type stamped struct {
	m  *nats.Msg
	at time.Time
}

func collect(t testing.TB, nc *nats.Conn, subjects ...string) *collector {
	t.Helper()
	c := &collector{t: t, ch: make(chan stamped, 1<<16), done: make(chan struct{})}
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		for _, s := range subjects {
			if subjectMatches(s, m.Subject) {
				c.ch <- stamped{m, time.Now()}
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		for sm := range c.ch {
			r, err := decodeRec(sm.m)
			if err != nil {
				t.Errorf("decode %s: %v: %.300s", sm.m.Subject, err, sm.m.Data)
				continue
			}
			r.at = sm.at
			c.mu.Lock()
			c.recs = append(c.recs, r)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		nc.Close()
		close(c.ch)
		<-c.done
	})
	return c
}

// subjectMatches reports whether subject matches a NATS subscription
// pattern with '*' and '>' wildcards.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func decodeRec(m *nats.Msg) (rec, error) {
	r := rec{subject: m.Subject, at: time.Now()}
	var env schema.Envelope
	if err := json.Unmarshal(m.Data, &env); err != nil {
		return r, err
	}
	r.kind = env.K
	var err error
	switch env.K {
	case schema.KindPart:
		r.part = new(schema.Part)
		err = json.Unmarshal(m.Data, r.part)
	case schema.KindBarrier:
		r.barrier = new(schema.Barrier)
		err = json.Unmarshal(m.Data, r.barrier)
	case schema.KindHeartbeat:
		r.hb = new(schema.Heartbeat)
		err = json.Unmarshal(m.Data, r.hb)
	case schema.KindResync:
		r.resync = new(schema.Resync)
		err = json.Unmarshal(m.Data, r.resync)
	default:
		err = fmt.Errorf("unknown kind %q", env.K)
	}
	return r, err
}

func (c *collector) snapshot() []rec {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]rec(nil), c.recs...)
}

// wait polls until cond holds over the received messages.
func (c *collector) wait(d time.Duration, what string, cond func([]rec) bool) []rec {
	c.t.Helper()
	var recs []rec
	waitFor(c.t, d, what, func() bool {
		recs = c.snapshot()
		return cond(recs)
	})
	return recs
}

// maxD is the largest heartbeat D received.
func maxD(recs []rec) schema.LSN {
	var d schema.LSN
	for _, r := range recs {
		if r.hb != nil {
			d = max(d, r.hb.D)
		}
	}
	return d
}

// currentLSN returns pg_current_wal_lsn() on the test database.
func (e *env) currentLSN(t testing.TB) schema.LSN {
	t.Helper()
	var s string
	if err := e.conn.QueryRow(context.Background(), "SELECT pg_current_wal_lsn()::text").Scan(&s); err != nil {
		t.Fatal(err)
	}
	l, err := schema.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// commitLSN runs sqls in one transaction and returns an LSN at or past its
// commit (pg_current_wal_insert_lsn right after).
func (e *env) txn(t testing.TB, sqls ...string) schema.LSN {
	t.Helper()
	ctx := context.Background()
	tx, err := e.conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sqls {
		if _, err := tx.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return e.currentLSN(t)
}

// lastParts returns the last chunks of parts received, by subject.
func lastParts(recs []rec) map[string][]*schema.Part {
	out := map[string][]*schema.Part{}
	for _, r := range recs {
		if r.part != nil && r.part.Last {
			out[r.subject] = append(out[r.subject], r.part)
		}
	}
	return out
}

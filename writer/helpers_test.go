package writer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
	"github.com/ripple-sync/ripple/writer"
)

const (
	roleWriter = "writer"
	envDB      = "RIPPLE_WRITER_TEST_DB"
	envNATS    = "RIPPLE_WRITER_TEST_NATS"
)

func TestMain(m *testing.M) {
	if testenv.Role() == roleWriter {
		os.Exit(runChildWriter())
	}
	os.Exit(testenv.Main(m))
}

// runChildWriter runs a writer as a child process until SIGTERM.
func runChildWriter() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	w, err := writer.New(writer.Config{DatabaseURL: os.Getenv(envDB), NATSURL: os.Getenv(envNATS), Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := registerTestMutators(w); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// testDDL creates the tables the tests write.
const testDDL = `
CREATE TABLE todos (
    id     text PRIMARY KEY,
    org    text NOT NULL,
    title  text NOT NULL CONSTRAINT title_not_empty CHECK (title <> ''),
    n      int8,
    amount numeric(10,2),
    due    timestamptz,
    tags   text[],
    meta   jsonb,
    seq    bigserial
);
CREATE TABLE accounts (
    id      text PRIMARY KEY,
    org     text NOT NULL,
    balance int8 NOT NULL
);
CREATE TABLE local_notes (id text PRIMARY KEY, org text NOT NULL);
CREATE TABLE flags (
    id   text PRIMARY KEY,
    org  text NOT NULL,
    done bool NOT NULL DEFAULT false,
    addr inet,
    code char(4)
);
`

type env struct {
	pg   *testenv.Postgres
	url  string
	nats *testenv.NATS
	db   *pgx.Conn
}

func setup(t testing.TB) *env {
	t.Helper()
	return setupOn(t, testenv.SharedPostgres(t))
}

func setupOn(t testing.TB, pg *testenv.Postgres) *env {
	t.Helper()
	url := pg.CreateDatabase(t)
	conn := pg.Connect(t, dbName(url))
	ctx := context.Background()
	if err := migrations.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, testDDL); err != nil {
		t.Fatal(err)
	}
	for _, tb := range []string{"todos", "accounts", "flags"} {
		if _, err := migrations.Enable(ctx, conn, tb, "org"); err != nil {
			t.Fatal(err)
		}
	}
	return &env{pg: pg, url: url, nats: testenv.StartNATS(t), db: conn}
}

func dbName(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		panic(err)
	}
	return cfg.Database
}

// startWriter runs an in-process writer until the test ends and waits until
// it serves. It returns the writer and its metrics registry.
func (e *env) startWriter(t testing.TB, opts ...func(*writer.Config)) (*writer.Writer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := writer.Config{
		DatabaseURL: e.url,
		NATSURL:     e.nats.URL(),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		Registerer:  reg,
	}
	for _, o := range opts {
		o(&cfg)
	}
	w, err := writer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := registerTestMutators(w); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("writer Run: %v", err)
		}
	})
	waitFor(t, 10*time.Second, "writer ready", func() bool { return w.Ready(context.Background()) == nil })
	return w, reg
}

// answered counts the requests a writer answered.
func answered(reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "ripple_writer_mutations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func claims(write ...string) schema.Claims {
	return schema.Claims{Subject: "user-1", Orgs: append([]string{"acme", "globex"}, write...), WriteOrgs: write, Expires: time.Now().Add(time.Hour)}
}

// send makes one request like a gateway would and decodes the reply; it
// returns the raw reply too.
func send(ctx context.Context, nc *nats.Conn, req schema.MutationRequest, timeout time.Duration) (schema.MutationReply, []byte, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return schema.MutationReply{}, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	msg, err := nc.RequestWithContext(ctx, schema.SubjectMutate, data)
	if err != nil {
		return schema.MutationReply{}, nil, err
	}
	var rep schema.MutationReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return rep, msg.Data, err
	}
	return rep, msg.Data, nil
}

func mustSend(t *testing.T, nc *nats.Conn, req schema.MutationRequest) (schema.MutationReply, []byte) {
	t.Helper()
	rep, raw, err := send(context.Background(), nc, req, 10*time.Second)
	if err != nil {
		t.Fatalf("request %s/%d: %v", req.ClientID, req.MutationID, err)
	}
	if rep.ClientID != req.ClientID || rep.MutationID != req.MutationID {
		t.Fatalf("reply for %s/%d names %s/%d", req.ClientID, req.MutationID, rep.ClientID, rep.MutationID)
	}
	return rep, raw
}

func args(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Test mutators, registered by every writer of the tests (in process and
// child processes alike).
func registerTestMutators(w *writer.Writer) error {
	return errors.Join(
		w.Register("transfer", transfer),
		w.Register("insert_then_fail", insertThenFail),
		w.Register("swallow_error", swallowError),
		w.Register("panics", func(ctx context.Context, tx *writer.Tx, claims schema.Claims, _ json.RawMessage) (any, error) {
			if _, err := tx.Insert(ctx, "todos", map[string]any{"id": "before-panic", "org": claims.WriteOrgs[0], "title": "x"}); err != nil {
				return nil, err
			}
			panic("boom")
		}),
		w.Register("noop", func(context.Context, *writer.Tx, schema.Claims, json.RawMessage) (any, error) {
			return map[string]string{"ok": "yes"}, nil
		}),
	)
}

type transferArgs struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Amount int64  `json:"amount"`
}

// transfer moves amount from one account to another and never lets an
// account go below zero.
func transfer(ctx context.Context, tx *writer.Tx, _ schema.Claims, raw json.RawMessage) (any, error) {
	var a transferArgs
	if err := json.Unmarshal(raw, &a); err != nil || a.From == "" || a.To == "" || a.From == a.To || a.Amount <= 0 {
		return nil, &writer.Rejection{Code: writer.CodeInvalidArgument, Message: "transfer needs from, to (different) and a positive amount"}
	}
	rows, err := tx.Query(ctx, `SELECT id, org, balance FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE`, []string{a.From, a.To})
	if err != nil {
		return nil, err
	}
	type acct struct {
		org     string
		balance int64
	}
	accts := map[string]acct{}
	for rows.Next() {
		var id string
		var ac acct
		if err := rows.Scan(&id, &ac.org, &ac.balance); err != nil {
			return nil, err
		}
		accts[id] = ac
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	from, ok1 := accts[a.From]
	to, ok2 := accts[a.To]
	if !ok1 || !ok2 {
		return nil, &writer.Rejection{Code: writer.CodeNotFound, Message: "no such account"}
	}
	for _, org := range []string{from.org, to.org} {
		if err := tx.Authorize(org, "accounts"); err != nil {
			return nil, err
		}
	}
	if from.balance < a.Amount {
		return nil, writer.Reject("insufficient_funds", "account %s holds %d, cannot transfer %d", a.From, from.balance, a.Amount)
	}
	if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance - $2 WHERE id = $1`, a.From, a.Amount); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $2 WHERE id = $1`, a.To, a.Amount); err != nil {
		return nil, err
	}
	return map[string]int64{"from_balance": from.balance - a.Amount}, nil
}

// insertThenFail inserts a valid todo and then an invalid one.
func insertThenFail(ctx context.Context, tx *writer.Tx, claims schema.Claims, raw json.RawMessage) (any, error) {
	if _, err := tx.Insert(ctx, "todos", map[string]any{"id": "first", "org": claims.WriteOrgs[0], "title": "ok"}); err != nil {
		return nil, err
	}
	return tx.Insert(ctx, "todos", map[string]any{"id": "second", "org": claims.WriteOrgs[0], "title": ""})
}

// swallowError writes a row, then runs a failing statement and pretends
// nothing happened.
func swallowError(ctx context.Context, tx *writer.Tx, claims schema.Claims, raw json.RawMessage) (any, error) {
	if _, err := tx.Insert(ctx, "todos", map[string]any{"id": "swallowed", "org": claims.WriteOrgs[0], "title": "x"}); err != nil {
		return nil, err
	}
	_, _ = tx.Exec(ctx, "SELECT 1/0")
	return "fine", nil
}

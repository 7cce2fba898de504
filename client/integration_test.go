package client

// Integration tests against the real system, in process: Postgres 15 and
// NATS from testenv, the ingest, catch-up, gateway and writer.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/gateway"
	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/ingest"
	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
	"github.com/ripple-sync/ripple/writer"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var itSecret = []byte("client-integration-secret")

const itSchema = `
CREATE TABLE accounts (org text NOT NULL, id int8 NOT NULL, balance int8 NOT NULL, PRIMARY KEY (org, id));
CREATE TABLE todos (org text NOT NULL, id int8 NOT NULL, title text, PRIMARY KEY (org, id));
`

var itSlot atomic.Int64

type itEnv struct {
	t     *testing.T
	pool  *pgxpool.Pool
	proxy *proxy
}

func newITEnv(t *testing.T) *itEnv {
	t.Helper()
	ctx := context.Background()
	pg := testenv.SharedPostgres(t)
	url := pg.CreateDatabase(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := migrations.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, itSchema); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []string{"accounts", "todos"} {
		if _, err := migrations.Enable(ctx, conn, tbl, "org"); err != nil {
			t.Fatal(err)
		}
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	nats := testenv.StartNATS(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	run := func(name string, fn func(context.Context) error) {
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- fn(rctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	ing, err := ingest.New(ingest.Config{DatabaseURL: url, NATSURL: nats.URL(), SlotName: fmt.Sprintf("client_it_%d_%d", os.Getpid(), itSlot.Add(1)),
		HeartbeatInterval: 100 * time.Millisecond, CheckpointInterval: 300 * time.Millisecond, StandbyPollInterval: 100 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run("ingest", ing.Run)
	w, err := writer.New(writer.Config{DatabaseURL: url, NATSURL: nats.URL(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run("writer", w.Run)
	cu, err := catchup.New(ctx, catchup.Config{PrimaryURL: url, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cu.Close)
	gw, err := gateway.New(ctx, gateway.Config{NATSURL: nats.URL(), Catchup: cu, Auth: auth.Config{HS256Secret: itSecret}, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = gw.Shutdown(sctx)
		srv.Close()
	})
	until(t, 30*time.Second, "gateway ready", gw.Ready)
	return &itEnv{t: t, pool: pool, proxy: newProxy(t, srv.Listener.Addr().String())}
}

func until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition with a deadline
	}
}

func (e *itEnv) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func (e *itEnv) dial(orgs ...string) *Client {
	e.t.Helper()
	tok, err := auth.SignHS256(itSecret, schema.Claims{Subject: "u", Orgs: orgs, WriteOrgs: orgs, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := Dial(e.t.Context(), Config{URL: "ws://" + e.proxy.addr() + gateway.PathWebSocket, Token: tok,
		ReconnectMin: 5 * time.Millisecond, ReconnectMax: 50 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(c.Close)
	return c
}

// table returns id -> column value of every row of table in org.
func (e *itEnv) table(table, org, col string) map[string]string {
	e.t.Helper()
	rows, err := e.pool.Query(context.Background(), fmt.Sprintf("SELECT id::text, coalesce(%s::text, '') FROM %s WHERE org = $1", col, table), org)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, v string
		if err := rows.Scan(&id, &v); err != nil {
			e.t.Fatal(err)
		}
		out[id] = v
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func view(s *Subscription, col string) map[string]string {
	out := map[string]string{}
	for _, r := range s.Rows() {
		v, _ := r[col].(string)
		out[r["id"].(string)] = v
	}
	return out
}

// proxy forwards TCP connections to the gateway and can cut them all.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve(c net.Conn) {
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	p.mu.Unlock()
	go func() { io.Copy(u, c); u.Close(); c.Close() }()
	io.Copy(c, u)
	c.Close()
	u.Close()
}

// cut closes every proxied connection; clients reconnect on their own.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// TestIntegrationBankAndTable: transfers commit continuously while a client
// subscribes mid-stream and its connection is cut twice; every sampled view
// holds the constant total, and the final views equal the tables.
func TestIntegrationBankAndTable(t *testing.T) {
	e := newITEnv(t)
	const accounts, start = 10, 100
	for i := 1; i <= accounts; i++ {
		e.exec("INSERT INTO accounts VALUES ('acme', $1, $2)", i, start)
	}
	ctx, stop := context.WithCancel(t.Context())
	var transfers atomic.Int64
	writerDone := make(chan error, 1)
	go func() {
		n := 0
		for ctx.Err() == nil {
			n++
			from, to := n%accounts+1, (n*7)%accounts+1
			if from == to {
				continue
			}
			err := pgx.BeginFunc(ctx, e.pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance - 3 WHERE org = 'acme' AND id = $1", from); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "INSERT INTO todos VALUES ('acme', $1, 'n') ON CONFLICT (org, id) DO UPDATE SET title = excluded.title || '+'", n%25); err != nil {
					return err
				}
				if n%4 == 0 {
					if _, err := tx.Exec(ctx, "DELETE FROM todos WHERE org = 'acme' AND id = $1", (n+11)%25); err != nil {
						return err
					}
				}
				_, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + 3 WHERE org = 'acme' AND id = $1", to)
				return err
			})
			if err != nil && ctx.Err() == nil {
				writerDone <- err
				return
			}
			transfers.Add(1)
		}
		writerDone <- nil
	}()
	until(t, 10*time.Second, "first transfers", func() bool { return transfers.Load() > 20 })

	c := e.dial("acme")
	bank, err := c.Subscribe(t.Context(), "accounts", "acme")
	if err != nil {
		t.Fatal(err)
	}
	todos, err := c.Subscribe(t.Context(), "todos", "acme")
	if err != nil {
		t.Fatal(err)
	}
	var samples atomic.Int64
	sampleErr := make(chan string, 1)
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for ctx.Err() == nil {
			rows := bank.Rows()
			if len(rows) == 0 {
				continue
			}
			sum := 0
			for _, r := range rows {
				n, _ := strconv.Atoi(r["balance"].(string))
				sum += n
			}
			if sum != accounts*start || len(rows) != accounts {
				sampleErr <- fmt.Sprintf("view of %d accounts totals %d", len(rows), sum)
				return
			}
			samples.Add(1)
		}
	}()
	if err := bank.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := todos.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := bank.KeyColumns(); strings.Join(got, ",") != "org,id" {
		t.Fatalf("key columns %v", got)
	}
	for range 2 {
		before := transfers.Load()
		e.proxy.cut()
		until(t, 10*time.Second, "transfers while reconnecting", func() bool { return transfers.Load() > before+20 })
	}
	stop()
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	<-samplerDone
	select {
	case msg := <-sampleErr:
		t.Fatal(msg)
	default:
	}
	wantBank, wantTodos := e.table("accounts", "acme", "balance"), e.table("todos", "acme", "title")
	until(t, 20*time.Second, "views equal the tables", func() bool {
		return maps.Equal(view(bank, "balance"), wantBank) && maps.Equal(view(todos, "title"), wantTodos)
	})
	t.Logf("%d transfers, %d consistent samples, %d todos", transfers.Load(), samples.Load(), len(wantTodos))
}

// TestIntegrationMutations: optimistic inserts through the gateway and the
// writer while the connection is cut; each is applied exactly once and never
// leaves the view; a write outside the token is rejected and rolled back.
func TestIntegrationMutations(t *testing.T) {
	e := newITEnv(t)
	c := e.dial("acme")
	todos, err := c.Subscribe(t.Context(), "todos", "acme")
	if err != nil {
		t.Fatal(err)
	}
	if err := todos.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	const n = 60
	var shown sync.Map // id -> true once Mutate returned
	flicker := make(chan string, 1)
	ctx, stop := context.WithCancel(t.Context())
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for ctx.Err() == nil {
			var ids []string
			shown.Range(func(k, _ any) bool { ids = append(ids, k.(string)); return true })
			v := view(todos, "title")
			for _, id := range ids {
				if _, ok := v[id]; !ok {
					select {
					case flicker <- "todo " + id + " left the view":
					default:
					}
					return
				}
			}
		}
	}()
	var pending []*Pending
	for i := 1; i <= n; i++ {
		id := strconv.Itoa(i)
		p, err := c.Mutate(t.Context(), "insert", map[string]any{"table": "todos", "row": map[string]any{"org": "acme", "id": id, "title": "m" + id}})
		if err != nil {
			t.Fatal(err)
		}
		shown.Store(id, true)
		pending = append(pending, p)
		if i%20 == 10 {
			e.proxy.cut()
		}
	}
	for _, p := range pending {
		if err := p.Wait(t.Context()); err != nil {
			t.Fatalf("mutation %d: %v", p.ID(), err)
		}
	}
	stop()
	<-samplerDone
	select {
	case msg := <-flicker:
		t.Fatal(msg)
	default:
	}
	if got := len(c.Pending()); got != 0 {
		t.Fatalf("%d mutations still pending", got)
	}
	want := e.table("todos", "acme", "title")
	if len(want) != n {
		t.Fatalf("table has %d todos, want %d", len(want), n)
	}
	if got := view(todos, "title"); !maps.Equal(got, want) {
		t.Fatalf("view %v\ntable %v", got, want)
	}
	if got := view(todos, "title"); len(todos.Synced()) != len(got) {
		t.Fatalf("synced %d rows, visible %d", len(todos.Synced()), len(got))
	}

	// Update through the built-in mutator, then a write outside the token.
	p, err := c.Mutate(t.Context(), "update", map[string]any{"table": "todos", "key": map[string]any{"org": "acme", "id": "1"}, "set": map[string]any{"title": "changed"}})
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := todos.Get("acme", "1"); r["title"] != "changed" {
		t.Fatalf("optimistic update not shown: %v", r)
	}
	if err := p.Wait(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := e.table("todos", "acme", "title")["1"]; got != "changed" {
		t.Fatalf("table title %q", got)
	}
	p, err = c.Mutate(t.Context(), "insert", map[string]any{"table": "todos", "row": map[string]any{"org": "other", "id": "1", "title": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	var me *MutationError
	if err := p.Wait(t.Context()); !errors.As(err, &me) || me.Code != schema.MutationCodeForbidden {
		t.Fatalf("write outside the token: %v", err)
	}
	if got := e.table("todos", "other", "title"); len(got) != 0 {
		t.Fatalf("rejected write reached the table: %v", got)
	}
}

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"os/signal"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/client"
	"github.com/ripple-sync/ripple/gateway"
	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/ingest"
	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
	"github.com/ripple-sync/ripple/writer"
)

// Roles of a re-executed test binary (see TestMain).
const roleWriter = "writer"

func TestMain(m *testing.M) {
	if testenv.Role() == roleWriter {
		os.Exit(runWriterChild())
	}
	os.Exit(testenv.Main(m))
}

// runWriterChild runs a writer as a child process (RIPPLE_E2E_DB,
// RIPPLE_E2E_NATS) until SIGTERM, so a test can SIGKILL it for real.
func runWriterChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	w, err := writer.New(writer.Config{DatabaseURL: os.Getenv("RIPPLE_E2E_DB"), NATSURL: os.Getenv("RIPPLE_E2E_NATS"),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go func() {
		for ctx.Err() == nil {
			if w.Ready(ctx) == nil {
				fmt.Println("writer ready")
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	if err := w.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// secret signs every test token.
var secret = []byte("e2e-secret")

// testSchema is every test's application schema: all tables are rooted at
// org. items.v is a per-row version the writers of a test increase with
// every update; chain rows reference their predecessor, so a chain insert
// applied out of order fails its foreign key.
const testSchema = `
CREATE TABLE items (org text NOT NULL, id int8 NOT NULL, v int8 NOT NULL DEFAULT 0, title text, PRIMARY KEY (org, id));
CREATE TABLE accounts (org text NOT NULL, id int8 NOT NULL, balance int8 NOT NULL, PRIMARY KEY (org, id));
CREATE TABLE chain (org text NOT NULL, id int8 NOT NULL, prev int8, PRIMARY KEY (org, id),
  FOREIGN KEY (org, prev) REFERENCES chain (org, id));
`

var syncTables = []string{"items", "accounts", "chain"}

// Options shape a Topology. The zero value is a primary and a streaming
// replica, one NATS server, an in-process ingest, one gateway (catch-up on
// the replica) and no writer.
type Options struct {
	// NoReplica runs without a replica: gateways run catch-up on the primary.
	NoReplica bool
	// SuperCluster puts the ingest and writers on cluster A and the
	// gateways on cluster B of a two-cluster NATS super-cluster.
	SuperCluster bool
	// Writers is the number of in-process writers.
	Writers int
	// Mutators are registered on every in-process writer.
	Mutators map[string]writer.Mutator
	// Gateways is the number of gateways (default 1).
	Gateways int
	// Gateway and Catchup adjust the configs of every gateway.
	Gateway func(*gateway.Config)
	Catchup func(*catchup.Config)
}

// Topology is one test's whole system.
type Topology struct {
	t       testing.TB
	PG      *testenv.Postgres
	Replica *testenv.Postgres
	DBURL   string
	DB      string // database name
	Pool    *pgxpool.Pool
	// IngestNATS is where the ingest and writers connect; GatewayNATS where
	// gateways connect (the same unless SuperCluster).
	IngestNATS  *testenv.NATS
	GatewayNATS *testenv.NATS
	Ingest      *ingest.Ingest
	Gateways    []*GW
	logger      *slog.Logger
}

// GW is one in-process gateway served by an httptest server.
type GW struct {
	Gateway *gateway.Gateway
	Server  *httptest.Server
	// Reg holds the gateway's and its catch-up's metrics.
	Reg *prometheus.Registry
	// URL is the WebSocket endpoint (ws://127.0.0.1:PORT/v1/ws).
	URL string
}

type testLog struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testLog) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func newLogger(t testing.TB) *slog.Logger {
	w := &testLog{t: t}
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)
var slotSeq atomic.Int64

func slotName(t testing.TB) string {
	n := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(n) > 30 {
		n = n[:30]
	}
	return fmt.Sprintf("e2e_%s_%d_%d", n, os.Getpid(), slotSeq.Add(1))
}

// Start starts a topology: database with the test schema, NATS, ingest,
// gateways (and writers) in process. Everything stops when the test ends.
func Start(t testing.TB, o Options) *Topology {
	t.Helper()
	ctx := context.Background()
	tp := &Topology{t: t, logger: newLogger(t)}
	tp.PG = testenv.SharedPostgres(t)
	tp.DBURL = tp.PG.CreateDatabase(t)
	tp.DB = dbName(tp.DBURL)
	conn, err := pgx.Connect(ctx, tp.DBURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := migrations.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, testSchema); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range syncTables {
		if _, err := migrations.Enable(ctx, conn, tbl, "org"); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(ctx)
	if tp.Pool, err = pgxpool.New(ctx, tp.DBURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Pool.Close)
	if !o.NoReplica {
		tp.Replica = tp.PG.StartReplica(t)
		tp.Replica.WaitCaughtUp(t)
	}
	if o.SuperCluster {
		a, b := testenv.StartSuperCluster(t, 1)
		tp.IngestNATS, tp.GatewayNATS = a[0], b[0]
	} else {
		tp.IngestNATS = testenv.StartNATS(t)
		tp.GatewayNATS = tp.IngestNATS
	}
	tp.Ingest, err = ingest.New(ingest.Config{DatabaseURL: tp.DBURL, NATSURL: tp.IngestNATS.URL(), SlotName: slotName(t),
		HeartbeatInterval: 100 * time.Millisecond, CheckpointInterval: 200 * time.Millisecond,
		StandbyPollInterval: 100 * time.Millisecond, PruneInterval: -1, Logger: tp.logger.With("part", "ingest")})
	if err != nil {
		t.Fatal(err)
	}
	tp.goRun("ingest", tp.Ingest.Run)
	waitFor(t, 30*time.Second, "ingest ready", tp.Ingest.Ready)
	for i := 0; i < o.Writers; i++ {
		tp.StartWriter(o.Mutators)
	}
	n := o.Gateways
	if n == 0 {
		n = 1
	}
	for i := 0; i < n; i++ {
		tp.Gateways = append(tp.Gateways, tp.startGateway(o))
	}
	return tp
}

func dbName(url string) string {
	s := url[strings.LastIndex(url, "/")+1:]
	s, _, _ = strings.Cut(s, "?")
	return s
}

// goRun runs fn until the test ends.
func (tp *Topology) goRun(name string, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
			tp.t.Logf("%s: %v", name, err)
		}
	}()
	tp.t.Cleanup(func() {
		t0 := time.Now()
		cancel()
		<-done
		if time.Since(t0) > time.Second {
			tp.t.Logf("%s took %v to stop", name, time.Since(t0))
		}
	})
}

// StartWriter starts one more in-process writer with the given custom
// mutators and waits until it serves.
func (tp *Topology) StartWriter(mutators map[string]writer.Mutator) *writer.Writer {
	tp.t.Helper()
	w, err := writer.New(writer.Config{DatabaseURL: tp.DBURL, NATSURL: tp.IngestNATS.URL(), MaxConns: 4,
		Logger: tp.logger.With("part", "writer")})
	if err != nil {
		tp.t.Fatal(err)
	}
	for name, m := range mutators {
		if err := w.Register(name, m); err != nil {
			tp.t.Fatal(err)
		}
	}
	tp.goRun("writer", w.Run)
	waitFor(tp.t, 30*time.Second, "writer ready", func() bool { return w.Ready(context.Background()) == nil })
	return w
}

// StartWriterProcess starts a writer as a child process (re-executing the
// test binary) and waits until it serves.
func (tp *Topology) StartWriterProcess(name string) *testenv.Process {
	tp.t.Helper()
	cmd := testenv.SelfCommand(roleWriter, "RIPPLE_E2E_DB="+tp.DBURL, "RIPPLE_E2E_NATS="+tp.IngestNATS.URL())
	p := testenv.StartProcess(tp.t, name, cmd)
	waitFor(tp.t, 30*time.Second, name+" ready", func() bool {
		if p.Exited() {
			tp.t.Fatalf("%s exited: %s", name, p.Output())
		}
		return strings.Contains(p.Output(), "writer ready")
	})
	return p
}

func (tp *Topology) startGateway(o Options) *GW {
	t := tp.t
	ctx := context.Background()
	g := &GW{Reg: prometheus.NewRegistry()}
	ccfg := catchup.Config{PrimaryURL: tp.DBURL, Logger: tp.logger.With("part", "catchup"), Registerer: g.Reg}
	if tp.Replica != nil {
		ccfg.ReplicaURL = tp.Replica.URL(tp.DB)
		ccfg.ReplicaWaitTimeout = time.Second
	}
	if o.Catchup != nil {
		o.Catchup(&ccfg)
	}
	cu, err := catchup.New(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{NATSURL: tp.GatewayNATS.URL(), Catchup: cu, Auth: auth.Config{HS256Secret: secret},
		Logger: tp.logger.With("part", "gateway"), Registerer: g.Reg, BarrierTimeout: 300 * time.Millisecond,
		HeartbeatTimeout: 2 * time.Second, MutationTimeout: 2 * time.Second}
	if o.Gateway != nil {
		o.Gateway(&cfg)
	}
	if g.Gateway, err = gateway.New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	g.Server = httptest.NewServer(g.Gateway)
	g.URL = "ws" + strings.TrimPrefix(g.Server.URL, "http") + gateway.PathWebSocket
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		t0 := time.Now()
		if err := g.Gateway.Shutdown(sctx); err != nil || time.Since(t0) > time.Second {
			t.Logf("gateway shutdown took %v: %v", time.Since(t0), err)
		}
		g.Server.Close()
		cu.Close()
	})
	waitFor(t, 30*time.Second, "gateway ready", g.Gateway.Ready)
	return g
}

// Exec runs one statement on the primary.
func (tp *Topology) Exec(sql string, args ...any) {
	tp.t.Helper()
	if _, err := tp.Pool.Exec(context.Background(), sql, args...); err != nil {
		tp.t.Fatalf("%s: %v", sql, err)
	}
}

// Counter returns the value of a counter (summed over label sets matching
// labels) in the gateway's registry.
func (g *GW) Counter(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if matchLabels(m, labels) {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func matchLabels(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == k && l.GetValue() == v {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Token signs a token for claims (sub "user", one hour when unset).
func Token(t testing.TB, c schema.Claims) string {
	t.Helper()
	if c.Subject == "" {
		c.Subject = "user"
	}
	if c.Expires.IsZero() {
		c.Expires = time.Now().Add(time.Hour)
	}
	tok, err := auth.SignHS256(secret, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Dial connects a Go client to url with token, closed when the test ends.
func Dial(t testing.TB, url, token string, mod ...func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{URL: url, Token: token, ReconnectMin: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
		DialTimeout: 5 * time.Second, Logger: newLogger(t).With("part", "client")}
	for _, m := range mod {
		m(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(c.Close)
	return c
}

// Subscribe subscribes and waits for the first ready.
func Subscribe(t testing.TB, c *client.Client, table, org string, opts ...client.SubOption) *client.Subscription {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := c.Subscribe(ctx, table, org, opts...)
	if err != nil {
		t.Fatalf("subscribe %s/%s: %v", table, org, err)
	}
	if err := s.WaitReady(ctx); err != nil {
		t.Fatalf("subscribe %s/%s: wait ready: %v", table, org, err)
	}
	return s
}

// waitFor polls cond every few milliseconds until it holds or d passes.
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

// TableRows reads table's rows of org from the primary, encoded as the
// client holds them (every column as text except v/balance/id which are
// int8, i.e. strings too), keyed by id, as canonical strings.
func (tp *Topology) TableRows(table, org string) map[string]string {
	tp.t.Helper()
	rows, err := tp.Pool.Query(context.Background(),
		fmt.Sprintf(`SELECT id::text, (to_jsonb(t) - 'ripple_xid' - 'org' - 'id')::text FROM %s t WHERE org = $1`, table), org)
	if err != nil {
		tp.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var kv [2]string
		return kv, r.Scan(&kv[0], &kv[1])
	})
	if err != nil {
		tp.t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range out {
		var v map[string]any
		dec := json.NewDecoder(strings.NewReader(kv[1]))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			tp.t.Fatal(err)
		}
		m[kv[0]] = canon(v)
	}
	return m
}

// ViewRows returns rows (from a Subscription) in the same form as TableRows.
func ViewRows(rows []client.Row) map[string]string {
	m := map[string]string{}
	for _, r := range rows {
		v := map[string]any{}
		for k, x := range r {
			if k != "org" && k != "id" {
				v[k] = x
			}
		}
		m[fmt.Sprint(r["id"])] = canon(v)
	}
	return m
}

// canon renders a row's non-key columns with every value as a string
// (int8 values travel as strings, SELECT's to_jsonb gives numbers).
func canon(v map[string]any) string {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s=%v;", k, v[k])
	}
	return sb.String()
}

// diff describes how two row maps differ ("" when equal).
func diff(want, got map[string]string) string {
	var out []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			out = append(out, "missing "+k)
		} else if g != w {
			out = append(out, fmt.Sprintf("%s: want %s got %s", k, w, g))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			out = append(out, "extra "+k)
		}
	}
	sort.Strings(out)
	if len(out) > 10 {
		out = append(out[:10], fmt.Sprintf("... %d more", len(out)-10))
	}
	return strings.Join(out, ", ")
}

// WaitConverged waits until sub shows exactly the table's rows of its org.
func (tp *Topology) WaitConverged(sub *client.Subscription, d time.Duration) {
	tp.t.Helper()
	deadline := time.Now().Add(d)
	for {
		want := tp.TableRows(sub.Table(), sub.Org())
		got := ViewRows(sub.Rows())
		df := diff(want, got)
		if df == "" {
			return
		}
		if time.Now().After(deadline) {
			tp.t.Fatalf("%s/%s did not converge to the table within %v (view at %s): %s", sub.Table(), sub.Org(), d, sub.LSN(), df)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Proxy is a TCP proxy in front of a gateway whose connections a test can
// cut, and which can refuse new ones, to take a client offline for real.
type Proxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	blocked bool
	accepts atomic.Int64
}

// NewProxy proxies to the gateway g; URL returns the proxied WebSocket URL.
func NewProxy(t testing.TB, g *GW) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: g.Server.Listener.Addr().String(), conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.Cut() })
	return p
}

// URL returns the WebSocket URL through the proxy.
func (p *Proxy) URL() string { return "ws://" + p.ln.Addr().String() + gateway.PathWebSocket }

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.blocked {
			p.mu.Unlock()
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.accepts.Add(1)
		p.mu.Unlock()
		go p.pipe(c, u)
		go p.pipe(u, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Cut closes every proxied connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Block makes the proxy refuse (accept and close) new connections; with
// Cut it takes its clients offline until Unblock.
func (p *Proxy) Block() {
	p.mu.Lock()
	p.blocked = true
	p.mu.Unlock()
}

// Unblock lets new connections through again.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	p.blocked = false
	p.mu.Unlock()
}

// Accepts returns how many connections the proxy let through.
func (p *Proxy) Accepts() int64 { return p.accepts.Load() }

// violations collects invariant violations from callbacks and samplers.
type violations struct {
	mu   sync.Mutex
	list []string
}

func (v *violations) add(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.list) < 50 {
		v.list = append(v.list, fmt.Sprintf(format, args...))
	}
}

func (v *violations) check(t testing.TB) {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.list) > 0 {
		t.Fatalf("%d violations:\n%s", len(v.list), strings.Join(v.list, "\n"))
	}
}

// num parses a row value that travels as a string (int8) or a number.
func num(x any) int64 {
	var n int64
	switch v := x.(type) {
	case string:
		fmt.Sscan(v, &n)
	case json.Number:
		n, _ = v.Int64()
	default:
		fmt.Sscan(fmt.Sprint(v), &n)
	}
	return n
}

package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/ingest"
	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var testSecret = []byte("gateway-test-secret")

const testSchema = `
CREATE TABLE accounts (org text NOT NULL, id int8 NOT NULL, balance int8 NOT NULL, PRIMARY KEY (org, id));
CREATE TABLE todos (org text NOT NULL, id int8 NOT NULL, title text, done bool DEFAULT false, PRIMARY KEY (org, id));
`

// env is one test's system: a migrated database with sync tables accounts
// and todos (root key org), NATS, an in-process ingest and a gateway behind
// an httptest server.
type env struct {
	t       testing.TB
	pg      *testenv.Postgres
	url     string
	replica *testenv.Postgres
	nats    *testenv.NATS
	pool    *pgxpool.Pool
	cu      *catchup.Catchup
	gw      *Gateway
	srv     *httptest.Server
	reg     *prometheus.Registry

	ingestCfg  ingest.Config
	stopIngest func()
}

// startIngest runs an ingest in this process until stopIngest or the end
// of the test.
func (e *env) startIngest() {
	e.t.Helper()
	ing, err := ingest.New(e.ingestCfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ing.Run(ctx) }()
	var once sync.Once
	e.stopIngest = func() { once.Do(func() { cancel(); <-done }) }
	e.t.Cleanup(e.stopIngest)
}

type envOpts struct {
	replica     bool
	ownCluster  bool          // a Postgres cluster of the test's own (it may change server settings)
	catchupRole string        // run catch-ups as this role (created with SELECT on every table) instead of the superuser
	replicaWait time.Duration // catchup.Config.ReplicaWaitTimeout (default 500ms)
	gatewayNATS string        // NATS URL for the gateway (default: the ingest's)
	ingestNATS  string
	cfg         func(*Config)
}

var slotSeq atomic.Int64

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

func slotName(t testing.TB) string {
	n := nonIdent.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(n) > 30 {
		n = n[:30]
	}
	return fmt.Sprintf("gw_%s_%d_%d", n, os.Getpid(), slotSeq.Add(1))
}

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	ctx := context.Background()
	e := &env{t: t}
	if o.replica || o.ownCluster {
		e.pg = testenv.StartPostgres(t)
		e.url = e.pg.URL("postgres")
	} else {
		e.pg = testenv.SharedPostgres(t)
		e.url = e.pg.CreateDatabase(t)
	}
	conn, err := pgx.Connect(ctx, e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := migrations.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, testSchema); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []string{"accounts", "todos"} {
		if _, err := migrations.Enable(ctx, conn, tbl, "org"); err != nil {
			t.Fatal(err)
		}
	}
	if e.pool, err = pgxpool.New(ctx, e.url); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pool.Close)
	if o.replica {
		e.replica = e.pg.StartReplica(t)
	}
	if o.ingestNATS == "" {
		e.nats = testenv.StartNATS(t)
		o.ingestNATS = e.nats.URL()
	}
	if o.gatewayNATS == "" {
		o.gatewayNATS = o.ingestNATS
	}
	logger := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	e.ingestCfg = ingest.Config{DatabaseURL: e.url, NATSURL: o.ingestNATS, SlotName: slotName(t),
		HeartbeatInterval: 100 * time.Millisecond, CheckpointInterval: 300 * time.Millisecond,
		StandbyPollInterval: 100 * time.Millisecond, Logger: logger}
	e.startIngest()
	ccfg := catchup.Config{PrimaryURL: e.url, Logger: logger}
	if r := o.catchupRole; r != "" {
		e.exec(`CREATE ROLE ` + r + ` LOGIN; GRANT USAGE ON SCHEMA ripple TO ` + r +
			`; GRANT SELECT ON ALL TABLES IN SCHEMA ripple, public TO ` + r)
		ccfg.PrimaryURL = strings.Replace(e.url, "postgres://postgres@", "postgres://"+r+"@", 1)
	}
	if e.replica != nil {
		ccfg.ReplicaURL = e.replica.URL("postgres")
		ccfg.ReplicaWaitTimeout = 500 * time.Millisecond
		if o.replicaWait > 0 {
			ccfg.ReplicaWaitTimeout = o.replicaWait
		}
	}
	if e.cu, err = catchup.New(ctx, ccfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.cu.Close)
	e.reg = prometheus.NewRegistry()
	cfg := Config{NATSURL: o.gatewayNATS, Catchup: e.cu, Auth: auth.Config{HS256Secret: testSecret},
		Logger: logger, Registerer: e.reg, HeartbeatTimeout: 2 * time.Second, BarrierTimeout: 300 * time.Millisecond}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	if e.gw, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.gw)
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = e.gw.Shutdown(sctx)
		e.srv.Close()
	})
	waitFor(t, 30*time.Second, "gateway ready", e.gw.Ready)
	return e
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	if _, err := e.pool.Exec(context.Background(), sql, args...); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func token(t testing.TB, c schema.Claims) string {
	t.Helper()
	if c.Subject == "" {
		c.Subject = "user"
	}
	if c.Expires.IsZero() {
		c.Expires = time.Now().Add(time.Hour)
	}
	tok, err := auth.SignHS256(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// ---- raw WebSocket test client ----

// tsub is the client-side state of one subscription.
type tsub struct {
	table, org string
	cols       bool // has a column list: untagged parts do not apply
	key        []string
	live       bool
	staging    map[string]json.RawMessage
	view       map[string]json.RawMessage
	lsn        schema.LSN
	cursor     *schema.XID8
	ready      int
	errs       []schema.ServerFrame
}

type heldPart struct {
	id, table, org string
	xid            schema.XID8
	ops            []schema.Op
}

// tclient is a minimal protocol client that materialises every
// subscription the way docs/protocol.md says, and checks invariants at
// every visible state (each commit and ready).
type tclient struct {
	t    testing.TB
	ws   *websocket.Conn
	mu   sync.Mutex
	subs map[string]*tsub
	held []heldPart
	all  []schema.ServerFrame
	last schema.LSN
	// check is called (with mu held) after every commit and ready that
	// changed visible state.
	check     func(c *tclient, id string)
	closed    chan struct{}
	closeErr  error
	frameN    atomic.Int64
	stall     chan struct{} // when set, the reader stops reading until closed
	recvTimes map[schema.XID8]time.Time
	env       *env
	onCommit  func(f schema.ServerFrame, at time.Time)
}

func dial(t testing.TB, e *env) *tclient {
	t.Helper()
	u := "ws" + strings.TrimPrefix(e.srv.URL, "http") + PathWebSocket
	d := websocket.Dialer{Subprotocols: []string{schema.ProtocolName}}
	ws, _, err := d.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &tclient{t: t, ws: ws, subs: map[string]*tsub{}, closed: make(chan struct{}), env: e}
	t.Cleanup(func() { ws.Close(); <-c.closed })
	return c
}

func (c *tclient) start() *tclient {
	go c.readLoop()
	return c
}

func (c *tclient) sendJSON(v any) {
	c.t.Helper()
	b, _ := json.Marshal(v)
	c.sendRaw(b)
}

func (c *tclient) sendRaw(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.WriteMessage(websocket.TextMessage, b)
}

func (c *tclient) auth(tok string) {
	c.sendJSON(schema.ClientFrame{Type: schema.FrameAuth, Token: tok})
}

func (c *tclient) subscribe(id, table, org string) {
	c.mu.Lock()
	if c.subs[id] == nil {
		c.subs[id] = &tsub{table: table, org: org}
	}
	c.mu.Unlock()
	c.sendJSON(schema.ClientFrame{Type: schema.FrameSubscribe, ID: id, Table: table, Org: org})
}

func (c *tclient) readLoop() {
	defer close(c.closed)
	for {
		if c.stall != nil {
			<-c.stall
		}
		_, b, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.closeErr = err
			c.mu.Unlock()
			return
		}
		var f schema.ServerFrame
		if err := json.Unmarshal(b, &f); err != nil {
			c.t.Errorf("undecodable server frame %s: %v", b, err)
			return
		}
		c.frameN.Add(1)
		c.handle(f)
	}
}

func rowKey(key []string, row json.RawMessage) string {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(row, &m)
	var sb strings.Builder
	for _, k := range key {
		sb.Write(m[k])
		sb.WriteByte('|')
	}
	return sb.String()
}

func applyOps(dst map[string]json.RawMessage, key []string, ops []schema.Op) {
	for _, op := range ops {
		switch op.Op {
		case schema.OpInsert, schema.OpUpdate:
			dst[rowKey(key, op.Row)] = op.Row
		case schema.OpDelete:
			delete(dst, rowKey(key, op.Key))
		}
	}
}

func (c *tclient) handle(f schema.ServerFrame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.all = append(c.all, f)
	s := c.subs[f.ID]
	switch f.Type {
	case schema.FrameSnapshotBegin:
		s.key = f.Key
		s.staging = map[string]json.RawMessage{}
		if f.Mode == schema.SnapshotResume {
			for k, v := range s.view {
				s.staging[k] = v
			}
		}
	case schema.FrameSnapshot:
		applyOps(s.staging, s.key, f.Ops)
	case schema.FramePart:
		if f.Seq == 0 {
			keep := c.held[:0]
			for _, h := range c.held {
				if !(h.xid == f.XID && h.table == f.Table && h.org == f.Org && h.id == f.ID) {
					keep = append(keep, h)
				}
			}
			c.held = keep
		}
		c.held = append(c.held, heldPart{id: f.ID, table: f.Table, org: f.Org, xid: f.XID, ops: f.Ops})
	case schema.FrameCommit:
		if f.ID != "" {
			keep := c.held[:0]
			for _, h := range c.held {
				if h.xid == f.XID && h.id == f.ID {
					applyOps(s.staging, s.key, h.ops)
				} else {
					keep = append(keep, h)
				}
			}
			c.held = keep
			return
		}
		if f.LSN <= c.last {
			c.t.Errorf("commit LSN did not increase: %s after %s", f.LSN, c.last)
		}
		c.last = f.LSN
		keep := c.held[:0]
		for _, h := range c.held {
			if h.xid != f.XID {
				continue // orphaned parts of a transaction never committed to us
			}
			for id, ts := range c.subs {
				if ts.live && ts.table == h.table && ts.org == h.org && ((h.id == "" && !ts.cols) || h.id == id) {
					applyOps(ts.view, ts.key, h.ops)
					ts.lsn = f.LSN
				}
			}
		}
		c.held = keep
		if c.onCommit != nil {
			c.onCommit(f, time.Now())
		}
		if c.check != nil {
			c.check(c, "")
		}
	case schema.FrameReady:
		s.view, s.staging = s.staging, nil
		s.live = true
		s.lsn, s.cursor = f.LSN, f.Cursor
		s.ready++
		if c.check != nil {
			c.check(c, f.ID)
		}
	case schema.FrameCheckpoint:
		s.cursor = f.Cursor
	case schema.FrameResync:
		s.live = false
	case schema.FrameError:
		if s != nil {
			s.errs = append(s.errs, f)
		}
	}
}

// frames returns a copy of every frame received so far.
func (c *tclient) frames() []schema.ServerFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]schema.ServerFrame(nil), c.all...)
}

func (c *tclient) waitFrame(d time.Duration, what string, match func(schema.ServerFrame) bool) schema.ServerFrame {
	c.t.Helper()
	var got schema.ServerFrame
	waitFor(c.t, d, what, func() bool {
		for _, f := range c.frames() {
			if match(f) {
				got = f
				return true
			}
		}
		return false
	})
	return got
}

func (c *tclient) waitReady(id string, n int) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		ok := c.subs[id] != nil && c.subs[id].ready >= n
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Log(c.env.hubState())
			c.mu.Lock()
			frames, closeErr := c.all, c.closeErr
			c.mu.Unlock()
			for _, f := range frames[max(0, len(frames)-5):] {
				b, _ := json.Marshal(f)
				c.t.Logf("frame: %.300s", b)
			}
			c.t.Fatalf("timed out waiting for ready %d of %s (%d frames received, connection error: %v)", n, id, len(frames), closeErr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hubState describes the gateway's topics and subscriptions (for failures).
func (e *env) hubState() string {
	out := make(chan string, 1)
	h := e.gw.hub
	if !h.post(func() {
		var sb strings.Builder
		fmt.Fprintf(&sb, "hub: d=%s curXID=%s txs=%d hbSeen=%v gapped=%v natsUp=%v\n", h.d, h.curXID, len(h.txs), h.hbSeen, h.gapped, h.natsUp)
		for _, t := range h.topics {
			fmt.Fprintf(&sb, "  topic %s live=%v subs=%d busy=%v\n", t.subject, t.live, len(t.subs), h.busy(t))
		}
		for hc := range h.conns {
			for _, s := range hc.subs {
				fmt.Fprintf(&sb, "  sub %s state=%d done=%v U=%s applied=%s buf=%d retry=%d\n", s.id, s.state, s.done, s.res.U, s.applied, len(s.buf), s.retry)
			}
		}
		out <- sb.String()
	}) {
		return "hub stopped"
	}
	return <-out
}

// viewOf returns the visible rows of a subscription, sorted.
func (c *tclient) viewOf(id string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedRows(c.subs[id].view)
}

func sortedRows(m map[string]json.RawMessage) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, normJSON(v))
	}
	sort.Strings(out)
	return out
}

func normJSON(b []byte) string {
	var v any
	_ = json.Unmarshal(b, &v)
	n, _ := json.Marshal(v)
	return string(n)
}

// tableRows reads the rows of (table, org) as the codec encodes them.
func (e *env) tableRows(table, org string) []string {
	e.t.Helper()
	var cols string
	switch table {
	case "accounts":
		cols = `'org', org, 'id', id::text, 'balance', balance::text`
	case "todos":
		cols = `'org', org, 'id', id::text, 'title', title, 'done', done`
	}
	rows, err := e.pool.Query(context.Background(), "SELECT json_build_object("+cols+")::text FROM "+table+" WHERE org = $1", org)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, normJSON([]byte(s)))
	}
	sort.Strings(out)
	return out
}

var _ = io.EOF
var _ = nats.ErrTimeout

// resume copies subscription id's state from old and subscribes with its
// cursor and LSN.
func (c *tclient) resume(old *tclient, id string) {
	old.mu.Lock()
	o := old.subs[id]
	s := &tsub{table: o.table, org: o.org, key: o.key, view: map[string]json.RawMessage{}, lsn: o.lsn, cursor: o.cursor, live: false}
	for k, v := range o.view {
		s.view[k] = v
	}
	old.mu.Unlock()
	c.mu.Lock()
	c.subs[id] = s
	c.mu.Unlock()
	lsn := s.lsn
	c.sendJSON(schema.ClientFrame{Type: schema.FrameSubscribe, ID: id, Table: s.table, Org: s.org, Cursor: s.cursor, LSN: &lsn})
}

func testutilValue(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return 0
}

// histogramSummary renders a histogram's cumulative buckets.
func histogramSummary(h interface{ Write(*dto.Metric) error }) string {
	var m dto.Metric
	if err := h.Write(&m); err != nil || m.Histogram == nil {
		return "?"
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "n=%d", m.Histogram.GetSampleCount())
	for _, b := range m.Histogram.Bucket {
		fmt.Fprintf(&sb, " <=%gs:%d", b.GetUpperBound(), b.GetCumulativeCount())
	}
	return sb.String()
}

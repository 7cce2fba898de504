package load

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Mode says what a generator's connections do.
type Mode string

const (
	// ModeRipple speaks the Ripple protocol: auth, one subscription, read.
	ModeRipple Mode = "ripple"
	// ModeEcho holds idle connections to an echo server: each sends one
	// message, waits for its echo, then only waits.
	ModeEcho Mode = "echo"
)

// Subprotocol is the WebSocket subprotocol of the Ripple protocol.
const Subprotocol = "ripple.v1"

// Defaults for Config fields left zero.
const (
	DefaultDialConcurrency = 64
	DefaultReadyTimeout    = 15 * time.Minute
	DefaultTable           = "bench_items"
)

// DefaultSourceAddrs returns the loopback source addresses connections are
// spread over: 127.0.0.2 to 127.0.0.20.
func DefaultSourceAddrs() []string {
	addrs := make([]string, 0, 19)
	for i := 2; i <= 20; i++ {
		addrs = append(addrs, fmt.Sprintf("127.0.0.%d", i))
	}
	return addrs
}

// ErrBadConfig is returned for an unusable Config.
var ErrBadConfig = errors.New("load: bad config")

// Config configures a Generator.
type Config struct {
	// URL is the WebSocket URL, e.g. ws://127.0.0.1:8080/v1/ws (required).
	URL string
	// Clients is how many connections to open (required, > 0).
	Clients int
	// Mode is what the connections do (default ModeRipple).
	Mode Mode
	// Orgs are the organisations; connection i subscribes to
	// Orgs[i%len(Orgs)] (required in ModeRipple).
	Orgs []string
	// Table is the sync table subscribed to (default DefaultTable).
	Table string
	// Token returns the token a connection presents for org (required in
	// ModeRipple).
	Token func(org string) string
	// SourceAddrs are the local IP addresses connections are spread over
	// (default DefaultSourceAddrs()).
	SourceAddrs []string
	// DialConcurrency bounds the connections being set up at once (default
	// DefaultDialConcurrency).
	DialConcurrency int
	// ReadyTimeout bounds the time until every connection is ready (default
	// DefaultReadyTimeout).
	ReadyTimeout time.Duration
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Mode == "" {
		c.Mode = ModeRipple
	}
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if len(c.SourceAddrs) == 0 {
		c.SourceAddrs = DefaultSourceAddrs()
	}
	if c.DialConcurrency <= 0 {
		c.DialConcurrency = DefaultDialConcurrency
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = DefaultReadyTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: URL is required", ErrBadConfig)
	}
	if c.Clients <= 0 {
		return fmt.Errorf("%w: Clients must be positive", ErrBadConfig)
	}
	switch c.Mode {
	case ModeRipple:
		if len(c.Orgs) == 0 || c.Token == nil {
			return fmt.Errorf("%w: Orgs and Token are required in mode %s", ErrBadConfig, c.Mode)
		}
	case ModeEcho:
	default:
		return fmt.Errorf("%w: unknown mode %q", ErrBadConfig, c.Mode)
	}
	for _, a := range c.SourceAddrs {
		if net.ParseIP(a) == nil {
			return fmt.Errorf("%w: source address %q is not an IP", ErrBadConfig, a)
		}
	}
	return nil
}

// Stats are a generator's cumulative counters.
type Stats struct {
	// Ready is how many connections completed their setup.
	Ready int64 `json:"ready"`
	// Commits, Parts, Checkpoints and Other count frames received after
	// (and during) setup; Commits is the number of transaction deliveries.
	Commits     uint64 `json:"commits"`
	Parts       uint64 `json:"parts"`
	Checkpoints uint64 `json:"checkpoints"`
	Other       uint64 `json:"other"`
	// Errors counts error frames, Resyncs resync frames, Closed connections
	// that ended while the generator was running.
	Errors  uint64 `json:"errors"`
	Resyncs uint64 `json:"resyncs"`
	Closed  uint64 `json:"closed"`
	// LastProblem describes the last error frame, resync or closed
	// connection.
	LastProblem string `json:"last_problem,omitempty"`
	// Latency holds commit-to-receive latencies of commit frames.
	Latency HistSnapshot `json:"latency"`
}

// Generator holds the connections of a load run.
type Generator struct {
	cfg     Config
	dialers []*websocket.Dialer
	hist    Histogram

	ready, commits, parts, checkpoints, other atomic.Uint64
	errs, resyncs, closed                     atomic.Uint64
	closing                                   atomic.Bool
	problem                                   atomic.Pointer[string]

	mu    sync.Mutex
	conns []*websocket.Conn // gorilla connections (ModeEcho)
	raw   *rawReaders       // epoll loops reading the raw connections (ModeRipple)
	wg    sync.WaitGroup
}

// Start opens cfg.Clients connections and returns once every one of them is
// ready (in ModeRipple: its subscription sent ready). If one fails, or
// ReadyTimeout passes, or ctx ends, every connection is closed and the
// error returned.
func Start(ctx context.Context, cfg Config) (*Generator, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &Generator{cfg: cfg}
	if cfg.Mode == ModeRipple {
		if err := g.startReaders(runtime.GOMAXPROCS(0)); err != nil {
			return nil, err
		}
	}
	for _, a := range cfg.SourceAddrs {
		local := &net.TCPAddr{IP: net.ParseIP(a)}
		nd := &net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}
		g.dialers = append(g.dialers, &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: 60 * time.Second,
			Subprotocols:     []string{Subprotocol},
			ReadBufferSize:   4096,
			WriteBufferSize:  1024,
		})
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	sem := make(chan struct{}, cfg.DialConcurrency)
	errc := make(chan error, 1)
	readyc := make(chan struct{}, cfg.Clients)
	for i := 0; i < cfg.Clients; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		case err := <-errc:
			g.Close()
			return nil, err
		}
		if ctx.Err() != nil {
			break
		}
		g.wg.Add(1)
		if cfg.Mode == ModeRipple {
			go g.runRaw(ctx, i, sem, readyc, errc)
		} else {
			go g.run(ctx, i, sem, readyc, errc)
		}
	}
	for n := 0; n < cfg.Clients; n++ {
		select {
		case <-readyc:
		case err := <-errc:
			g.Close()
			return nil, err
		case <-ctx.Done():
			g.Close()
			return nil, fmt.Errorf("load: %d of %d connections ready: %w", n, cfg.Clients, ctx.Err())
		}
	}
	return g, nil
}

// run sets up connection i, reports it ready, then reads until it closes.
func (g *Generator) run(ctx context.Context, i int, sem chan struct{}, readyc chan<- struct{}, errc chan<- error) {
	defer g.wg.Done()
	released := false
	release := func() {
		if !released {
			released = true
			<-sem
		}
	}
	defer release()
	fail := func(err error) {
		select {
		case errc <- fmt.Errorf("load: connection %d: %w", i, err):
		default:
		}
	}
	d := g.dialers[i%len(g.dialers)]
	ws, resp, err := d.DialContext(ctx, g.cfg.URL, http.Header{})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		fail(err)
		return
	}
	g.mu.Lock()
	if g.closing.Load() {
		g.mu.Unlock()
		ws.Close()
		return
	}
	g.conns = append(g.conns, ws)
	g.mu.Unlock()

	if err := g.setup(ws, i); err != nil {
		if !g.closing.Load() {
			fail(err)
		}
		ws.Close()
		return
	}
	release()
	g.ready.Add(1)
	readyc <- struct{}{}
	var buf []byte
	for {
		var err error
		buf, err = readMessage(ws, buf[:0])
		if err != nil {
			if !g.closing.Load() {
				g.closed.Add(1)
				g.setProblem(fmt.Sprintf("connection %d closed: %v", i, err))
			}
			return
		}
		if g.cfg.Mode == ModeRipple {
			g.handle(buf, time.Now())
		}
	}
}

// setup authenticates and subscribes (ModeRipple) or exchanges one echo
// (ModeEcho), reading until the subscription is ready.
func (g *Generator) setup(ws *websocket.Conn, i int) error {
	if g.cfg.Mode == ModeEcho {
		if err := ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
			return err
		}
		_, b, err := ws.ReadMessage()
		if err != nil {
			return err
		}
		if string(b) != "hello" {
			return fmt.Errorf("echo server answered %q", b)
		}
		return nil
	}
	org := g.cfg.Orgs[i%len(g.cfg.Orgs)]
	if err := writeJSON(ws, map[string]any{"type": "auth", "token": g.cfg.Token(org)}); err != nil {
		return err
	}
	if err := writeJSON(ws, map[string]any{"type": "subscribe", "id": "s", "table": g.cfg.Table, "org": org}); err != nil {
		return err
	}
	var buf []byte
	for {
		var err error
		buf, err = readMessage(ws, buf[:0])
		if err != nil {
			return err
		}
		f, err := ParseFrame(buf)
		if err != nil {
			return err
		}
		switch f.Type {
		case "ready":
			return nil
		case "error":
			return fmt.Errorf("gateway error %s: %s", f.Code, f.Message)
		case "commit":
			g.commits.Add(1)
		case "part":
			g.parts.Add(1)
		}
	}
}

// handle counts one frame received at now.
func (g *Generator) handle(b []byte, now time.Time) {
	f, err := ParseFrame(b)
	if err != nil {
		g.errs.Add(1)
		g.setProblem(err.Error())
		return
	}
	switch f.Type {
	case "commit":
		g.commits.Add(1)
		if !f.Time.IsZero() {
			g.hist.Record(now.Sub(f.Time))
		}
	case "part":
		g.parts.Add(1)
	case "checkpoint":
		g.checkpoints.Add(1)
	case "error":
		g.errs.Add(1)
		g.setProblem(fmt.Sprintf("error frame %s: %s", f.Code, f.Message))
	case "resync":
		g.resyncs.Add(1)
		g.setProblem("resync: " + f.Reason)
	default:
		g.other.Add(1)
	}
}

func (g *Generator) setProblem(s string) { g.problem.Store(&s) }

// Stats returns the cumulative counters.
func (g *Generator) Stats() Stats {
	s := Stats{
		Ready:       int64(g.ready.Load()),
		Commits:     g.commits.Load(),
		Parts:       g.parts.Load(),
		Checkpoints: g.checkpoints.Load(),
		Other:       g.other.Load(),
		Errors:      g.errs.Load(),
		Resyncs:     g.resyncs.Load(),
		Closed:      g.closed.Load(),
		Latency:     g.hist.Snapshot(),
	}
	if p := g.problem.Load(); p != nil {
		s.LastProblem = *p
	}
	return s
}

// Close closes every connection and waits for their goroutines.
func (g *Generator) Close() {
	g.mu.Lock()
	g.closing.Store(true)
	conns := g.conns
	g.conns = nil
	g.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	g.wg.Wait()
	if g.raw != nil {
		g.raw.close()
	}
}

func writeJSON(ws *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return ws.WriteMessage(websocket.TextMessage, b)
}

// readMessage appends the next message to buf, reusing its memory.
func readMessage(ws *websocket.Conn, buf []byte) ([]byte, error) {
	_, r, err := ws.NextReader()
	if err != nil {
		return buf, err
	}
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// OrgNames returns n organisation names: prefix000, prefix001, ...
func OrgNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return names
}

package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/schema"
)

// Paths served by ServeHTTP.
const (
	PathWebSocket = "/v1/ws"
	PathHealth    = "/healthz"
	PathReady     = "/readyz"
)

// Gateway serves Ripple's WebSocket protocol (docs/protocol.md).
type Gateway struct {
	cfg          Config
	log          *slog.Logger
	nc           *nats.Conn
	ownNC        bool
	verifier     *auth.Verifier
	m            *metrics
	hub          *hub
	flush        *flushers
	upgrader     websocket.Upgrader
	readBufs     sync.Pool // *[]byte: connections' frame read buffers
	writeScratch sync.Pool // *writeScratch: writers' scratch space
	ready        atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing bool
	wg      sync.WaitGroup
}

// New validates cfg, connects to NATS and starts the gateway's hub. The
// gateway runs until Shutdown or until ctx is cancelled.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	v, err := auth.NewVerifier(cfg.Auth)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("gateway: metrics: %w", err)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, verifier: v, m: m, conns: map[*conn]struct{}{}}
	g.readBufs.New = func() any { b := make([]byte, 0, 512); return &b }
	g.writeScratch.New = func() any { return new(writeScratch) }
	g.ctx, g.cancel = context.WithCancel(ctx)
	g.flush = newFlushers(0)
	g.hub = newHub(g, g.ctx)
	h := g.hub
	onDisconnect := func(_ *nats.Conn, err error) {
		g.log.Warn("NATS disconnected", slog.Any("error", err))
		h.post(h.onDisconnect)
	}
	onReconnect := func(*nats.Conn) {
		g.log.Info("NATS reconnected")
		h.post(h.onReconnect)
	}
	onError := func(_ *nats.Conn, s *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrSlowConsumer) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			g.log.Warn("NATS slow consumer: messages were dropped", slog.String("subject", subj))
			h.post(func() { h.onSlowConsumer(subj) })
			return
		}
		g.log.Warn("NATS error", slog.Any("error", err))
	}
	if cfg.NATS != nil {
		g.nc = cfg.NATS
		g.nc.SetDisconnectErrHandler(onDisconnect)
		g.nc.SetReconnectHandler(onReconnect)
		g.nc.SetErrorHandler(onError)
	} else {
		g.nc, err = nats.Connect(cfg.NATSURL, nats.Name("ripple-gateway"), nats.MaxReconnects(-1),
			nats.DisconnectErrHandler(onDisconnect), nats.ReconnectHandler(onReconnect), nats.ErrorHandler(onError))
		if err != nil {
			g.cancel()
			return nil, fmt.Errorf("gateway: connect to NATS: %w", err)
		}
		g.ownNC = true
	}
	if err := h.start(); err != nil {
		g.cancel()
		if g.ownNC {
			g.nc.Close()
		}
		return nil, fmt.Errorf("gateway: subscribe: %w", err)
	}
	g.upgrader = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{schema.ProtocolName},
		CheckOrigin:     cfg.CheckOrigin,
	}
	if g.upgrader.CheckOrigin == nil {
		g.upgrader.CheckOrigin = func(*http.Request) bool { return true }
	}
	g.flush.start()
	go h.run()
	return g, nil
}

// Ready reports whether the gateway is connected to NATS and has seen a
// recent ingest heartbeat.
func (g *Gateway) Ready() bool { return g.ready.Load() }

// ServeHTTP serves the WebSocket endpoint at /v1/ws, /healthz (200 while the
// gateway runs) and /readyz (200 when Ready, 503 otherwise). A WebSocket
// connection goes on in a goroutine of its own after ServeHTTP returned;
// Shutdown waits for it.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case PathHealth:
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
		return
	case PathReady:
		if !g.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
		return
	case PathWebSocket:
	default:
		http.NotFound(w, r)
		return
	}
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	g.wg.Add(1)
	g.mu.Unlock()
	ws, err := g.upgrader.Upgrade(w, r, nil)
	if err != nil {
		g.wg.Done()
		return // the upgrader answered already
	}
	c := newConn(g, ws)
	g.mu.Lock()
	g.conns[c] = struct{}{}
	if g.closing {
		c.cut("", "", closeGoingAway) // Shutdown began during the upgrade
	}
	g.mu.Unlock()
	// The connection runs in a goroutine of its own and ServeHTTP returns:
	// the HTTP server then lets go of the request and of its connection's
	// buffers (8 KiB), which an idle WebSocket connection would otherwise
	// keep for its whole life.
	go func() {
		defer g.wg.Done()
		c.serve()
		g.mu.Lock()
		delete(g.conns, c)
		g.mu.Unlock()
	}()
}

// Shutdown closes every connection with close code 1001 (going away), waits
// for them to end (or ctx), then stops the hub and, if the gateway opened
// it, the NATS connection.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	for c := range g.conns {
		c.cut("", "", closeGoingAway)
	}
	g.mu.Unlock()
	done := make(chan struct{})
	go func() { g.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	g.cancel()
	<-g.hub.done
	g.ready.Store(false)
	if g.ownNC {
		g.nc.Close()
	}
	return err
}

// runCatchup runs one catch-up and streams it to the connection:
// snapshot_begin, then snapshot batches; the hub is told the result.
func (g *Gateway) runCatchup(ctx context.Context, h *hub, s *sub, gen int, c *conn, id string, key []string, req catchup.Request) {
	began := false
	req.Begin = func(r catchup.Result) error {
		began = true
		return c.pushWait(ctx, encodeFrame(schema.ServerFrame{Type: schema.FrameSnapshotBegin, ID: id, Mode: r.Mode, Key: key}), s, gen)
	}
	res, err := g.cfg.Catchup.Run(ctx, req, func(ops []schema.Op) error {
		return c.pushWait(ctx, encodeSnapshot(id, ops), s, gen)
	})
	if err == nil && !began {
		err = c.pushWait(ctx, encodeFrame(schema.ServerFrame{Type: schema.FrameSnapshotBegin, ID: id, Mode: res.Mode, Key: key}), s, gen)
	}
	h.post(func() { h.catchupDone(s, gen, res, err) })
}

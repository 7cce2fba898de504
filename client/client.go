package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/ripple-sync/ripple/schema"
)

// ErrUnauthorized is returned when the gateway refuses the token.
var ErrUnauthorized = errors.New("client: unauthorized")

// ErrTokenExpired ends a connection whose token expired; the client
// reconnects with a fresh token from Config.TokenFunc.
var ErrTokenExpired = errors.New("client: token expired")

// Client is a connection to a gateway that keeps every subscription's view
// up to date, reconnecting with backoff and resuming by cursor. It is safe for
// concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger
	e   *engine

	cancel    context.CancelFunc
	done      chan struct{} // the connection loop exited
	evStop    chan struct{}
	evDone    chan struct{}
	failed    chan struct{} // closed with err on a terminal failure or Close
	closeOnce sync.Once
	failOnce  sync.Once

	mu  sync.Mutex
	err error
}

// Dial starts a Client. Unless cfg.Background is set it returns once the first
// connection is authenticated, or the error of that first attempt
// (ErrUnauthorized for a refused token).
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{
		cfg:    cfg,
		log:    cfg.Logger,
		e:      newEngine(cfg.Logger, cfg.ClientID, cfg.PendingStore, cfg.ReconnectMin, cfg.ReconnectMax),
		done:   make(chan struct{}),
		evStop: make(chan struct{}),
		evDone: make(chan struct{}),
		failed: make(chan struct{}),
	}
	if err := c.e.loadPending(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go func() {
		defer close(c.evDone)
		c.e.events.run(c.evStop)
	}()
	var first chan error
	if !cfg.Background {
		first = make(chan error, 1)
	}
	go c.run(runCtx, first)
	if first == nil {
		return c, nil
	}
	select {
	case err := <-first:
		if err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
}

// ClientID returns the id under which this client's mutations are sent.
func (c *Client) ClientID() string { return c.cfg.ClientID }

// Err returns the error that stopped the client (ErrClosed after Close).
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the client stopped: closed, or failed for good (a
// refused token without a TokenFunc).
func (c *Client) Done() <-chan struct{} { return c.failed }

func (c *Client) fail(err error) {
	c.failOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.failed)
	})
}

// Close ends every subscription and the connection. Pending mutations stay
// in the PendingStore. Close must not be called from an OnChange callback.
func (c *Client) Close() {
	c.closeOnce.Do(func() {
		c.fail(ErrClosed)
		c.cancel()
		<-c.done
		c.e.mu.Lock()
		c.e.closed = true
		for _, ws := range c.e.subs {
			if ws.retry != nil {
				ws.retry.Stop()
			}
		}
		c.e.mu.Unlock()
		close(c.evStop)
		<-c.evDone
	})
}

// Subscribe subscribes to table of org. The returned Subscription shows
// nothing until its first ready (see WaitReady). ctx only bounds the call.
func (c *Client) Subscribe(ctx context.Context, table, org string, opts ...SubOption) (*Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if table == "" || org == "" {
		return nil, fmt.Errorf("client: subscribe: table and org are required")
	}
	var o subOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.columns != nil && o.keyCols != nil {
		for _, k := range o.keyCols {
			if !containsStr(o.columns, k) {
				o.columns = append(o.columns, k)
			}
		}
	}
	s, _, err := c.e.subscribe(table, org, o)
	if err != nil {
		return nil, err
	}
	s.c = c
	return s, nil
}

func containsStr(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// RegisterMutator sets the optimistic function of mutator name (replacing a
// built-in one). Pending mutations of that name are re-applied at once.
func (c *Client) RegisterMutator(name string, fn MutatorFunc) {
	e := c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if fn == nil {
		delete(e.mutators, name)
	} else {
		e.mutators[name] = fn
	}
	e.settle(nil, 0, true)
}

// Mutate sends a mutation: mutator names a writer mutator, args is marshalled
// to JSON (a json.RawMessage is sent as is). The writer's built-ins take
// insert {table, row}, update {table, key, set} and delete {table, key}
// (key: the primary key columns); their optimistic functions find the
// organisation by the key (update, delete) or as the subscribed organisation
// that is a value of the row (insert; the root key column holds it).
//
// The mutator's optimistic function, if any, is applied to the views at
// once; if it fails, Mutate returns its error (wrapping ErrOptimistic) and
// nothing is sent. The mutation is kept in the PendingStore and (re)sent in
// id order until the gateway answers; it leaves the views' pending overlay
// exactly when the commit that applied it is applied, or at once when
// rejected (Pending.Wait then returns a *MutationError).
func (c *Client) Mutate(ctx context.Context, mutator string, args any, opts ...MutateOption) (*Pending, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if mutator == "" {
		return nil, errors.New("client: mutate: mutator is required")
	}
	var o mutateOptions
	for _, opt := range opts {
		opt(&o)
	}
	var raw json.RawMessage
	switch a := args.(type) {
	case json.RawMessage:
		if !json.Valid(a) {
			return nil, errors.New("client: mutate: args are not valid JSON")
		}
		raw = a
	default:
		b, err := json.Marshal(args)
		if err != nil {
			return nil, fmt.Errorf("client: mutate: args: %w", err)
		}
		raw = b
	}
	return c.e.mutate(mutator, raw, !o.noOptimistic)
}

// Pending returns the mutations not yet part of synced data, in id order
// (including those restored from the PendingStore).
func (c *Client) Pending() []*Pending {
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	out := make([]*Pending, len(c.e.pending))
	copy(out, c.e.pending)
	return out
}

// ---- connection loop ----

func (c *Client) run(ctx context.Context, first chan error) {
	defer close(c.done)
	backoff := c.cfg.ReconnectMin
	for {
		conn, exp, err := c.connect(ctx)
		if first != nil {
			first <- err
			if err != nil {
				return
			}
			first = nil
		}
		if err == nil {
			backoff = c.cfg.ReconnectMin
			err = c.serve(ctx, conn, exp)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrUnauthorized) && c.cfg.TokenFunc == nil {
			c.log.Error("ripple client: token refused; stopping", "err", err)
			c.fail(err)
			return
		}
		c.log.Info("ripple client: reconnecting", "err", err, "backoff", backoff)
		// Full jitter in [backoff/2, backoff].
		d := backoff/2 + time.Duration(rand.Int64N(int64(backoff/2)+1))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, c.cfg.ReconnectMax)
	}
}

func (c *Client) token(ctx context.Context) (string, error) {
	if c.cfg.TokenFunc != nil {
		t, err := c.cfg.TokenFunc(ctx)
		if err != nil {
			return "", fmt.Errorf("client: token: %w", err)
		}
		return t, nil
	}
	return c.cfg.Token, nil
}

// connect dials and authenticates; it returns the token's expiry.
func (c *Client) connect(ctx context.Context) (*websocket.Conn, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	tok, err := c.token(ctx)
	if err != nil {
		return nil, 0, err
	}
	d := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: c.cfg.DialTimeout,
		Subprotocols:     []string{schema.ProtocolName},
	}
	conn, resp, err := d.DialContext(ctx, c.cfg.URL, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, 0, fmt.Errorf("client: dial %s: %w", c.cfg.URL, err)
	}
	conn.SetReadLimit(c.cfg.MaxFrameSize)
	deadline, _ := ctx.Deadline()
	conn.SetWriteDeadline(deadline)
	conn.SetReadDeadline(deadline)
	if err := conn.WriteJSON(schema.ClientFrame{Type: schema.FrameAuth, Token: tok, ClientID: c.cfg.ClientID}); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("client: auth: %w", err)
	}
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			return nil, 0, fmt.Errorf("client: auth: %w", err)
		}
		f, err := decodeServerFrame(data)
		if err != nil {
			conn.Close()
			return nil, 0, err
		}
		switch {
		case f.Type == schema.FrameAuthOK:
			conn.SetReadDeadline(time.Time{})
			conn.SetWriteDeadline(time.Time{})
			return conn, f.Exp, nil
		case f.Type == schema.FrameError && f.ID == "":
			conn.Close()
			if f.Code == schema.ErrCodeUnauthorized || f.Code == schema.ErrCodeTokenExpired {
				return nil, 0, fmt.Errorf("%w: %s: %s", ErrUnauthorized, f.Code, f.Message)
			}
			return nil, 0, &ServerError{Code: f.Code, Message: f.Message}
		}
	}
}

// serve runs one authenticated connection until it ends and returns why.
func (c *Client) serve(ctx context.Context, conn *websocket.Conn, exp int64) error {
	out := newOutbox()
	connDone := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { c.writeLoop(conn, out, connDone) })
	wg.Go(func() {
		select {
		case <-ctx.Done():
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			conn.Close()
		case <-connDone:
		}
	})
	var refresh *time.Timer
	var refreshMu sync.Mutex
	schedule := func(exp int64) {
		if c.cfg.TokenFunc == nil || exp <= 0 {
			return
		}
		left := time.Until(time.Unix(exp, 0))
		if left <= 0 {
			return
		}
		refreshMu.Lock()
		defer refreshMu.Unlock()
		if refresh != nil {
			refresh.Stop()
		}
		refresh = time.AfterFunc(left*4/5, func() {
			tok, err := c.token(ctx)
			if err != nil {
				c.log.Warn("ripple client: token refresh failed", "err", err)
				return
			}
			out.push(schema.ClientFrame{Type: schema.FrameAuth, Token: tok, ClientID: c.cfg.ClientID})
		})
	}
	schedule(exp)
	c.e.connected(out)
	c.log.Debug("ripple client: connected", "url", c.cfg.URL)

	err := c.readLoop(conn, schedule)

	close(connDone)
	conn.Close()
	wg.Wait()
	refreshMu.Lock()
	if refresh != nil {
		refresh.Stop()
	}
	refreshMu.Unlock()
	c.e.disconnected()
	return err
}

func (c *Client) readLoop(conn *websocket.Conn, schedule func(int64)) error {
	for {
		if c.cfg.PingInterval > 0 {
			conn.SetReadDeadline(time.Now().Add(3 * c.cfg.PingInterval))
		}
		_, data, err := conn.ReadMessage()
		if err != nil {
			if ce, ok := errors.AsType[*websocket.CloseError](err); ok && ce.Code == 4003 {
				return ErrTokenExpired
			}
			return fmt.Errorf("client: read: %w", err)
		}
		f, err := decodeServerFrame(data)
		if err != nil {
			c.log.Error("ripple client: bad frame from gateway; reconnecting", "err", err)
			return err
		}
		switch f.Type {
		case schema.FrameAuthOK:
			schedule(f.Exp)
		case schema.FramePong, schema.FrameUnsubscribed:
		default:
			if f.Type == schema.FrameError && f.ID == "" {
				switch f.Code {
				case schema.ErrCodeTokenExpired:
					return ErrTokenExpired
				case schema.ErrCodeUnauthorized:
					return fmt.Errorf("%w: %s", ErrUnauthorized, f.Message)
				}
			}
			if err := c.e.handle(f); err != nil {
				c.log.Error("ripple client: protocol violation; reconnecting", "err", err)
				return err
			}
		}
	}
}

func (c *Client) writeLoop(conn *websocket.Conn, out *outbox, done <-chan struct{}) {
	var tick <-chan time.Time
	if c.cfg.PingInterval > 0 {
		t := time.NewTicker(c.cfg.PingInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-done:
			return
		case <-out.signal:
		case <-tick:
			out.push(schema.ClientFrame{Type: schema.FramePing})
			continue
		}
		for _, f := range out.take() {
			conn.SetWriteDeadline(time.Now().Add(c.cfg.DialTimeout))
			if err := conn.WriteJSON(f); err != nil {
				c.log.Debug("ripple client: write failed", "err", err)
				conn.Close()
				return
			}
		}
	}
}

package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/schema"
)

// WebSocket close codes the gateway uses (docs/protocol.md).
const (
	closeUnauthorized = 4001
	closeTokenExpired = 4003
	closeSlowClient   = 4008
	closeTooLarge     = websocket.CloseMessageTooBig
	closeGoingAway    = websocket.CloseGoingAway
)

// conn is one client connection. The reader goroutine owns the fields below
// "reader-owned"; the hub owns hc; the writer goroutine owns the socket's
// write side.
type conn struct {
	g  *Gateway
	ws *websocket.Conn
	q  *queue
	hc *hconn

	killOnce  sync.Once
	kill      chan struct{}
	killFrame []byte
	killCode  int
	killText  string
	finalDone chan struct{} // closed once the final frames were written
	finalOnce sync.Once
	netConn   net.Conn        // the socket under ws; the writers frame messages themselves
	raw       syscall.RawConn // netConn's descriptor for flushers' non-blocking writes (nil: none)
	deadline  time.Time       // the socket's write deadline; writer-owned

	in inbox

	// handler-owned (one handler goroutine at a time)
	authTimer  *time.Timer
	authed     bool
	claims     schema.Claims
	expiry     *time.Timer
	confirmKey string
	confirmCh  chan struct{}
	mutSem     chan struct{}
	mutTail    chan struct{} // closed when the last mutation forwarded so far has its reply; handler-owned
	mutWG      sync.WaitGroup
}

func newConn(g *Gateway, ws *websocket.Conn) *conn {
	c := &conn{g: g, ws: ws, q: newQueue(g.cfg.OutboundQueue), kill: make(chan struct{}), in: inbox{space: make(chan struct{}, 1)},
		finalDone: make(chan struct{}), netConn: ws.UnderlyingConn(), mutSem: make(chan struct{}, g.cfg.MaxMutationsInFlight)}
	if sc, ok := c.netConn.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			c.raw = rc
		}
	}
	// Only the writer goroutine writes to the socket: pongs go through the
	// queue, and a client's close frame is answered by the writer's own.
	ws.SetPingHandler(func(data string) error {
		c.push(controlFrame(websocket.PongMessage, []byte(data)))
		return nil
	})
	ws.SetCloseHandler(func(int, string) error { return nil })
	return c
}

// push queues a frame, starting a writer when none runs; false means the
// queue overflowed.
func (c *conn) push(b []byte) bool {
	ok, start := c.q.push(b)
	if start {
		go c.writer(nil, 0)
	}
	return ok
}

// pushWait queues a frame of catch-up gen of s once the queue has room.
func (c *conn) pushWait(ctx context.Context, b []byte, s *sub, gen int) error {
	start, err := c.q.pushWait(ctx, b, &s.genA, int64(gen))
	if start {
		go c.writer(nil, 0)
	}
	return err
}

// controlFrame is a complete WebSocket control frame (server frames are not
// masked); the writer writes frames that do not start with '{' as they are.
func controlFrame(op int, payload []byte) []byte {
	if len(payload) > 125 {
		payload = payload[:125]
	}
	return append([]byte{0x80 | byte(op), byte(len(payload))}, payload...)
}

// appendHeader appends the header of an unmasked final text frame of n
// payload bytes.
func appendHeader(dst []byte, n int) []byte {
	switch {
	case n < 126:
		return append(dst, 0x81, byte(n))
	case n < 1<<16:
		return append(dst, 0x81, 126, byte(n>>8), byte(n))
	default:
		return append(dst, 0x81, 127, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

// cut ends the connection: an optional error frame, then a close frame with
// closeCode. Safe from any goroutine; only the first call counts.
func (c *conn) cut(code, msg string, closeCode int) {
	c.killOnce.Do(func() {
		if code != "" {
			c.killFrame = errorFrame("", code, msg)
			c.g.m.cutClients.WithLabelValues(code).Inc()
		}
		c.killCode = closeCode
		c.killText = code
		close(c.kill)
		if closeCode == closeSlowClient {
			// Unblock a write stuck on the client's full socket now.
			_ = c.netConn.SetWriteDeadline(time.Now())
		}
		if c.q.close() {
			go c.writer(nil, 0)
		}
	})
}

// serve runs the connection until it ends.
func (c *conn) serve() {
	hcCh := make(chan *hconn, 1)
	if !c.g.hub.post(func() { hcCh <- c.g.hub.addConn(c) }) {
		_ = c.ws.Close()
		return
	}
	c.hc = <-hcCh
	c.g.m.clients.Inc()
	defer c.g.m.clients.Dec()
	c.authTimer = time.AfterFunc(c.g.cfg.AuthTimeout, func() {
		c.cut(schema.ErrCodeUnauthorized, "no auth frame in time", closeUnauthorized)
	})
	c.read()
	c.cut("", "", websocket.CloseNormalClosure)
	c.in.wg.Wait()
	c.authTimer.Stop()
	if c.expiry != nil {
		c.expiry.Stop()
	}
	<-c.finalDone
	_ = c.ws.Close()
	c.mutWG.Wait()
	hc := c.hc
	c.g.hub.post(func() { c.g.hub.removeConn(hc) })
}

// writer drains the queue to the socket, many frames per system call,
// blocking on the socket up to the write deadline, and exits when the
// queue is empty. It starts with frames, of which skip bytes were written
// already, when a flusher hands it a connection whose socket was full.
// After cut it writes the final frames.
func (c *conn) writer(frames [][]byte, skip int) {
	// Scratch slices come from a pool shared by all connections: an idle
	// connection holds none.
	ws := c.g.writeScratch.Get().(*writeScratch)
	defer c.g.writeScratch.Put(ws)
	hdrs, bufs := ws.hdrs[:0], ws.bufs[:0]
	defer func() {
		clear(ws.frames)
		clear(bufs[:cap(bufs)])
		if cap(ws.frames) <= 1024 && cap(bufs) <= 2048 && cap(hdrs) <= 16<<10 {
			ws.frames, ws.hdrs, ws.bufs = ws.frames[:0], hdrs[:0], bufs[:0]
		} else {
			*ws = writeScratch{} // do not keep a burst's memory
		}
	}()
	for {
		select {
		case <-c.kill:
			c.finalOnce.Do(c.final)
			return
		default:
		}
		if frames == nil {
			ws.frames = c.q.pop(ws.frames[:0])
			frames = ws.frames
		}
		if len(frames) == 0 {
			// pop marked the writer stopped; a cut meanwhile still needs
			// its final frames.
			select {
			case <-c.kill:
				c.finalOnce.Do(c.final)
			default:
			}
			return
		}
		var payload int
		hdrs, bufs, payload, _ = frameBuffers(frames, hdrs[:0], bufs[:0])
		// The deadline is renewed only once a tenth of WriteTimeout went
		// by, not for every write: each write still gets at least 90% of it.
		if now := time.Now(); c.deadline.Sub(now) < c.g.cfg.WriteTimeout-c.g.cfg.WriteTimeout/10 {
			c.deadline = now.Add(c.g.cfg.WriteTimeout)
			_ = c.netConn.SetWriteDeadline(c.deadline)
		}
		out := skipBytes(bufs, skip) // WriteTo consumes its receiver; bufs keeps the array
		skip = 0
		if _, err := out.WriteTo(c.netConn); err != nil {
			c.cut("", "", websocket.CloseAbnormalClosure)
			clear(frames)
			frames = nil
			continue // the next turn writes nothing more and closes
		}
		c.g.m.writes.Inc()
		c.g.m.messagesOut.Add(float64(len(frames)))
		c.g.m.bytesOut.Add(float64(payload))
		clear(frames)
		frames = nil
	}
}

// writeScratch is a writer's reusable scratch space.
type writeScratch struct {
	frames [][]byte
	hdrs   []byte
	bufs   net.Buffers
}

// final writes the kill frame and the close frame (once).
func (c *conn) final() {
	defer close(c.finalDone)
	defer c.netConn.Close() // ends the reader too
	deadline := time.Now().Add(min(c.g.cfg.WriteTimeout, 2*time.Second))
	_ = c.netConn.SetWriteDeadline(deadline)
	if c.killFrame != nil {
		bufs := net.Buffers{appendHeader(nil, len(c.killFrame)), c.killFrame}
		if _, err := bufs.WriteTo(c.netConn); err != nil {
			return
		}
	}
	if c.killCode != websocket.CloseAbnormalClosure {
		_, _ = c.netConn.Write(controlFrame(websocket.CloseMessage, websocket.FormatCloseMessage(c.killCode, c.killText)))
	}
}

// send queues a frame from the reader side (replies); overflow cuts.
func (c *conn) send(b []byte) {
	if !c.push(b) {
		c.g.m.queueDrops.Inc()
		c.cut(schema.ErrCodeSlowClient, "the connection could not keep up", closeSlowClient)
	}
}

func (c *conn) sendError(id, code, msg string) { c.send(errorFrame(id, code, msg)) }

// read is the reader loop.
func (c *conn) read() {
	limit := int64(c.g.cfg.MaxFrameBytes)
	for {
		mt, r, err := c.ws.NextReader()
		if err != nil {
			return
		}
		// The read buffer is borrowed per frame: an idle connection holds
		// none while it waits for the next one.
		bp := c.g.readBufs.Get().(*[]byte)
		buf := (*bp)[:0]
		n, err := readLimited(r, &buf, limit)
		var frame []byte // nil: a binary frame
		if err == nil && n <= limit && mt == websocket.TextMessage {
			frame = append(make([]byte, 0, len(buf)), buf...)
		}
		if cap(buf) <= 4<<10 {
			*bp = buf[:0]
			c.g.readBufs.Put(bp)
		}
		if err != nil {
			return
		}
		if n > limit {
			c.cut(schema.ErrCodeTooLarge, "frame larger than the limit", closeTooLarge)
			return
		}
		if !c.in.put(frame, c) {
			return
		}
	}
}

// inbox hands frames from the reader to a handler goroutine that runs only
// while frames wait (so an idle connection keeps one shallow goroutine),
// in order. At most inboxLimit frames wait; the reader waits beyond.
type inbox struct {
	mu      sync.Mutex
	frames  [][]byte
	running bool
	space   chan struct{}
	wg      sync.WaitGroup
}

const inboxLimit = 64

func (in *inbox) put(f []byte, c *conn) bool {
	for {
		in.mu.Lock()
		if len(in.frames) < inboxLimit {
			break
		}
		in.mu.Unlock()
		select {
		case <-in.space:
		case <-c.kill:
			return false
		}
	}
	in.frames = append(in.frames, f)
	start := !in.running
	in.running = true
	in.mu.Unlock()
	if start {
		in.wg.Add(1)
		go c.handler()
	}
	return true
}

// handler handles waiting frames in order and exits when none is left. It
// owns the connection's protocol state (authed, claims, expiry, ...).
func (c *conn) handler() {
	defer c.in.wg.Done()
	for {
		c.in.mu.Lock()
		if len(c.in.frames) == 0 {
			c.in.running = false
			c.in.frames = nil
			c.in.mu.Unlock()
			return
		}
		f := c.in.frames[0]
		c.in.frames[0] = nil
		c.in.frames = c.in.frames[1:]
		c.in.mu.Unlock()
		select {
		case c.in.space <- struct{}{}:
		default:
		}
		select {
		case <-c.kill:
			continue // drain without acting
		default:
		}
		c.handle(f)
	}
}

// handle acts on one client frame (nil: a binary frame).
func (c *conn) handle(b []byte) {
	if b == nil {
		c.sendError("", schema.ErrCodeBadFrame, "frames are JSON text frames")
		return
	}
	f, err := DecodeClientFrame(b)
	if err != nil {
		c.sendError("", schema.ErrCodeBadFrame, err.Error())
		return
	}
	if f.Type == schema.FrameAuth {
		if c.onAuth(f) {
			c.authTimer.Stop()
		}
		return
	}
	if !c.authed {
		c.sendError(f.ID, schema.ErrCodeUnauthorized, "authenticate first")
		return
	}
	switch f.Type {
	case schema.FramePing:
		c.send(encodeFrame(schema.ServerFrame{Type: schema.FramePong, ID: f.ID}))
	case schema.FrameSubscribe:
		c.onSubscribe(f)
	case schema.FrameUnsubscribe:
		hc, id := c.hc, f.ID
		c.g.hub.post(func() { c.g.hub.unsubscribe(hc, id) })
	case schema.FrameMutate:
		c.onMutate(f)
	}
}

// readLimited reads r into buf, at most limit+1 bytes; it returns how many
// bytes the frame had (limit+1 meaning "more than limit").
func readLimited(r io.Reader, buf *[]byte, limit int64) (int64, error) {
	b := *buf
	var n int64
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		room := int64(cap(b) - len(b))
		if n+room > limit+1 {
			room = limit + 1 - n
		}
		m, err := r.Read(b[len(b) : len(b)+int(room)])
		b = b[:len(b)+m]
		n += int64(m)
		if n > limit {
			*buf = b
			return n, nil
		}
		if err == io.EOF {
			*buf = b
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (c *conn) onAuth(f schema.ClientFrame) bool {
	claims, err := c.g.verifier.Verify(f.Token)
	if err != nil {
		code := schema.ErrCodeUnauthorized
		if errors.Is(err, auth.ErrExpired) {
			code = schema.ErrCodeTokenExpired
		}
		if !c.authed {
			closeCode := closeUnauthorized
			if code == schema.ErrCodeTokenExpired {
				closeCode = closeTokenExpired
			}
			c.cut(code, err.Error(), closeCode)
			return false
		}
		// A bad refresh changes nothing: the old token stays in force.
		c.sendError("", code, err.Error())
		return true
	}
	c.authed = true
	c.claims = claims
	if c.expiry != nil {
		c.expiry.Stop()
	}
	c.expiry = time.AfterFunc(time.Until(claims.Expires), func() {
		c.cut(schema.ErrCodeTokenExpired, "the token expired; reconnect with a fresh one", closeTokenExpired)
	})
	hc := c.hc
	c.g.hub.post(func() { c.g.hub.setClaims(hc, claims) })
	c.send(encodeFrame(schema.ServerFrame{Type: schema.FrameAuthOK, Sub: claims.Subject, Exp: claims.Expires.Unix()}))
	return true
}

func (c *conn) onSubscribe(f schema.ClientFrame) {
	// Authorisation first: nothing touches NATS or the database for a
	// subscription outside the token.
	if f.Table == schema.MutationsTable || !c.claims.CanRead(f.Org, f.Table) {
		c.sendError(f.ID, schema.ErrCodeForbidden, "organisation or table not in the token")
		return
	}
	ctx, cancel := context.WithTimeout(c.g.ctx, 10*time.Second)
	tbl, err := c.g.cfg.Catchup.Table(ctx, f.Table)
	cancel()
	if err != nil {
		if errors.Is(err, schema.ErrUnknownTable) {
			c.sendError(f.ID, schema.ErrCodeUnknownTable, "not a sync table: "+f.Table)
		} else {
			c.sendError(f.ID, schema.ErrCodeUnavailable, "cannot load the table: "+err.Error())
		}
		return
	}
	req := subscribeReq{id: f.ID, table: tbl, org: f.Org, cursor: f.Cursor}
	if f.LSN != nil {
		req.lsn = *f.LSN
	}
	if f.Columns != nil {
		proj, err := catchup.NewProjection(tbl, f.Columns)
		if err != nil {
			c.sendError(f.ID, schema.ErrCodeBadColumns, err.Error())
			return
		}
		if !proj.All() {
			req.proj, req.cols = proj, f.Columns
		}
	}
	hc := c.hc
	c.g.hub.post(func() { c.g.hub.subscribe(hc, req) })
}

func (c *conn) onMutate(f schema.ClientFrame) {
	orgs := slices.Clone(c.claims.WriteOrgs)
	slices.Sort(orgs)
	// Client ids are chosen by clients: the writer sees them scoped to the
	// token's subject, so another user who sends the same client id gets
	// neither this user's recorded replies nor its confirmations.
	scoped := scopeClientID(c.claims.Subject, f.ClientID)
	key := scoped + "\x00" + strings.Join(orgs, "\x00")
	if key != c.confirmKey {
		// Confirmations of this client id must be proven live before the
		// writer commits anything for it.
		ch := make(chan struct{})
		hc, cid := c.hc, scoped
		if !c.g.hub.post(func() { c.g.hub.addConfirm(hc, cid, orgs, ch) }) {
			return
		}
		c.confirmKey, c.confirmCh = key, ch
	}
	req := schema.MutationRequest{ClientID: scoped, MutationID: f.MutationID, Mutator: f.Mutator, Args: f.Args, Claims: c.claims}
	clientID := f.ClientID
	ready := c.confirmCh
	select {
	case c.mutSem <- struct{}{}:
	case <-c.kill:
		return
	}
	// One connection's mutations go to the writers one after another, in
	// the order the client sent them: writers in a queue group would
	// otherwise receive them out of order and answer
	// mutation_out_of_order, making the client resend after a back-off.
	// The queue (bounded by mutSem) lets a client send many at once.
	prev, done := c.mutTail, make(chan struct{})
	c.mutTail = done
	c.mutWG.Add(1)
	go func() {
		defer c.mutWG.Done()
		defer func() { <-c.mutSem }()
		defer close(done)
		if prev != nil {
			select {
			case <-prev:
			case <-c.kill:
				return
			}
		}
		c.send(c.g.mutate(ready, req, clientID))
	}()
}

// mutate forwards one mutation to the writers and returns the reply frame.
func (g *Gateway) mutate(ready chan struct{}, req schema.MutationRequest, clientID string) []byte {
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.MutationTimeout)
	defer cancel()
	reply := schema.ServerFrame{Type: schema.FrameMutation, ClientID: clientID, MutationID: req.MutationID,
		Status: schema.MutationRejected, Code: schema.ErrCodeUnavailable}
	select {
	case <-ready:
	case <-ctx.Done():
		reply.Message = "the stream of confirmations is not available; send the mutation again"
		g.m.mutations.WithLabelValues("unavailable").Inc()
		return encodeFrame(reply)
	}
	body, _ := json.Marshal(req)
	msg, err := g.nc.RequestWithContext(ctx, schema.SubjectMutate, body)
	if err != nil {
		reply.Message = "no writer answered; send the mutation again"
		g.log.Debug("mutation request failed", slog.String("client_id", req.ClientID), slog.Any("error", err))
		g.m.mutations.WithLabelValues("unavailable").Inc()
		return encodeFrame(reply)
	}
	var r schema.MutationReply
	if err := json.Unmarshal(msg.Data, &r); err != nil || r.Status == "" {
		reply.Code, reply.Message = schema.ErrCodeInternal, "malformed writer reply"
		g.m.mutations.WithLabelValues("internal").Inc()
		return encodeFrame(reply)
	}
	g.m.mutations.WithLabelValues(r.Status).Inc()
	out := schema.ServerFrame{Type: schema.FrameMutation, ClientID: clientID, MutationID: req.MutationID,
		Status: r.Status, Code: r.Code, Message: r.Message, Result: r.Result, XID: r.XID}
	return encodeFrame(out)
}

// scopeClientID is the client id a writer records: the token's subject and
// the client's own id, length-prefixed so no two pairs give the same string.
func scopeClientID(subject, clientID string) string {
	return strconv.Itoa(len(subject)) + ":" + subject + "/" + clientID
}

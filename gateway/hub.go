package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/schema"
)

// The hub is one goroutine that owns every piece of shared streaming state:
// the NATS topics, transactions being assembled, the decoded-through
// position and every subscription's merge state. All NATS deliveries of the
// gateway's connection (data subjects, the control subject and the inbox of
// barrier replies) arrive on one channel and are handled in order (rule 8).
// Connections talk to the hub by posting closures (post); the hub talks to
// connections only through their outbound queues, never blocking.
type hub struct {
	g    *Gateway
	log  *slog.Logger
	msgs chan *nats.Msg
	cmds chan func()
	done chan struct{}
	ctx  context.Context

	topics    map[string]*topic
	conns     map[*hconn]struct{}
	txs       map[txKey]*txAsm
	mergeWait map[*sub]struct{}
	ctlSub    *nats.Subscription
	inboxSub  *nats.Subscription
	inbox     string
	barrierN  uint64

	d       schema.LSN // decoded-through: every commit <= d has been handled
	curXID  schema.XID8
	epoch   string
	lastHB  time.Time
	hbSeen  bool
	gapped  bool
	natsUp  bool
	chunkN  uint64
	stopped bool

	deferred    []*hconn
	deferredXID schema.XID8

	kick   []*conn   // connections whose writer waits for startWriters
	kickAt time.Time // when the first of them was queued

	lazy, lazyOld []*conn   // connections with frames queued by sendLazy
	lazyAt        time.Time // when lazy began
}

// topic is one NATS data subject the gateway subscribes to.
type topic struct {
	subject    string
	org, table string
	isMut      bool
	nsub       *nats.Subscription
	live       bool
	barrierID  string
	barrierAt  time.Time
	subs       map[*sub]struct{}
	confirm    map[*hconn]struct{}
	waiters    []*liveWaiter
	// recent lists the transactions completed on this topic in the last
	// recentKeep (oldest first), numbered by commitN. A commit can reach
	// the gateway before it is visible to new snapshots on the primary:
	// a catch-up checks that its snapshot sees those completed before it
	// began (flush).
	recent     []recentCommit
	recentHead int // recent[:recentHead] are older than recentKeep
	commitN    uint64
}

// recentCommit is a transaction completed on a topic.
type recentCommit struct {
	n   uint64
	xid schema.XID8
	at  time.Time
}

// recentKeep is how long a topic remembers its completed transactions: far
// longer than a committing backend takes from flushing its commit record to
// becoming visible, and than a catch-up takes to take its snapshot.
const recentKeep = 10 * time.Second

// liveWaiter is closed once all the topics it waits for are live.
type liveWaiter struct {
	remaining int
	ch        chan struct{}
}

type txKey struct {
	xid schema.XID8
	org string
}

// txAsm is a transaction (of one organisation) being received.
type txAsm struct {
	key       txKey
	nextSeq   map[string]int
	last      map[string]bool
	topics    map[*topic]struct{}
	subjects  []string
	lsn       schema.LSN
	time      time.Time
	haveLast  bool
	live      []*sub   // live subscriptions sent parts of it (each once)
	conns     []*hconn // their connections (each once)
	bufSubs   map[*sub]struct{}
	confirmed map[*hconn][]int64
}

// hconn is the hub's state of one client connection.
type hconn struct {
	c         *conn
	subs      map[string]*sub
	clientIDs map[string]bool
	confirmTo map[*topic]struct{}
	lastLSN   schema.LSN
	lastXID   schema.XID8
	chunkMark uint64
	txMark    *txAsm
	deferred  *deferredCommit
	multi     bool // cached multiOrg, valid unless orgsDirty
	orgsDirty bool // subs or confirmTo changed since multi was computed
}

// deferredCommit is the commit frame of a connection whose subscriptions
// span several organisations: a transaction may have parts in more than one
// of them, so the frame waits until the stream moved past the transaction
// and then closes it once for all its organisations.
type deferredCommit struct {
	xid       schema.XID8
	lsn       schema.LSN
	time      time.Time
	confirmed []int64
}

type subState int

const (
	stWait    subState = iota // topic not live yet
	stCatchup                 // catch-up running or done, live commits buffered
	stBackoff                 // catch-up failed; waiting to retry
	stLive                    // ready sent; live commits forwarded
)

// sub is one client subscription.
type sub struct {
	hc      *hconn
	id      string
	t       *topic
	key     []string
	proj    *catchup.Projection // nil: every column
	cols    []string
	state   subState
	cursor  *schema.XID8
	applied schema.LSN
	gen     int
	genA    atomic.Int64 // gen, for catch-up goroutines (-1 once removed)
	cancel  context.CancelFunc
	removed bool
	retry   int

	txMark    *txAsm
	buffering bool
	buf       []bufEntry
	bufParts  int
	partial   map[schema.XID8]bool
	before    uint64 // t.commitN when buffering began
	retakes   int    // snapshots taken again in a row (flush)
	done      bool
	res       catchup.Result
}

type bufEntry struct {
	part   *schema.RawPart
	commit *txAsm
}

func newHub(g *Gateway, ctx context.Context) *hub {
	return &hub{
		g:         g,
		log:       g.log,
		ctx:       ctx,
		msgs:      make(chan *nats.Msg, 1<<16),
		cmds:      make(chan func(), 1024),
		done:      make(chan struct{}),
		topics:    map[string]*topic{},
		conns:     map[*hconn]struct{}{},
		txs:       map[txKey]*txAsm{},
		mergeWait: map[*sub]struct{}{},
	}
}

// post runs f on the hub goroutine. It reports false when the hub stopped.
func (h *hub) post(f func()) bool {
	select {
	case h.cmds <- f:
		return true
	case <-h.done:
		return false
	}
}

// start subscribes to the control subject and the reply inbox.
func (h *hub) start() error {
	nc := h.g.nc
	var err error
	if h.ctlSub, err = nc.ChanSubscribe(schema.SubjectControl, h.msgs); err != nil {
		return err
	}
	h.inbox = nc.NewRespInbox()
	if h.inboxSub, err = nc.ChanSubscribe(h.inbox, h.msgs); err != nil {
		return err
	}
	for _, s := range []*nats.Subscription{h.ctlSub, h.inboxSub} {
		_ = s.SetPendingLimits(-1, -1)
	}
	h.natsUp = nc.IsConnected()
	return nc.Flush()
}

func (h *hub) run() {
	defer close(h.done)
	defer h.g.flush.close() // the hub is the flushers' only source
	iv := min(h.g.cfg.BarrierTimeout, h.g.cfg.HeartbeatTimeout) / 4
	// (At most lazyDelay/2 apart: onTick also flushes lazy frames.)
	tick := time.NewTicker(min(max(iv, 10*time.Millisecond), lazyDelay/2))
	defer tick.Stop()
	kickTimer := time.NewTimer(time.Hour)
	kickTimer.Stop()
	defer kickTimer.Stop()
	kickArmed := false
	for {
		select {
		case <-h.ctx.Done():
			h.startWriters()
			h.stop()
			return
		case m := <-h.msgs:
			h.onMsg(m)
		case f := <-h.cmds:
			f()
		case now := <-tick.C:
			h.onTick(now)
		case <-kickTimer.C:
			kickArmed = false
		}
		if len(h.kick) == 0 {
			continue
		}
		// Writers wait while NATS messages wait or a transaction is
		// still being received (its commit frame, and the next
		// transactions, then leave in the same write), never longer than
		// maxWriterDelay.
		if wait := maxWriterDelay - time.Since(h.kickAt); wait <= 0 || (len(h.msgs) == 0 && len(h.txs) == 0) {
			h.startWriters()
		} else if !kickArmed {
			kickTimer.Reset(wait)
			kickArmed = true
		}
	}
}

// maxWriterDelay bounds how long the hub holds back the writers of frames it
// queued.
const maxWriterDelay = time.Millisecond

// startWriters hands the connections whose queues the hub filled since the
// last call to the flushers.
func (h *hub) startWriters() {
	h.g.flush.add(h.kick)
	clear(h.kick)
	h.kick = h.kick[:0]
}

func (h *hub) stop() {
	h.stopped = true
	for hc := range h.conns {
		for _, s := range hc.subs {
			if s.cancel != nil {
				s.cancel()
			}
		}
	}
	for _, t := range h.topics {
		_ = t.nsub.Unsubscribe()
	}
	if h.ctlSub != nil {
		_ = h.ctlSub.Unsubscribe()
	}
	if h.inboxSub != nil {
		_ = h.inboxSub.Unsubscribe()
	}
}

func (h *hub) ready() bool { return h.natsUp && h.hbSeen && !h.gapped }

func (h *hub) setReady() { h.g.ready.Store(h.ready()) }

// ---- NATS messages ----

var partPrefix = []byte(`{"k":"part"`)

func (h *hub) onMsg(m *nats.Msg) {
	h.g.m.natsIn.Inc()
	if len(h.deferred) > 0 && !bytes.HasPrefix(m.Data, partPrefix) {
		h.flushDeferred()
	}
	if m.Subject == schema.SubjectControl {
		h.onControl(m.Data)
		return
	}
	if m.Subject == h.inbox {
		var r schema.BarrierReply
		if err := json.Unmarshal(m.Data, &r); err == nil && r.Error != "" {
			h.log.Warn("barrier request refused", slog.String("error", r.Error))
		}
		return
	}
	t := h.topics[m.Subject]
	if t == nil {
		return // a topic dropped since; its queued messages are stale
	}
	kind := schema.KindPart
	if !bytes.HasPrefix(m.Data, partPrefix) {
		var env schema.Envelope
		if err := json.Unmarshal(m.Data, &env); err != nil {
			h.log.Warn("undecodable message", slog.String("subject", m.Subject), slog.Any("error", err))
			return
		}
		kind = env.K
	}
	switch kind {
	case schema.KindPart:
		p := new(schema.RawPart)
		if err := json.Unmarshal(m.Data, p); err != nil {
			h.log.Warn("undecodable part", slog.String("subject", m.Subject), slog.Any("error", err))
			h.gapTopic(t, "gap")
			return
		}
		h.onPart(t, p)
	case schema.KindBarrier:
		var b schema.Barrier
		if err := json.Unmarshal(m.Data, &b); err != nil {
			return
		}
		h.onBarrier(t, &b)
	}
}

func (h *hub) onControl(data []byte) {
	var env schema.Envelope
	if err := json.Unmarshal(data, &env); err != nil {
		h.log.Warn("undecodable control message", slog.Any("error", err))
		return
	}
	switch env.K {
	case schema.KindHeartbeat:
		var hb schema.Heartbeat
		if err := json.Unmarshal(data, &hb); err != nil {
			return
		}
		h.onHeartbeat(&hb)
	case schema.KindResync:
		var r schema.Resync
		if err := json.Unmarshal(data, &r); err != nil {
			return
		}
		h.checkEpoch(r.Epoch)
		h.d = max(h.d, r.LSN)
		reason := r.Reason
		if reason == "" {
			reason = "resync"
		}
		for hc := range h.conns {
			for _, s := range hc.subs {
				if s.t.table == r.Table && (r.Org == "" || s.t.org == r.Org) {
					h.resync(s, reason, true)
				}
			}
		}
	}
}

func (h *hub) checkEpoch(e string) {
	if e == "" || e == h.epoch {
		return
	}
	if h.epoch != "" {
		// The ingest restarted: it repeats from its slot's confirmed
		// position. Transactions being assembled will come again from
		// seq 0; commits at or below what clients applied are dropped.
		h.log.Info("ingest epoch changed", slog.String("old", h.epoch), slog.String("new", e))
		clear(h.txs)
		h.curXID = 0
	}
	h.epoch = e
}

func (h *hub) onHeartbeat(hb *schema.Heartbeat) {
	h.checkEpoch(hb.Epoch)
	h.lastHB = time.Now()
	h.d = max(h.d, hb.D)
	h.hbSeen = true
	if h.gapped {
		h.gapped = false
	}
	h.setReady()
	if cp := hb.Checkpoint; cp != nil && cp.LSN <= h.d {
		lsn, cursor := cp.LSN.String(), cp.XMin.String()
		for hc := range h.conns {
			for _, s := range hc.subs {
				if s.state != stLive || (s.cursor != nil && cp.XMin <= *s.cursor) {
					continue
				}
				s.cursor = xidPtr(cp.XMin)
				s.applied = max(s.applied, cp.LSN)
				h.sendLazy(hc, encodeCheckpoint(s.id, lsn, cursor))
			}
		}
	}
	h.checkMerges()
}

func (h *hub) onBarrier(t *topic, b *schema.Barrier) {
	h.checkEpoch(b.Epoch)
	h.d = max(h.d, b.D)
	if t.live || b.ID != t.barrierID {
		h.checkMerges()
		return
	}
	t.live = true
	for s := range t.subs {
		if s.state == stWait {
			h.startCatchup(s)
		}
	}
	for _, w := range t.waiters {
		if w.remaining--; w.remaining == 0 {
			close(w.ch)
		}
	}
	t.waiters = nil
	h.checkMerges()
}

func (h *hub) onPart(t *topic, p *schema.RawPart) {
	if len(h.deferred) > 0 && p.XID != h.deferredXID {
		h.flushDeferred()
	}
	h.checkEpoch(p.Epoch)
	if p.XID != h.curXID {
		// A new transaction began: the ingest published every part of the
		// previous ones. Any still incomplete lost a message.
		for k, a := range h.txs {
			if k.xid != p.XID {
				h.abandon(a)
			}
		}
		h.curXID = p.XID
	}
	if !t.live {
		return
	}
	// A topic that became live in the middle of a transaction still
	// receives all of that transaction's parts on its subject: the ingest
	// defers a barrier on a subject that already carried a chunk of the
	// open transaction until that transaction's commit.
	key := txKey{p.XID, p.Org}
	a := h.txs[key]
	if a == nil {
		if p.Seq != 0 {
			h.log.Warn("part chunk without its start", slog.String("subject", t.subject), slog.Int("seq", p.Seq))
			h.gapTopic(t, "gap")
			return
		}
		a = &txAsm{key: key, nextSeq: map[string]int{}, last: map[string]bool{}, topics: map[*topic]struct{}{},
			bufSubs: map[*sub]struct{}{}}
		h.txs[key] = a
	}
	exp := a.nextSeq[t.subject]
	switch {
	case p.Seq == 0 && exp > 0:
		// The ingest restarted and repeats this transaction.
		h.restartAsm(a)
	case p.Seq != exp:
		h.log.Warn("part chunk out of sequence", slog.String("subject", t.subject), slog.Int("seq", p.Seq), slog.Int("want", exp))
		h.abandon(a)
		return
	}
	a.nextSeq[t.subject] = p.Seq + 1
	a.topics[t] = struct{}{}
	if t.isMut {
		h.collectConfirmations(t, a, p)
	} else {
		h.dispatch(t, a, p)
	}
	if p.Last {
		a.last[t.subject] = true
		if !a.haveLast {
			a.haveLast = true
			a.subjects = p.Subjects
			a.lsn = p.LSN
			a.time = p.CommitTime
		}
		if p.LSN > 0 {
			h.d = max(h.d, p.LSN-1)
		}
		if h.complete(a) {
			h.finish(a)
		}
	}
}

// dispatch forwards one chunk to live subscriptions (the shared bytes once
// per connection, projected copies where a column list applies) and buffers
// it for subscriptions whose catch-up runs.
func (h *hub) dispatch(t *topic, a *txAsm, p *schema.RawPart) {
	h.chunkN++
	var shared []byte
	var ops []schema.Op
	decoded := false
	for s := range t.subs {
		switch s.state {
		case stLive:
			hc := s.hc
			if s.txMark != a {
				s.txMark = a
				a.live = append(a.live, s)
			}
			if hc.txMark != a {
				hc.txMark = a
				a.conns = append(a.conns, hc)
			}
			if s.proj == nil {
				if hc.chunkMark == h.chunkN {
					continue
				}
				hc.chunkMark = h.chunkN
				if shared == nil {
					shared = encodePart("", p, p.Ops)
				}
				h.send(hc, shared)
				continue
			}
			if !decoded {
				decoded = true
				if err := json.Unmarshal(p.Ops, &ops); err != nil {
					h.log.Warn("undecodable ops", slog.String("subject", t.subject), slog.Any("error", err))
				}
			}
			h.send(hc, encodePart(s.id, p, projectOps(s.proj, ops)))
		case stCatchup:
			if !s.buffering {
				continue
			}
			s.buf = append(s.buf, bufEntry{part: p})
			s.bufParts++
			a.bufSubs[s] = struct{}{}
			if s.bufParts > h.g.cfg.SnapshotBufferLimit {
				h.log.Info("live buffer overflow; restarting catch-up", slog.String("sub", s.id), slog.String("subject", t.subject))
				h.startCatchup(s)
			}
		}
	}
}

func projectOps(p *catchup.Projection, ops []schema.Op) []byte {
	var buf []byte
	out := make([]schema.Op, len(ops))
	for i, op := range ops {
		o, nb, err := p.ApplyOp(buf, op)
		if err != nil {
			o = op
		}
		buf = nb
		out[i] = o
	}
	return appendOps(nil, out)
}

// collectConfirmations notes which mutation records of a part belong to
// clients of this gateway; the records themselves are never forwarded.
func (h *hub) collectConfirmations(t *topic, a *txAsm, p *schema.RawPart) {
	if len(t.confirm) == 0 {
		return
	}
	var ops []struct {
		Op  string `json:"op"`
		Row struct {
			ClientID   string          `json:"client_id"`
			MutationID json.RawMessage `json:"mutation_id"`
		} `json:"row"`
	}
	if err := json.Unmarshal(p.Ops, &ops); err != nil {
		return
	}
	for _, op := range ops {
		if op.Op != schema.OpInsert && op.Op != schema.OpUpdate {
			continue
		}
		id, err := strconv.ParseInt(strings.Trim(string(op.Row.MutationID), `"`), 10, 64)
		if err != nil {
			continue
		}
		for hc := range t.confirm {
			if hc.clientIDs[op.Row.ClientID] {
				if a.confirmed == nil {
					a.confirmed = map[*hconn][]int64{}
				}
				a.confirmed[hc] = append(a.confirmed[hc], id)
			}
		}
	}
}

// complete reports whether every subscribed, live subject the transaction
// names has delivered its last chunk.
func (h *hub) complete(a *txAsm) bool {
	if !a.haveLast {
		return false
	}
	for _, subj := range a.subjects {
		t := h.topics[subj]
		if t == nil || !t.live {
			continue
		}
		if !a.last[subj] {
			return false
		}
	}
	return true
}

// finish closes a complete transaction: a commit frame to every connection
// that received a part of it (or has a mutation confirmed by it), and a
// commit marker in the buffers of subscriptions catching up.
func (h *hub) finish(a *txAsm) {
	delete(h.txs, a.key)
	now := time.Now()
	for t := range a.topics {
		t.remember(a.key.xid, now)
	}
	var shared []byte // the commit frame of connections without confirmations
	commit := func(hc *hconn) {
		if d := hc.deferred; d != nil && d.xid == a.key.xid {
			d.confirmed = append(d.confirmed, a.confirmed[hc]...) // another organisation of it
			return
		}
		if a.lsn <= hc.lastLSN {
			return // a repeat: the client applied it already
		}
		hc.lastLSN, hc.lastXID = a.lsn, a.key.xid
		if hc.multiOrg() {
			if len(h.deferred) > 0 && h.deferredXID != a.key.xid {
				h.flushDeferred()
			}
			hc.deferred = &deferredCommit{xid: a.key.xid, lsn: a.lsn, time: a.time, confirmed: a.confirmed[hc]}
			h.deferred = append(h.deferred, hc)
			h.deferredXID = a.key.xid
			return
		}
		if conf := a.confirmed[hc]; len(conf) > 0 {
			h.send(hc, encodeCommit("", a.key.xid, a.lsn, a.time, conf))
		} else {
			if shared == nil {
				shared = encodeCommit("", a.key.xid, a.lsn, a.time, nil)
			}
			h.send(hc, shared)
		}
		if !a.time.IsZero() {
			h.g.m.latency.Observe(now.Sub(a.time).Seconds())
		}
	}
	for _, s := range a.live {
		s.txMark = nil
		if !s.removed && s.state == stLive {
			s.applied = max(s.applied, a.lsn)
		}
	}
	for _, hc := range a.conns {
		if _, ok := h.conns[hc]; ok {
			commit(hc)
		}
	}
	for hc := range a.confirmed {
		if _, ok := h.conns[hc]; ok && hc.txMark != a {
			commit(hc) // confirmations without parts
		}
	}
	for _, hc := range a.conns {
		hc.txMark = nil
	}
	for s := range a.bufSubs {
		if !s.removed && s.state == stCatchup && s.buffering {
			s.buf = append(s.buf, bufEntry{commit: a})
		}
	}
	h.checkMerges()
}

// remember records a transaction completed on t and forgets those older than
// recentKeep. The list is compacted only once the forgotten ones are half of
// it, so a busy topic does not copy its whole list on every commit.
func (t *topic) remember(xid schema.XID8, now time.Time) {
	for t.recentHead < len(t.recent) && now.Sub(t.recent[t.recentHead].at) > recentKeep {
		t.recentHead++
	}
	if t.recentHead > 0 && t.recentHead >= len(t.recent)/2 {
		n := copy(t.recent, t.recent[t.recentHead:])
		clear(t.recent[n:])
		t.recent, t.recentHead = t.recent[:n], 0
	}
	t.commitN++
	t.recent = append(t.recent, recentCommit{n: t.commitN, xid: xid, at: now})
}

// multiOrg reports whether the connection follows more than one
// organisation (subscriptions or mutation confirmations).
func (hc *hconn) multiOrg() bool {
	if hc.orgsDirty {
		hc.multi, hc.orgsDirty = hc.computeMultiOrg(), false
	}
	return hc.multi
}

func (hc *hconn) computeMultiOrg() bool {
	org := ""
	for _, s := range hc.subs {
		if org != "" && s.t.org != org {
			return true
		}
		org = s.t.org
	}
	for t := range hc.confirmTo {
		if org != "" && t.org != org {
			return true
		}
		org = t.org
	}
	return false
}

// flushDeferred sends the commit frames held for multi-organisation
// connections: the stream moved past their transaction.
func (h *hub) flushDeferred() {
	for _, hc := range h.deferred {
		d := hc.deferred
		hc.deferred = nil
		if _, ok := h.conns[hc]; !ok || d == nil {
			continue
		}
		h.send(hc, encodeCommit("", d.xid, d.lsn, d.time, d.confirmed))
		if !d.time.IsZero() {
			h.g.m.latency.Observe(time.Since(d.time).Seconds())
		}
	}
	clear(h.deferred)
	h.deferred = h.deferred[:0]
}

// abandon drops a transaction that can no longer complete (a chunk went
// missing): every subscription of its topics resynchronises.
func (h *hub) abandon(a *txAsm) {
	delete(h.txs, a.key)
	h.log.Warn("incomplete transaction dropped", slog.String("xid", a.key.xid.String()), slog.String("org", a.key.org))
	for t := range a.topics {
		if h.topics[t.subject] == t && t.live {
			h.gapTopic(t, "gap")
		}
	}
	for _, subj := range a.subjects {
		if t := h.topics[subj]; t != nil && t.live && !a.last[subj] {
			h.gapTopic(t, "gap")
		}
	}
}

// restartAsm forgets what was received of a transaction the ingest repeats.
func (h *hub) restartAsm(a *txAsm) {
	clear(a.nextSeq)
	clear(a.last)
	a.haveLast = false
	for s := range a.bufSubs {
		keep := s.buf[:0]
		for _, e := range s.buf {
			if e.part == nil || e.part.XID != a.key.xid {
				keep = append(keep, e)
			} else {
				s.bufParts--
			}
		}
		s.buf = keep
	}
	clear(a.bufSubs)
}

// busy reports whether a transaction touching t is still being received.
func (h *hub) busy(t *topic) bool {
	for _, a := range h.txs {
		if _, ok := a.topics[t]; ok {
			return true
		}
	}
	return false
}

// ---- subscriptions ----

// send queues a frame on a connection; a connection whose queue is full is
// cut (it never slows the hub or other clients).
func (h *hub) send(hc *hconn, b []byte) {
	ok, start := hc.c.q.push(b)
	if start {
		// The writer starts once the hub is through with the messages
		// that are waiting (startWriters): a transaction's part and commit
		// frames, and under load several transactions, leave in one write.
		if len(h.kick) == 0 {
			h.kickAt = time.Now()
		}
		h.kick = append(h.kick, hc.c)
	}
	if !ok {
		h.drop(hc)
	}
}

// sendBulk queues frames on a connection beyond its queue's limit
// (queue.pushBulk).
func (h *hub) sendBulk(hc *hconn, frames [][]byte) {
	if hc.c.q.pushBulk(frames) {
		if len(h.kick) == 0 {
			h.kickAt = time.Now()
		}
		h.kick = append(h.kick, hc.c)
	}
}

// lazyDelay is about how long a frame queued by sendLazy may wait for its
// connection's next write (between lazyDelay and twice that, plus a tick).
const lazyDelay = 500 * time.Millisecond

// sendLazy queues a frame that can wait for the connection's next write
// (checkpoints): sent to every live subscription at once, they would
// otherwise cost a write per connection in one burst, delaying the commits
// behind them. A connection with nothing else to send gets its writer
// within about lazyDelay (onTick).
func (h *hub) sendLazy(hc *hconn, b []byte) {
	if !hc.c.q.pushQuiet(b) {
		h.drop(hc)
		return
	}
	h.lazy = append(h.lazy, hc.c)
}

// flushLazy starts writers for connections whose lazy frames waited since
// the previous call but one.
func (h *hub) flushLazy(now time.Time) {
	var kick []*conn
	for i, c := range h.lazyOld {
		if c.q.kickLazy() {
			kick = append(kick, c)
		}
		h.lazyOld[i] = nil
	}
	h.g.flush.addLazy(kick)
	h.lazyOld, h.lazy = h.lazy, h.lazyOld[:0]
	h.lazyAt = now
}

// drop cuts a connection whose queue overflowed.
func (h *hub) drop(hc *hconn) {
	h.g.m.queueDrops.Inc()
	hc.c.cut(schema.ErrCodeSlowClient, "the connection could not keep up with the live stream", closeSlowClient)
}

func (h *hub) addConn(c *conn) *hconn {
	hc := &hconn{c: c, subs: map[string]*sub{}, clientIDs: map[string]bool{}, confirmTo: map[*topic]struct{}{}}
	h.conns[hc] = struct{}{}
	return hc
}

func (h *hub) removeConn(hc *hconn) {
	if _, ok := h.conns[hc]; !ok {
		return
	}
	for _, s := range hc.subs {
		h.removeSub(s)
	}
	for t := range hc.confirmTo {
		delete(t.confirm, hc)
		h.maybeDropTopic(t)
	}
	delete(h.conns, hc)
}

// subscribeReq is a validated subscribe frame.
type subscribeReq struct {
	id     string
	table  *schema.Table
	org    string
	proj   *catchup.Projection
	cols   []string
	cursor *schema.XID8
	lsn    schema.LSN
}

func (h *hub) subscribe(hc *hconn, r subscribeReq) {
	if _, ok := h.conns[hc]; !ok {
		return
	}
	if _, dup := hc.subs[r.id]; dup {
		h.send(hc, errorFrame(r.id, schema.ErrCodeDuplicateID, "subscription id already in use"))
		return
	}
	t, err := h.topic(schema.DataSubject(r.org, r.table.Name), r.org, r.table.Name, false)
	if err != nil {
		h.send(hc, errorFrame(r.id, schema.ErrCodeUnavailable, "cannot subscribe: "+err.Error()))
		return
	}
	s := &sub{hc: hc, id: r.id, t: t, key: r.table.PrimaryKey, proj: r.proj, cols: r.cols, cursor: r.cursor, applied: r.lsn}
	hc.subs[r.id] = s
	hc.orgsDirty = true
	t.subs[s] = struct{}{}
	h.g.m.subscriptions.Inc()
	if t.live {
		h.startCatchup(s)
	}
}

func (h *hub) unsubscribe(hc *hconn, id string) {
	s := hc.subs[id]
	if s == nil {
		h.send(hc, errorFrame(id, schema.ErrCodeUnknownSub, "no subscription with this id"))
		return
	}
	h.removeSub(s)
	h.send(hc, encodeFrame(schema.ServerFrame{Type: schema.FrameUnsubscribed, ID: id}))
}

// setClaims ends the subscriptions that fresh claims no longer allow.
func (h *hub) setClaims(hc *hconn, c schema.Claims) {
	for _, s := range hc.subs {
		if !c.CanRead(s.t.org, s.t.table) {
			h.removeSub(s)
			h.send(hc, errorFrame(s.id, schema.ErrCodeForbidden, "the new token does not allow this subscription"))
		}
	}
}

func (h *hub) removeSub(s *sub) {
	if s.removed {
		return
	}
	s.removed = true
	s.genA.Store(-1)
	if s.cancel != nil {
		s.cancel()
	}
	s.buf = nil
	delete(s.hc.subs, s.id)
	s.hc.orgsDirty = true
	delete(s.t.subs, s)
	delete(h.mergeWait, s)
	h.g.m.subscriptions.Dec()
	h.maybeDropTopic(s.t)
}

// topic returns the topic of subject, subscribing (and asking for a
// barrier) when it is new.
func (h *hub) topic(subject, org, table string, isMut bool) (*topic, error) {
	if t := h.topics[subject]; t != nil {
		return t, nil
	}
	ns, err := h.g.nc.ChanSubscribe(subject, h.msgs)
	if err != nil {
		return nil, err
	}
	_ = ns.SetPendingLimits(-1, -1)
	t := &topic{subject: subject, org: org, table: table, isMut: isMut, nsub: ns,
		subs: map[*sub]struct{}{}, confirm: map[*hconn]struct{}{}}
	h.topics[subject] = t
	h.g.m.topics.Inc()
	h.requestBarrier(t)
	return t, nil
}

func (h *hub) maybeDropTopic(t *topic) {
	if len(t.subs) > 0 || len(t.confirm) > 0 || h.topics[t.subject] != t {
		return
	}
	_ = t.nsub.Unsubscribe()
	delete(h.topics, t.subject)
	h.g.m.topics.Dec()
	// Transactions waiting for this subject no longer need to.
	for _, a := range h.txs {
		delete(a.topics, t)
		if h.complete(a) {
			h.finish(a)
		}
	}
}

func (h *hub) requestBarrier(t *topic) {
	h.barrierN++
	t.barrierID = h.inbox + "." + strconv.FormatUint(h.barrierN, 10)
	t.barrierAt = time.Now()
	body, _ := json.Marshal(schema.BarrierRequest{Subject: t.subject, ID: t.barrierID})
	if err := h.g.nc.PublishRequest(schema.SubjectBarrier, h.inbox, body); err != nil {
		h.log.Debug("barrier request failed", slog.String("subject", t.subject), slog.Any("error", err))
	}
}

// addConfirm registers a connection's client id for mutation confirmations
// of orgs; ch is closed once those topics are live.
func (h *hub) addConfirm(hc *hconn, clientID string, orgs []string, ch chan struct{}) {
	if _, ok := h.conns[hc]; !ok {
		return
	}
	hc.clientIDs[clientID] = true
	w := &liveWaiter{ch: ch}
	for _, org := range orgs {
		t, err := h.topic(schema.DataSubject(org, schema.MutationsTable), org, schema.MutationsTable, true)
		if err != nil {
			continue
		}
		t.confirm[hc] = struct{}{}
		hc.confirmTo[t] = struct{}{}
		hc.orgsDirty = true
		if !t.live {
			w.remaining++
			t.waiters = append(t.waiters, w)
		}
	}
	if w.remaining == 0 {
		close(ch)
	}
}

// ---- catch-up and merge ----

// startCatchup (re)starts a subscription's catch-up: from now on live parts
// of its topic are buffered; the snapshot is bounded below by the current
// decoded-through position (every commit above it arrives after now).
func (h *hub) startCatchup(s *sub) {
	if s.cancel != nil {
		s.cancel()
	}
	delete(h.mergeWait, s)
	s.gen++
	s.genA.Store(int64(s.gen))
	s.state = stCatchup
	s.buffering = true
	s.buf, s.bufParts, s.done = nil, 0, false
	// Transactions that already delivered parts on this topic are partial
	// for this subscription: their commit is buffered (so it is not lost
	// when the snapshot does not hold it) and flush decides.
	s.partial = map[schema.XID8]bool{}
	s.before = s.t.commitN
	for k, a := range h.txs {
		if _, ok := a.topics[s.t]; ok {
			s.partial[k.xid] = true
			a.bufSubs[s] = struct{}{}
		}
	}
	ctx, cancel := context.WithCancel(h.ctx)
	s.cancel = cancel
	req := catchup.Request{Table: s.t.table, Org: s.t.org, Columns: s.cols, Cursor: s.cursor, MinLSN: max(h.d, s.applied)}
	go h.g.runCatchup(ctx, h, s, s.gen, s.hc.c, s.id, s.key, req)
}

// catchupDone handles the end of a catch-up goroutine.
func (h *hub) catchupDone(s *sub, gen int, res catchup.Result, err error) {
	if s.removed || s.gen != gen || s.state != stCatchup {
		return
	}
	if err != nil {
		code, retry, final := schema.ErrCodeUnavailable, true, false
		switch {
		case errors.Is(err, context.Canceled):
			return
		case errors.Is(err, catchup.ErrReplicaLag):
			code = schema.ErrCodeReplicaLag
		case errors.Is(err, catchup.ErrModeChanged):
			h.startCatchup(s)
			return
		case errors.Is(err, catchup.ErrBadCursor):
			code = schema.ErrCodeBadCursor
			s.cursor = nil
		case errors.Is(err, schema.ErrUnknownTable):
			code, final = schema.ErrCodeUnknownTable, true
		case errors.Is(err, catchup.ErrBadColumns):
			code, final = schema.ErrCodeBadColumns, true
		case errors.Is(err, catchup.ErrBadOrg):
			code, final = schema.ErrCodeForbidden, true
		}
		h.g.m.catchups.WithLabelValues(code).Inc()
		h.send(s.hc, errorFrame(s.id, code, err.Error()))
		if final {
			h.removeSub(s)
			return
		}
		if retry {
			h.backoff(s)
		}
		return
	}
	h.g.m.catchups.WithLabelValues("ok").Inc()
	s.res, s.done = res, true
	s.retry = 0
	h.mergeWait[s] = struct{}{}
	h.checkMerges()
}

func (h *hub) backoff(s *sub) {
	if s.cancel != nil {
		s.cancel()
	}
	s.gen++
	s.genA.Store(int64(s.gen))
	s.state = stBackoff
	s.buffering = false
	s.buf, s.bufParts = nil, 0
	s.retry++
	d := min(50*time.Millisecond<<min(s.retry, 7), 5*time.Second)
	gen := s.gen
	time.AfterFunc(d, func() {
		h.post(func() {
			if s.removed || s.gen != gen || s.state != stBackoff {
				return
			}
			if s.t.live {
				h.startCatchup(s)
			} else {
				s.state = stWait
			}
		})
	})
}

func (h *hub) checkMerges() {
	for s := range h.mergeWait {
		if h.d >= s.res.U && !h.busy(s.t) {
			h.flush(s)
		}
	}
}

// flush ends a catch-up: the buffered commits above what the client holds,
// in LSN order and tagged with the subscription id, then ready.
func (h *hub) flush(s *sub) {
	delete(h.mergeWait, s)
	// A transaction completed on the topic before buffering began is not
	// in the buffer; if the snapshot does not see it either (it was still
	// leaving the primary's proc array when the snapshot was taken), take
	// another snapshot.
	// A commit held invisible for long (one waiting for a synchronous
	// standby) would make every snapshot miss it: after the first retake
	// the next ones wait like a failed catch-up (backoff).
	for _, rc := range s.t.recent[s.t.recentHead:] {
		if rc.n > s.before {
			break
		}
		if !s.res.Visible(rc.xid) {
			h.log.Debug("snapshot misses a transaction received before the catch-up; taking another",
				slog.String("sub", s.id), slog.String("xid", rc.xid.String()))
			h.g.m.catchups.WithLabelValues("retake").Inc()
			if s.retakes++; s.retakes > 1 {
				h.backoff(s)
			} else {
				h.startCatchup(s)
			}
			return
		}
	}
	s.retakes = 0
	threshold := s.applied
	last := threshold
	groups := map[schema.XID8][]*schema.RawPart{}
	var out [][]byte
	for _, e := range s.buf {
		if p := e.part; p != nil {
			if p.Seq == 0 {
				groups[p.XID] = groups[p.XID][:0]
			}
			groups[p.XID] = append(groups[p.XID], p)
			continue
		}
		a := e.commit
		parts := groups[a.key.xid]
		delete(groups, a.key.xid)
		if a.lsn <= last {
			continue
		}
		if s.partial[a.key.xid] {
			if a.lsn <= s.res.U {
				continue // the snapshot holds it whole
			}
			// Parts of this transaction arrived before buffering began
			// and the snapshot does not hold it: take another one.
			h.startCatchup(s)
			return
		}
		for _, p := range parts {
			ops := p.Ops
			if s.proj != nil {
				var dec []schema.Op
				_ = json.Unmarshal(p.Ops, &dec)
				ops = projectOps(s.proj, dec)
			}
			out = append(out, encodePart(s.id, p, ops))
		}
		out = append(out, encodeCommit(s.id, a.key.xid, a.lsn, a.time, nil))
		last = a.lsn
	}
	ready := max(s.res.U, last)
	if s.cancel != nil {
		s.cancel() // the catch-up is over: release its context
		s.cancel = nil
	}
	s.state = stLive
	s.buffering = false
	s.buf, s.bufParts, s.partial = nil, 0, nil
	s.applied = ready
	cur := s.res.Cursor
	s.cursor = &cur
	// The buffered commits can be more frames than the live stream may
	// queue (they piled up while the snapshot was read): they go in one
	// bulk, bounded by SnapshotBufferLimit, never cutting the client.
	out = append(out, encodeFrame(schema.ServerFrame{Type: schema.FrameReady, ID: s.id, LSN: ready, Cursor: s.cursor}))
	h.sendBulk(s.hc, out)
}

// resync restarts a subscription's catch-up after a gap or a resync marker;
// full forgets its cursor.
func (h *hub) resync(s *sub, reason string, full bool) {
	if s.removed {
		return
	}
	if s.state != stWait {
		h.send(s.hc, encodeFrame(schema.ServerFrame{Type: schema.FrameResync, ID: s.id, Reason: reason}))
		h.g.m.resyncs.WithLabelValues(reason).Inc()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.gen++
	s.genA.Store(int64(s.gen))
	delete(h.mergeWait, s)
	s.buffering = false
	s.buf, s.bufParts = nil, 0
	if full {
		s.cursor = nil
	}
	if s.t.live {
		h.startCatchup(s)
	} else {
		s.state = stWait
	}
}

// gapTopic re-proves a topic and resynchronises its subscriptions.
func (h *hub) gapTopic(t *topic, reason string) {
	t.live = false
	// Transactions no longer wait for this subject.
	for _, a := range h.txs {
		if h.complete(a) {
			h.finish(a)
		}
	}
	if h.natsUp {
		h.requestBarrier(t)
	}
	for s := range t.subs {
		h.resync(s, reason, false)
	}
}

// gapAll handles a gap that may have hit every subject.
func (h *hub) gapAll(reason string) {
	clear(h.txs)
	h.curXID = 0
	for _, t := range h.topics {
		h.gapTopic(t, reason)
	}
}

func (h *hub) onTick(now time.Time) {
	if now.Sub(h.lazyAt) >= lazyDelay {
		h.flushLazy(now)
	}
	if len(h.deferred) > 0 && h.deferredXID != h.curXID {
		// Commits held for the transaction still being received wait: more
		// of its organisations' parts may follow, and a commit frame sent
		// before them would make the client drop them. The next message
		// that is not a part of it (at the latest the next heartbeat)
		// releases them.
		h.flushDeferred()
	}
	for _, t := range h.topics {
		if !t.live && h.natsUp && now.Sub(t.barrierAt) >= h.g.cfg.BarrierTimeout {
			h.requestBarrier(t)
		}
	}
	if h.hbSeen && !h.gapped && len(h.msgs) == 0 && now.Sub(h.lastHB) > h.g.cfg.HeartbeatTimeout {
		// (With messages queued, the heartbeat may be among them.)
		h.log.Warn("ingest heartbeats missing; resynchronising every subscription")
		h.gapped = true
		h.setReady()
		h.gapAll("gap")
	}
}

// onNATSEvent handles connection events reported by nats.go.
func (h *hub) onDisconnect() {
	h.natsUp = false
	h.setReady()
	h.gapAll("gap")
}

func (h *hub) onReconnect() {
	h.natsUp = true
	h.setReady()
	h.gapAll("gap")
}

func (h *hub) onSlowConsumer(subject string) {
	if t := h.topics[subject]; t != nil {
		h.gapTopic(t, "gap")
		return
	}
	h.gapAll("gap")
}

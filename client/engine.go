package client

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// topic is a (table, organisation) pair: the unit of live parts.
type topic struct{ table, org string }

// phase of a wire subscription on the current connection.
type phase int

const (
	phaseWaiting phase = iota // subscribe sent (or to be sent); no snapshot_begin yet
	phaseStaging              // between snapshot_begin and ready
	phaseLive                 // after ready: commits apply to the visible rows
	phaseFailed               // ended by a terminal error
)

// wireSub is one protocol subscription: the client holds at most one per
// topic and every Subscription handle of that topic shares it.
type wireSub struct {
	id        string
	topic     topic
	columns   []string // nil: every column
	keyCols   []string
	phase     phase
	everReady bool           // rows hold a consistent state
	rows      map[string]Row // the synced, visible rows by canonical key
	stage     *staging
	lsn       schema.LSN // LSN of the visible state
	cursor    schema.XID8
	hasCursor bool
	readyCh   chan struct{} // closed at the first ready or a terminal error
	endCh     chan struct{} // closed at a terminal error or the last Close
	err       error
	handles   []*Subscription
	retry     *time.Timer
}

// end closes the channels of a subscription that ended.
func (ws *wireSub) end() {
	select {
	case <-ws.readyCh:
	default:
		close(ws.readyCh)
	}
	select {
	case <-ws.endCh:
	default:
		close(ws.endCh)
	}
}

// staging holds what arrived between snapshot_begin and ready.
type staging struct {
	full bool
	rows map[string]Row // nil value: tombstone (resume mode)
	lsn  schema.LSN     // highest commit applied into the stage
}

// ServerError is an error frame the gateway sent (for a subscription, or for
// the connection).
type ServerError struct {
	ID      string
	Code    string
	Message string
}

func (e *ServerError) Error() string {
	if e.ID != "" {
		return fmt.Sprintf("client: gateway error for %s: %s: %s", e.ID, e.Code, e.Message)
	}
	return fmt.Sprintf("client: gateway error: %s: %s", e.Code, e.Message)
}

// ErrColumnConflict is returned by Subscribe for a (table, org) already
// subscribed with a column list that does not cover the requested one.
var ErrColumnConflict = errors.New("client: table already subscribed with other columns")

// ErrClosed is returned for operations on a closed Client or Subscription.
var ErrClosed = errors.New("client: closed")

// engine is the client's state: wire subscriptions and their views, the
// parts buffer, pending mutations and the overlay they produce. Every field is
// guarded by mu; frames are applied under it, so readers always see the views
// at some commit. Frames to send are queued on out under mu (keeping their
// order); change notifications are queued on events under mu and delivered by
// one goroutine, in order.
type engine struct {
	mu       sync.Mutex
	log      *slog.Logger
	clientID string
	store    PendingStore
	retryMin time.Duration
	retryMax time.Duration

	subs    map[string]*wireSub
	topics  map[topic]*wireSub
	nextSub int

	out *outbox // nil while disconnected
	// parts buffers part frames until their commit: by xid, then by the
	// subscription id they carry ("" for shared parts named by topic only).
	parts      map[schema.XID8]map[string][]*schema.ServerFrame
	lastCommit schema.LSN // on the current connection

	mutators map[string]MutatorFunc
	pending  []*Pending // in id order
	// awaiting holds mutations already part of synced data (confirmed by a
	// commit) whose reply has not arrived: applied or rejected, only the
	// reply says.
	awaiting    map[int64]*Pending
	ov          overlay
	horizon     schema.XID8 // every transaction below it is in the views
	resendTimer *time.Timer
	resendDelay time.Duration

	events *eventQueue
	closed bool
}

func newEngine(log *slog.Logger, clientID string, store PendingStore, retryMin, retryMax time.Duration) *engine {
	e := &engine{
		log:      log,
		clientID: clientID,
		store:    store,
		retryMin: retryMin,
		retryMax: retryMax,
		subs:     make(map[string]*wireSub),
		topics:   make(map[topic]*wireSub),
		parts:    make(map[schema.XID8]map[string][]*schema.ServerFrame),
		mutators: map[string]MutatorFunc{
			"insert": builtinInsert,
			"update": builtinUpdate,
			"delete": builtinDelete,
		},
		ov:       overlay{},
		awaiting: map[int64]*Pending{},
		events:   newEventQueue(),
	}
	return e
}

// loadPending restores the pending mutations of the store.
func (e *engine) loadPending() error {
	list, err := e.store.List(e.clientID)
	if err != nil {
		return fmt.Errorf("client: pending store: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range list {
		e.pending = append(e.pending, newPending(m))
	}
	e.recomputeOverlay()
	return nil
}

// ---- connection lifecycle ----

// connected installs the outbox of a fresh authenticated connection and
// resubscribes every subscription (resuming by cursor) and re-sends every
// pending mutation without a reply, in id order.
func (e *engine) connected(out *outbox) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.out = out
	e.lastCommit = 0
	e.resendDelay = 0
	ids := make([]*wireSub, 0, len(e.subs))
	for _, ws := range e.subs {
		ids = append(ids, ws)
	}
	slices.SortFunc(ids, func(a, b *wireSub) int { return subNum(a.id) - subNum(b.id) })
	for _, ws := range ids {
		if ws.phase != phaseFailed {
			e.sendSubscribe(ws)
		}
	}
	e.sendPending()
}

func subNum(id string) int {
	n, _ := strconv.Atoi(id[1:])
	return n
}

// disconnected forgets everything tied to the connection; the visible views
// stay as they are until each subscription's next ready.
func (e *engine) disconnected() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.out = nil
	e.lastCommit = 0
	clear(e.parts)
	for _, ws := range e.subs {
		if ws.retry != nil {
			ws.retry.Stop()
			ws.retry = nil
		}
		if ws.phase == phaseStaging || ws.phase == phaseLive {
			ws.phase = phaseWaiting
			ws.stage = nil
		}
	}
	for _, p := range e.pending {
		p.sent = false
	}
	for _, p := range e.awaiting {
		p.sent = false
	}
	if e.resendTimer != nil {
		e.resendTimer.Stop()
		e.resendTimer = nil
	}
}

func (e *engine) send(f schema.ClientFrame) {
	if e.out != nil {
		e.out.push(f)
	}
}

func (e *engine) sendSubscribe(ws *wireSub) {
	if e.out == nil {
		return
	}
	f := schema.ClientFrame{Type: schema.FrameSubscribe, ID: ws.id, Table: ws.topic.table, Org: ws.topic.org, Columns: ws.columns}
	if ws.everReady && ws.hasCursor {
		cur, lsn := ws.cursor, ws.lsn
		f.Cursor, f.LSN = &cur, &lsn
	}
	e.send(f)
}

func (e *engine) sendPending() {
	if e.out == nil {
		return
	}
	// Mutations waiting for a reply only (already part of synced data) are
	// sent again too, in id order with the others: the writer answers a
	// recorded mutation with its original reply.
	all := slices.Collect(maps.Values(e.awaiting))
	for _, p := range e.pending {
		if !p.applied && !p.confirmed {
			all = append(all, p)
		}
	}
	slices.SortFunc(all, func(a, b *Pending) int { return cmp.Compare(a.id, b.id) })
	for _, p := range all {
		if !p.sent {
			p.sent = true
			e.send(schema.ClientFrame{Type: schema.FrameMutate, ClientID: e.clientID, MutationID: p.id, Mutator: p.mutator, Args: p.args})
		}
	}
}

// ---- frames ----

// handle applies one server frame. An error means the gateway broke the
// protocol; the caller drops the connection (and resumes on a new one).
func (e *engine) handle(f *schema.ServerFrame) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch f.Type {
	case schema.FrameSnapshotBegin:
		return e.snapshotBegin(f)
	case schema.FrameSnapshot:
		return e.snapshot(f)
	case schema.FramePart:
		m := e.parts[f.XID]
		if m == nil {
			m = make(map[string][]*schema.ServerFrame, 1)
			e.parts[f.XID] = m
		}
		m[f.ID] = append(m[f.ID], f)
	case schema.FrameCommit:
		e.commit(f)
	case schema.FrameReady:
		return e.ready(f)
	case schema.FrameCheckpoint:
		e.checkpoint(f)
	case schema.FrameResync:
		if ws := e.subs[f.ID]; ws != nil && (ws.phase == phaseLive || ws.phase == phaseStaging) {
			e.log.Info("ripple client: resync", "sub", f.ID, "table", ws.topic.table, "org", ws.topic.org, "reason", f.Reason)
			ws.phase, ws.stage = phaseWaiting, nil
		}
	case schema.FrameMutation:
		e.mutationReply(f)
	case schema.FrameError:
		e.serverError(f)
	}
	return nil
}

func (e *engine) snapshotBegin(f *schema.ServerFrame) error {
	ws := e.subs[f.ID]
	if ws == nil || ws.phase == phaseFailed {
		return nil // unsubscribed meanwhile
	}
	if len(f.Key) > 0 {
		if ws.keyCols != nil && !slices.Equal(ws.keyCols, f.Key) && len(ws.rows) > 0 {
			// The primary key changed: old keys mean nothing any more.
			ws.rows = map[string]Row{}
		}
		ws.keyCols = slices.Clone(f.Key)
	}
	if ws.keyCols == nil {
		e.log.Warn("ripple client: snapshot_begin without key; assuming primary key \"id\"", "sub", f.ID)
		ws.keyCols = []string{"id"}
	}
	for xid, m := range e.parts {
		if _, ok := m[ws.id]; ok {
			delete(m, ws.id)
			if len(m) == 0 {
				delete(e.parts, xid)
			}
		}
	}
	ws.phase = phaseStaging
	ws.stage = &staging{full: f.Mode == schema.SnapshotFull, rows: map[string]Row{}}
	return nil
}

func (e *engine) snapshot(f *schema.ServerFrame) error {
	ws := e.subs[f.ID]
	if ws == nil || ws.phase == phaseFailed {
		return nil
	}
	if ws.phase != phaseStaging {
		return fmt.Errorf("%w: snapshot for %s outside snapshot_begin/ready", ErrBadFrame, f.ID)
	}
	for i := range f.Ops {
		if err := applyOp(ws.stage.rows, ws.keyCols, &f.Ops[i], !ws.stage.full, nil); err != nil {
			return err
		}
	}
	return nil
}

// applyOp applies op to rows. With tombstones, deletes leave a nil entry
// (a staged resume). before, when set, receives the first key it sees.
func applyOp(rows map[string]Row, keyCols []string, op *schema.Op, tombstones bool, touch func(string)) error {
	switch op.Op {
	case schema.OpInsert, schema.OpUpdate:
		r, err := decodeRow(op.Row)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadFrame, err)
		}
		k, err := rowKey(r, keyCols)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadFrame, err)
		}
		if touch != nil {
			touch(k)
		}
		rows[k] = r
	case schema.OpDelete:
		kr, err := decodeRow(op.Key)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadFrame, err)
		}
		k, err := rowKey(kr, keyCols)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrBadFrame, err)
		}
		if touch != nil {
			touch(k)
		}
		if tombstones {
			rows[k] = nil
		} else {
			delete(rows, k)
		}
	}
	return nil
}

// touched records, per visible subscription, the keys whose visible row may
// change and what they showed before.
type touched struct {
	order  []string
	before map[string]Row
	fresh  bool // the view was not visible before: every before is nil
}

type touchSet map[*wireSub]*touched

func (ts touchSet) get(ws *wireSub) *touched {
	t := ts[ws]
	if t == nil {
		t = &touched{before: map[string]Row{}}
		ts[ws] = t
	}
	return t
}

// touch records what key showed before, under overlay ov, unless recorded.
func (ts touchSet) touch(e *engine, ws *wireSub, k string, ov overlay) {
	t := ts.get(ws)
	if _, ok := t.before[k]; ok {
		return
	}
	var b Row
	if !t.fresh {
		b = e.visible(ws, k, ov)
	}
	t.before[k] = b
	t.order = append(t.order, k)
}

// takeParts removes and returns the buffered parts of xid that carry id.
func (e *engine) takeParts(xid schema.XID8, id string) []*schema.ServerFrame {
	m := e.parts[xid]
	ps := m[id]
	delete(m, id)
	if len(m) == 0 {
		delete(e.parts, xid)
	}
	return ps
}

// commit closes transaction f.XID. A commit without id is the connection's
// shared stream (strictly increasing LSNs): it applies the shared parts to
// every subscription of their topic and the parts tagged with a live
// subscription's id to that subscription. A commit with an id ends a
// transaction the gateway buffered during that subscription's catch-up: it
// applies only the parts tagged with that id, to that subscription.
func (e *engine) commit(f *schema.ServerFrame) {
	type target struct {
		ws *wireSub
		p  *schema.ServerFrame
	}
	var targets []target
	if f.ID != "" {
		ws := e.subs[f.ID]
		for _, p := range e.takeParts(f.XID, f.ID) {
			if ws != nil && ws.topic == (topic{p.Table, p.Org}) {
				targets = append(targets, target{ws, p})
			}
		}
		if ws == nil || (ws.phase != phaseStaging && ws.phase != phaseLive) {
			return
		}
	} else {
		if f.LSN <= e.lastCommit {
			e.log.Debug("ripple client: dropping repeated commit", "xid", f.XID, "lsn", f.LSN)
			clear(e.parts[f.XID])
			delete(e.parts, f.XID)
			return
		}
		e.lastCommit = f.LSN
		for _, p := range e.takeParts(f.XID, "") {
			if ws := e.topics[topic{p.Table, p.Org}]; ws != nil {
				targets = append(targets, target{ws, p})
			}
		}
		for id := range e.parts[f.XID] {
			if ws := e.subs[id]; ws != nil && ws.phase == phaseLive {
				for _, p := range e.takeParts(f.XID, id) {
					targets = append(targets, target{ws, p})
				}
			}
		}
	}
	ts := touchSet{}
	accept := map[*wireSub]bool{}
	for _, tg := range targets {
		ws, p := tg.ws, tg.p
		ok, seen := accept[ws]
		if !seen {
			switch ws.phase {
			case phaseStaging:
				ok = f.LSN > ws.lsn && f.LSN > ws.stage.lsn
			case phaseLive:
				ok = f.LSN > ws.lsn
			}
			accept[ws] = ok
		}
		if !ok {
			continue
		}
		for i := range p.Ops {
			var err error
			if ws.phase == phaseStaging {
				err = applyOp(ws.stage.rows, ws.keyCols, &p.Ops[i], !ws.stage.full, nil)
			} else {
				err = applyOp(ws.rows, ws.keyCols, &p.Ops[i], false, func(k string) { ts.touch(e, ws, k, e.ov) })
			}
			if err != nil {
				e.log.Error("ripple client: bad operation in commit", "xid", f.XID, "table", p.Table, "org", p.Org, "err", err)
			}
		}
	}
	for ws, ok := range accept {
		if ok && ws.phase == phaseStaging {
			ws.stage.lsn = f.LSN
		}
	}
	switch {
	case f.ID == "":
		for _, ws := range e.subs {
			if ws.phase == phaseLive {
				ws.lsn = max(ws.lsn, f.LSN)
			}
		}
	default:
		if ws := e.subs[f.ID]; ws.phase == phaseLive {
			ws.lsn = max(ws.lsn, f.LSN)
		}
	}
	for _, id := range f.Confirmed {
		if p := e.pendingByID(id); p != nil {
			p.confirmed = true
		}
	}
	e.settle(ts, f.LSN, false)
}

func (e *engine) ready(f *schema.ServerFrame) error {
	ws := e.subs[f.ID]
	if ws == nil || ws.phase == phaseFailed {
		return nil
	}
	if ws.phase != phaseStaging {
		return fmt.Errorf("%w: ready for %s without snapshot_begin", ErrBadFrame, f.ID)
	}
	ts := touchSet{}
	if ws.everReady {
		keys := make(map[string]struct{}, len(ws.rows)+len(ws.stage.rows))
		for k := range ws.rows {
			keys[k] = struct{}{}
		}
		for k := range ws.stage.rows {
			keys[k] = struct{}{}
		}
		for _, k := range sortedKeys(keys) {
			ts.touch(e, ws, k, e.ov)
		}
	} else {
		ts.get(ws).fresh = true
	}
	st := ws.stage
	if st.full {
		ws.rows = make(map[string]Row, len(st.rows))
	}
	for k, r := range st.rows {
		if r == nil {
			delete(ws.rows, k)
		} else {
			ws.rows[k] = r
		}
	}
	if !ws.everReady {
		// Everything is new: report the rows in key order.
		ws.everReady = true
		for _, k := range sortedKeys(ws.rows) {
			ts.touch(e, ws, k, e.ov)
		}
	}
	ws.phase, ws.stage = phaseLive, nil
	ws.lsn = max(f.LSN, st.lsn)
	if f.LSN < st.lsn {
		e.log.Warn("ripple client: ready below a staged commit", "sub", f.ID, "ready_lsn", f.LSN, "staged_lsn", st.lsn)
	}
	ws.cursor, ws.hasCursor = *f.Cursor, true
	e.advanceHorizon(*f.Cursor)
	select {
	case <-ws.readyCh:
	default:
		close(ws.readyCh)
	}
	e.settle(ts, ws.lsn, false)
	return nil
}

func (e *engine) checkpoint(f *schema.ServerFrame) {
	ws := e.subs[f.ID]
	if ws == nil || ws.phase != phaseLive {
		return
	}
	ws.cursor, ws.hasCursor = *f.Cursor, true
	ws.lsn = max(ws.lsn, f.LSN)
	e.advanceHorizon(*f.Cursor)
	e.settle(nil, ws.lsn, false)
}

// advanceHorizon records that every transaction below cur is in the views and
// marks applied mutations recorded by such transactions as confirmed.
func (e *engine) advanceHorizon(cur schema.XID8) {
	e.horizon = max(e.horizon, cur)
	for _, p := range e.pending {
		if p.applied && p.xid != 0 && p.xid < e.horizon {
			p.confirmed = true
		}
	}
}

func (e *engine) serverError(f *schema.ServerFrame) {
	ws := e.subs[f.ID]
	if f.ID == "" || ws == nil {
		e.log.Warn("ripple client: gateway error", "id", f.ID, "code", f.Code, "message", f.Message)
		return
	}
	switch f.Code {
	case schema.ErrCodeReplicaLag, schema.ErrCodeSlowClient:
		e.log.Info("ripple client: subscription delayed", "sub", f.ID, "code", f.Code, "message", f.Message)
	case schema.ErrCodeUnavailable:
		if ws.phase == phaseWaiting || ws.phase == phaseStaging {
			ws.phase, ws.stage = phaseWaiting, nil
			e.retrySubscribe(ws)
		}
		e.log.Warn("ripple client: subscription unavailable; retrying", "sub", f.ID, "message", f.Message)
	case schema.ErrCodeBadCursor:
		// The cursor is too old (or bad): start again with a full snapshot.
		ws.hasCursor = false
		ws.phase, ws.stage = phaseWaiting, nil
		e.sendSubscribe(ws)
	default:
		e.log.Warn("ripple client: subscription ended", "sub", f.ID, "code", f.Code, "message", f.Message)
		ws.phase, ws.stage = phaseFailed, nil
		ws.err = &ServerError{ID: f.ID, Code: f.Code, Message: f.Message}
		delete(e.topics, ws.topic)
		delete(e.subs, ws.id)
		ws.end()
		e.settle(nil, ws.lsn, false)
	}
}

func (e *engine) retrySubscribe(ws *wireSub) {
	if ws.retry != nil {
		return
	}
	out := e.out
	ws.retry = time.AfterFunc(e.retryMax, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		ws.retry = nil
		if e.out == out && e.subs[ws.id] == ws && ws.phase == phaseWaiting {
			e.sendSubscribe(ws)
		}
	})
}

// ---- mutations ----

func (e *engine) pendingByID(id int64) *Pending {
	i, ok := slices.BinarySearchFunc(e.pending, id, func(p *Pending, id int64) int {
		switch {
		case p.id < id:
			return -1
		case p.id > id:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return e.pending[i]
}

func (e *engine) mutationReply(f *schema.ServerFrame) {
	if f.ClientID != "" && f.ClientID != e.clientID {
		return
	}
	if p := e.awaiting[f.MutationID]; p != nil {
		// Already part of synced data (a rejection is recorded by a
		// transaction too): only the outcome was missing.
		if f.Status == schema.MutationRejected && !schema.MutationCodeFinal(f.Code) {
			p.sent = false
			e.scheduleResend()
			return
		}
		delete(e.awaiting, p.id)
		p.result = f.Result
		if f.Status == schema.MutationRejected {
			p.err = &MutationError{ID: p.id, Mutator: p.mutator, Code: f.Code, Message: f.Message}
		}
		close(p.done)
		return
	}
	p := e.pendingByID(f.MutationID)
	if p == nil {
		return // already settled: a duplicate reply
	}
	switch f.Status {
	case schema.MutationApplied:
		p.sent = false
		p.applied, p.xid = true, f.XID
		if len(f.Result) > 0 {
			p.result = f.Result
		}
		if (p.xid != 0 && p.xid < e.horizon) || len(e.subs) == 0 {
			p.confirmed = true
		}
		e.settle(nil, 0, true)
	case schema.MutationRejected:
		if !schema.MutationCodeFinal(f.Code) {
			// Nothing was written: keep the optimistic state, send again.
			e.log.Info("ripple client: mutation not applied yet; will resend", "mutation_id", f.MutationID, "code", f.Code, "message", f.Message)
			p.sent = false
			e.scheduleResend()
			return
		}
		p.err = &MutationError{ID: p.id, Mutator: p.mutator, Code: f.Code, Message: f.Message}
		p.result = f.Result
		e.removePending(p)
		e.settle(nil, 0, true)
	}
}

func (e *engine) scheduleResend() {
	if e.resendTimer != nil || e.out == nil {
		return
	}
	if e.resendDelay == 0 {
		e.resendDelay = e.retryMin
	} else {
		e.resendDelay = min(2*e.resendDelay, e.retryMax)
	}
	out := e.out
	e.resendTimer = time.AfterFunc(e.resendDelay, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.resendTimer = nil
		if e.out == out {
			e.sendPending()
		}
	})
}

// removePending drops p from the pending list and the store. It resolves p
// when its outcome is known (a reply arrived, or p.err is set); otherwise p
// waits in awaiting for the reply to a re-send.
func (e *engine) removePending(p *Pending) {
	e.pending = slices.DeleteFunc(e.pending, func(q *Pending) bool { return q == p })
	if err := e.store.Remove(e.clientID, p.id); err != nil {
		e.log.Error("ripple client: pending store remove", "mutation_id", p.id, "err", err)
	}
	if p.applied || p.err != nil {
		close(p.done)
		return
	}
	e.awaiting[p.id] = p
}

// mutate runs the optimistic function, stores the mutation and sends it.
func (e *engine) mutate(mutator string, args json.RawMessage, optimistic bool) (*Pending, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if fn := e.mutators[mutator]; fn != nil && optimistic {
		tx := &LocalTx{e: e, base: e.ov, writes: overlay{}}
		if err := fn(tx, args); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrOptimistic, mutator, err)
		}
	}
	m := PendingMutation{Mutator: mutator, Args: args}
	if err := e.store.Append(e.clientID, &m); err != nil {
		return nil, fmt.Errorf("client: pending store: %w", err)
	}
	if n := len(e.pending); n > 0 && e.pending[n-1].id >= m.ID {
		return nil, fmt.Errorf("client: pending store returned mutation id %d after %d", m.ID, e.pending[n-1].id)
	}
	p := newPending(m)
	if !optimistic {
		p.noOptimistic = true
	}
	e.pending = append(e.pending, p)
	e.settle(nil, 0, true)
	e.sendPending()
	return p, nil
}

// recomputeOverlay runs every pending mutation's optimistic function in id
// order on top of the synced data.
func (e *engine) recomputeOverlay() {
	acc := overlay{}
	for _, p := range e.pending {
		fn := e.mutators[p.mutator]
		if fn == nil || p.noOptimistic {
			continue
		}
		tx := &LocalTx{e: e, base: acc, writes: overlay{}}
		if err := fn(tx, p.args); err != nil {
			e.log.Debug("ripple client: optimistic mutator failed on new data", "mutation_id", p.id, "err", err)
			continue
		}
		acc.merge(tx.writes)
	}
	e.ov = acc
}

// ---- settling: confirmations, overlay, change notifications ----

// allVisibleLive reports whether every visible view is live, i.e. holds
// everything the connection applied.
func (e *engine) allVisibleLive() bool {
	for _, ws := range e.subs {
		if ws.everReady && ws.phase != phaseLive {
			return false
		}
	}
	return true
}

// settle runs after synced data or the pending set changed: it drops
// confirmed mutations (unless some visible view is catching up and does not
// show them yet), recomputes the overlay, and queues a Change for every
// visible row that differs from before.
func (e *engine) settle(ts touchSet, lsn schema.LSN, local bool) {
	if ts == nil {
		ts = touchSet{}
	}
	if e.allVisibleLive() {
		for _, p := range slices.Clone(e.pending) {
			if p.confirmed {
				e.removePending(p)
			}
		}
	}
	old := e.ov
	// Overlay keys (before and after) may change too; their synced rows
	// did not change unless already touched.
	for t, m := range old {
		if ws := e.topics[t]; ws != nil && ws.everReady {
			for _, k := range sortedKeys(m) {
				ts.touch(e, ws, k, old)
			}
		}
	}
	if len(e.pending) == 0 {
		e.ov = overlay{}
	} else {
		e.recomputeOverlay()
	}
	for t, m := range e.ov {
		if ws := e.topics[t]; ws != nil && ws.everReady {
			for _, k := range sortedKeys(m) {
				ts.touch(e, ws, k, old)
			}
		}
	}
	subs := make([]*wireSub, 0, len(ts))
	for ws := range ts {
		subs = append(subs, ws)
	}
	slices.SortFunc(subs, func(a, b *wireSub) int { return subNum(a.id) - subNum(b.id) })
	for _, ws := range subs {
		t := ts[ws]
		var changes []Change
		for _, k := range t.order {
			before, after := t.before[k], e.visible(ws, k, e.ov)
			if rowsEqual(before, after) {
				continue
			}
			c := Change{Table: ws.topic.table, Org: ws.topic.org, Row: after, Old: before, LSN: ws.lsn, Local: local}
			switch {
			case before == nil:
				c.Op = schema.OpInsert
				c.Key = keyObject(after, ws.keyCols)
			case after == nil:
				c.Op = schema.OpDelete
				c.Key = keyObject(before, ws.keyCols)
			default:
				c.Op = schema.OpUpdate
				c.Key = keyObject(after, ws.keyCols)
			}
			if lsn != 0 && !local {
				c.LSN = lsn
			}
			changes = append(changes, c)
		}
		if len(changes) > 0 {
			e.notify(ws, changes)
		}
	}
}

// visible returns the row a view shows for key under overlay ov: the
// overlay's, else the synced one.
func (e *engine) visible(ws *wireSub, k string, ov overlay) Row {
	if !ws.everReady {
		return nil
	}
	if m := ov[ws.topic]; m != nil {
		if r, ok := m[k]; ok {
			if r == nil {
				return nil
			}
			return project(r, ws.columns, ws.keyCols)
		}
	}
	return ws.rows[k]
}

// notify queues changes for every handle of ws with callbacks.
func (e *engine) notify(ws *wireSub, changes []Change) {
	for _, h := range ws.handles {
		if len(h.callbacks) == 0 {
			continue
		}
		cs := changes
		if h.columns != nil {
			cs = make([]Change, 0, len(changes))
			for _, c := range changes {
				c.Row = project(c.Row, h.columns, ws.keyCols)
				c.Old = project(c.Old, h.columns, ws.keyCols)
				if c.Op == schema.OpUpdate && rowsEqual(c.Row, c.Old) {
					continue
				}
				cs = append(cs, c)
			}
		}
		if len(cs) > 0 {
			e.events.push(event{fns: slices.Clone(h.callbacks), changes: cs})
		}
	}
}

// ---- outbox and event queue ----

// outbox queues the frames of one connection for its writer goroutine.
type outbox struct {
	mu     sync.Mutex
	frames []schema.ClientFrame
	signal chan struct{}
}

func newOutbox() *outbox { return &outbox{signal: make(chan struct{}, 1)} }

func (o *outbox) push(f schema.ClientFrame) {
	o.mu.Lock()
	o.frames = append(o.frames, f)
	o.mu.Unlock()
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

func (o *outbox) take() []schema.ClientFrame {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.frames
	o.frames = nil
	return f
}

type event struct {
	fns     []func(Change)
	changes []Change
}

// eventQueue delivers change notifications in order on one goroutine.
type eventQueue struct {
	mu     sync.Mutex
	events []event
	signal chan struct{}
}

func newEventQueue() *eventQueue { return &eventQueue{signal: make(chan struct{}, 1)} }

func (q *eventQueue) push(ev event) {
	q.mu.Lock()
	q.events = append(q.events, ev)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *eventQueue) take() []event {
	q.mu.Lock()
	defer q.mu.Unlock()
	ev := q.events
	q.events = nil
	return ev
}

// run delivers events until done is closed, then delivers what is left.
func (q *eventQueue) run(done <-chan struct{}) {
	for {
		select {
		case <-q.signal:
		case <-done:
			q.deliver(q.take())
			return
		}
		q.deliver(q.take())
	}
}

func (q *eventQueue) deliver(evs []event) {
	for _, ev := range evs {
		for _, c := range ev.changes {
			for _, fn := range ev.fns {
				fn(c)
			}
		}
	}
}

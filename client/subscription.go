package client

import (
	"context"
	"slices"
	"strconv"

	"github.com/ripple-sync/ripple/schema"
)

// Change is one change of a subscription's visible view (synced data with
// pending mutations applied on top).
type Change struct {
	// Op is schema.OpInsert, schema.OpUpdate or schema.OpDelete.
	Op    string
	Table string
	Org   string
	// Key holds the primary key columns of the row.
	Key Row
	// Row is the row now shown (nil for a delete); Old the row shown before
	// (nil for an insert). Both are read-only.
	Row Row
	Old Row
	// LSN is the commit (or ready) that caused the change; for Local changes
	// the LSN of the view at the time.
	LSN schema.LSN
	// Local is set for changes caused by the client's own pending mutations
	// (their optimistic effect, or its rollback after a rejection) rather
	// than by a commit.
	Local bool
}

// Subscription is a live, consistent view of one (table, organisation).
// Several Subscriptions of the same (table, organisation) on one Client share
// one gateway subscription.
type Subscription struct {
	c       *Client
	ws      *wireSub
	columns []string // projection of the shared rows; nil: as received

	// Guarded by the engine's mutex.
	callbacks []func(Change)
	closed    bool
}

// Table returns the subscribed table.
func (s *Subscription) Table() string { return s.ws.topic.table }

// Org returns the subscribed organisation.
func (s *Subscription) Org() string { return s.ws.topic.org }

// WaitReady blocks until the subscription showed its first consistent state
// (the gateway's first ready), or it failed (a *ServerError such as
// forbidden or unknown_table), or the Client failed or closed, or ctx ended.
func (s *Subscription) WaitReady(ctx context.Context) error {
	select {
	case <-s.ws.readyCh:
		return s.Err()
	case <-s.c.failed:
		return s.c.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Err returns the error that ended the subscription, if any.
func (s *Subscription) Err() error {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.ws.err != nil {
		return s.ws.err
	}
	if s.closed {
		return ErrClosed
	}
	return nil
}

// Ready reports whether the subscription has shown a consistent state.
func (s *Subscription) Ready() bool {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	return s.ws.everReady
}

// Rows returns the visible rows, sorted by primary key: synced data with every
// pending mutation applied on top, as of one commit. Empty before the first
// ready. The rows are shared and read-only.
func (s *Subscription) Rows() []Row {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	ws := s.ws
	if !ws.everReady {
		return nil
	}
	keys := make(map[string]struct{}, len(ws.rows))
	for k := range ws.rows {
		keys[k] = struct{}{}
	}
	for k := range e.ov[ws.topic] {
		keys[k] = struct{}{}
	}
	out := make([]Row, 0, len(keys))
	for _, k := range sortedKeys(keys) {
		if r := e.visible(ws, k, e.ov); r != nil {
			out = append(out, project(r, s.columns, ws.keyCols))
		}
	}
	return out
}

// Synced returns the synced rows only (without pending mutations), sorted by
// primary key.
func (s *Subscription) Synced() []Row {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]Row, 0, len(s.ws.rows))
	for _, k := range sortedKeys(s.ws.rows) {
		out = append(out, project(s.ws.rows[k], s.columns, s.ws.keyCols))
	}
	return out
}

// Get returns the visible row with the given primary key values, in key
// order and encoded as the gateway sends them (int8/numeric keys are
// strings, int4 keys numbers).
func (s *Subscription) Get(key ...any) (Row, bool) {
	k, err := keyOf(key...)
	if err != nil {
		return nil, false
	}
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.visible(s.ws, k, e.ov)
	return project(r, s.columns, s.ws.keyCols), r != nil
}

// Len returns the number of visible rows.
func (s *Subscription) Len() int {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	ws := s.ws
	if !ws.everReady {
		return 0
	}
	n := len(ws.rows)
	for k, r := range e.ov[ws.topic] {
		_, synced := ws.rows[k]
		switch {
		case r == nil && synced:
			n--
		case r != nil && !synced:
			n++
		}
	}
	return n
}

// LSN returns the LSN of the commit the synced data is at.
func (s *Subscription) LSN() schema.LSN {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	return s.ws.lsn
}

// Cursor returns the resume cursor of the synced data (from the last ready or
// checkpoint).
func (s *Subscription) Cursor() schema.XID8 {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	return s.ws.cursor
}

// KeyColumns returns the table's primary key columns (nil before the first
// snapshot_begin).
func (s *Subscription) KeyColumns() []string {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(s.ws.keyCols)
}

// OnChange registers fn to be called for every later change of the visible
// view. Calls happen on one goroutine, in commit order, after the change is
// visible (the view may already have moved on when fn runs). fn must not
// call Client.Close. Use the OnChangeFunc option to see the initial rows too.
func (s *Subscription) OnChange(fn func(Change)) {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	s.callbacks = append(s.callbacks, fn)
}

// Close ends the subscription; the gateway subscription ends with the last
// Subscription of its (table, org).
func (s *Subscription) Close() {
	e := s.c.e
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.callbacks = nil
	ws := s.ws
	ws.handles = slices.DeleteFunc(ws.handles, func(h *Subscription) bool { return h == s })
	if len(ws.handles) > 0 || e.subs[ws.id] != ws {
		return
	}
	delete(e.subs, ws.id)
	delete(e.topics, ws.topic)
	if ws.retry != nil {
		ws.retry.Stop()
		ws.retry = nil
	}
	e.send(schemaUnsubscribe(ws.id))
	if ws.err == nil {
		ws.err = ErrClosed
	}
	ws.end()
	// Mutations confirmed while this view was catching up may go now.
	e.settle(nil, 0, false)
}

func schemaUnsubscribe(id string) schema.ClientFrame {
	return schema.ClientFrame{Type: schema.FrameUnsubscribe, ID: id}
}

// subscribe creates a handle, sharing the wire subscription of the topic.
func (e *engine) subscribe(table, org string, o subOptions) (*Subscription, *wireSub, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, nil, ErrClosed
	}
	t := topic{table, org}
	ws := e.topics[t]
	if ws == nil {
		e.nextSub++
		ws = &wireSub{
			id:      "s" + strconv.Itoa(e.nextSub),
			topic:   t,
			columns: o.columns,
			keyCols: o.keyCols,
			rows:    map[string]Row{},
			readyCh: make(chan struct{}),
			endCh:   make(chan struct{}),
		}
		e.subs[ws.id] = ws
		e.topics[t] = ws
		e.sendSubscribe(ws)
	} else if !covers(ws.columns, o.columns) {
		return nil, nil, ErrColumnConflict
	}
	s := &Subscription{ws: ws, callbacks: o.onChange}
	if o.columns != nil && !sameSet(o.columns, ws.columns) {
		s.columns = o.columns
	}
	ws.handles = append(ws.handles, s)
	if ws.everReady && len(s.callbacks) > 0 {
		// A late handle sees the current rows as inserts, like at ready.
		var cs []Change
		keys := make(map[string]struct{}, len(ws.rows))
		for k := range ws.rows {
			keys[k] = struct{}{}
		}
		for k := range e.ov[t] {
			keys[k] = struct{}{}
		}
		for _, k := range sortedKeys(keys) {
			if r := e.visible(ws, k, e.ov); r != nil {
				cs = append(cs, Change{Op: schema.OpInsert, Table: table, Org: org, Key: keyObject(r, ws.keyCols), Row: project(r, s.columns, ws.keyCols), LSN: ws.lsn})
			}
		}
		if len(cs) > 0 {
			e.events.push(event{fns: slices.Clone(s.callbacks), changes: cs})
		}
	}
	return s, ws, nil
}

// covers reports whether a subscription of columns have includes want.
func covers(have, want []string) bool {
	if have == nil {
		return true
	}
	if want == nil {
		return false
	}
	for _, c := range want {
		if !slices.Contains(have, c) {
			return false
		}
	}
	return true
}

func sameSet(a, b []string) bool {
	return covers(a, b) && covers(b, a)
}

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/ripple-sync/ripple/schema"
)

// PendingMutation is a mutation sent (or to be sent) to the gateway that is
// not yet part of synced data.
type PendingMutation struct {
	ID      int64           `json:"id"`
	Mutator string          `json:"mutator"`
	Args    json.RawMessage `json:"args"`
}

// PendingStore keeps a client's pending mutations apart from synced data and
// allocates mutation ids. Implementations must be safe for concurrent use;
// a persistent one lets pending mutations survive a process restart (use it
// with a fixed Config.ClientID).
type PendingStore interface {
	// Append assigns m.ID, one more than the largest id ever assigned for
	// clientID (starting at 1, never reused even after Remove), and stores m.
	Append(clientID string, m *PendingMutation) error
	// Remove forgets mutation id of clientID. Removing an unknown id is not
	// an error.
	Remove(clientID string, id int64) error
	// List returns clientID's stored mutations in id order.
	List(clientID string) ([]PendingMutation, error)
}

// MemoryStore is the default, in-memory PendingStore.
type MemoryStore struct {
	mu      sync.Mutex
	clients map[string]*memClient
}

type memClient struct {
	last    int64
	pending []PendingMutation
}

// NewMemoryStore returns an empty in-memory PendingStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{clients: make(map[string]*memClient)}
}

func (s *MemoryStore) client(id string) *memClient {
	c := s.clients[id]
	if c == nil {
		c = &memClient{}
		s.clients[id] = c
	}
	return c
}

// Append implements PendingStore.
func (s *MemoryStore) Append(clientID string, m *PendingMutation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.client(clientID)
	c.last++
	m.ID = c.last
	c.pending = append(c.pending, *m)
	return nil
}

// Remove implements PendingStore.
func (s *MemoryStore) Remove(clientID string, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.client(clientID)
	c.pending = slices.DeleteFunc(c.pending, func(m PendingMutation) bool { return m.ID == id })
	return nil
}

// List implements PendingStore.
func (s *MemoryStore) List(clientID string) ([]PendingMutation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.client(clientID).pending), nil
}

// MutationError is the error of a mutation the writer rejected.
type MutationError struct {
	ID      int64
	Mutator string
	Code    string // e.g. schema.MutationCodeForbidden, or a custom mutator's code
	Message string
}

func (e *MutationError) Error() string {
	return fmt.Sprintf("client: mutation %d (%s) rejected: %s: %s", e.ID, e.Mutator, e.Code, e.Message)
}

// Pending is the handle of one mutation.
type Pending struct {
	id      int64
	mutator string
	args    json.RawMessage
	done    chan struct{}

	// Guarded by the engine's mutex.
	noOptimistic bool
	sent         bool // sent on the current connection, reply outstanding
	applied      bool // the writer answered applied
	confirmed    bool // part of synced data; dropped once no view is catching up
	xid          schema.XID8
	result       json.RawMessage
	err          error
}

func newPending(m PendingMutation) *Pending {
	return &Pending{id: m.ID, mutator: m.Mutator, args: m.Args, done: make(chan struct{})}
}

// ID returns the mutation id.
func (p *Pending) ID() int64 { return p.id }

// Mutator returns the mutator name.
func (p *Pending) Mutator() string { return p.mutator }

// Done is closed when the mutation became part of synced data or was
// rejected.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait blocks until the mutation is part of synced data (nil: the visible view
// now shows it as synced, at the very commit that applied it) or rejected (a
// *MutationError), or until ctx ends.
func (p *Pending) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Result returns the writer's result for an applied mutation once Done is
// closed (nil if the mutator returned none or the reply was never received,
// e.g. when the confirmation arrived first).
func (p *Pending) Result() json.RawMessage {
	select {
	case <-p.done:
		return p.result
	default:
		return nil
	}
}

// MutatorFunc is the optimistic counterpart of a server-side mutator: it
// applies the mutation's effect to the local view through tx. It runs when the
// mutation is made (an error then fails Mutate and nothing is sent) and again
// whenever synced data changes while the mutation is pending (an error then
// just leaves its effect out). It must be deterministic and must not block.
type MutatorFunc func(tx *LocalTx, args json.RawMessage) error

// ErrOptimistic wraps the error a MutatorFunc returned in Mutate.
var ErrOptimistic = errors.New("client: optimistic mutator failed")

// overlay is the effect of the pending mutations on the views: per topic, key
// to the row it shows (nil: deleted).
type overlay map[topic]map[string]Row

func (o overlay) clone() overlay {
	c := make(overlay, len(o))
	for t, m := range o {
		mm := make(map[string]Row, len(m))
		for k, r := range m {
			mm[k] = r
		}
		c[t] = mm
	}
	return c
}

func (o overlay) merge(w overlay) {
	for t, m := range w {
		dst := o[t]
		if dst == nil {
			dst = make(map[string]Row, len(m))
			o[t] = dst
		}
		for k, r := range m {
			dst[k] = r
		}
	}
}

// LocalTx is the local view as a MutatorFunc sees it: synced data with the
// pending mutations before this one applied. Only subscribed (table, org)
// pairs are visible; writes to others are ignored (they would not be seen).
type LocalTx struct {
	e      *engine
	base   overlay // earlier pending mutations
	writes overlay // this mutation
}

// Get returns the row of table in org with the given primary key values (in
// key order, as the gateway encodes them: int8/numeric keys are strings).
// The returned row is a copy the mutator may modify.
func (tx *LocalTx) Get(table, org string, key ...any) (Row, bool) {
	k, err := keyOf(key...)
	if err != nil {
		return nil, false
	}
	r := tx.get(topic{table, org}, k)
	return r.Clone(), r != nil
}

func (tx *LocalTx) get(t topic, k string) Row {
	if m, ok := tx.writes[t]; ok {
		if r, ok := m[k]; ok {
			return r
		}
	}
	if m, ok := tx.base[t]; ok {
		if r, ok := m[k]; ok {
			return r
		}
	}
	ws := tx.e.topics[t]
	if ws == nil || !ws.everReady {
		return nil
	}
	return ws.rows[k]
}

// Rows returns every row of table in org, sorted by primary key.
func (tx *LocalTx) Rows(table, org string) []Row {
	t := topic{table, org}
	keys := map[string]struct{}{}
	if ws := tx.e.topics[t]; ws != nil && ws.everReady {
		for k := range ws.rows {
			keys[k] = struct{}{}
		}
	}
	for k := range tx.base[t] {
		keys[k] = struct{}{}
	}
	for k := range tx.writes[t] {
		keys[k] = struct{}{}
	}
	var out []Row
	for _, k := range sortedKeys(keys) {
		if r := tx.get(t, k); r != nil {
			out = append(out, r.Clone())
		}
	}
	return out
}

// Orgs returns the subscribed organisations of table, sorted.
func (tx *LocalTx) Orgs(table string) []string {
	var out []string
	for t := range tx.e.topics {
		if t.table == table {
			out = append(out, t.org)
		}
	}
	slices.Sort(out)
	return out
}

// KeyColumns returns the primary key columns of table as the gateway named
// them, or nil when no subscription of table has started yet.
func (tx *LocalTx) KeyColumns(table string) []string {
	for t, ws := range tx.e.topics {
		if t.table == table && ws.keyCols != nil {
			return slices.Clone(ws.keyCols)
		}
	}
	return nil
}

// Put inserts or replaces a row of table in org (identified by its primary
// key columns). row may be a Row, a map or a struct that marshals to a JSON
// object.
func (tx *LocalTx) Put(table, org string, row any) error {
	r, err := normalizeRow(row)
	if err != nil {
		return err
	}
	t := topic{table, org}
	ws := tx.e.topics[t]
	if ws == nil || ws.keyCols == nil {
		return nil
	}
	k, err := rowKey(r, ws.keyCols)
	if err != nil {
		return err
	}
	tx.write(t, k, r)
	return nil
}

// Delete removes the row of table in org with the given primary key values.
func (tx *LocalTx) Delete(table, org string, key ...any) error {
	k, err := keyOf(key...)
	if err != nil {
		return err
	}
	t := topic{table, org}
	if tx.e.topics[t] == nil {
		return nil
	}
	tx.write(t, k, nil)
	return nil
}

func (tx *LocalTx) write(t topic, k string, r Row) {
	m := tx.writes[t]
	if m == nil {
		m = make(map[string]Row)
		tx.writes[t] = m
	}
	m[k] = r
}

// keyValues returns the values of the key object in key order for table.
func (tx *LocalTx) keyValues(table string, key Row) ([]any, error) {
	cols := tx.KeyColumns(table)
	if cols == nil {
		// Unknown table: fall back to the object's own order (one column).
		cols = sortedKeys(key)
	}
	vals := make([]any, len(cols))
	for i, c := range cols {
		v, ok := key[c]
		if !ok {
			return nil, fmt.Errorf("%w: key column %q missing", ErrBadRow, c)
		}
		vals[i] = v
	}
	return vals, nil
}

// builtinArgs are the arguments of the built-in insert, update and delete
// mutators.
type builtinArgs struct {
	Table string          `json:"table"`
	Org   string          `json:"org,omitempty"`
	Row   json.RawMessage `json:"row,omitempty"`
	Key   json.RawMessage `json:"key,omitempty"`
	Set   json.RawMessage `json:"set,omitempty"`
}

func parseBuiltin(args json.RawMessage, need string) (builtinArgs, Row, error) {
	var a builtinArgs
	if err := json.Unmarshal(args, &a); err != nil {
		return a, nil, fmt.Errorf("client: arguments: %w", err)
	}
	if a.Table == "" {
		return a, nil, errors.New("client: arguments: table is required")
	}
	var body json.RawMessage
	switch need {
	case "row":
		body = a.Row
	case "key":
		body = a.Key
	}
	if len(body) == 0 {
		return a, nil, fmt.Errorf("client: arguments: %s is required", need)
	}
	r, err := decodeRow(body)
	if err != nil {
		return a, nil, fmt.Errorf("client: arguments: %s: %w", need, err)
	}
	return a, r, nil
}

// findOrg returns the organisation whose view of table holds key, trying org
// first when given.
func (tx *LocalTx) findOrg(table, org string, key []any) (string, bool) {
	orgs := tx.Orgs(table)
	if org != "" {
		orgs = []string{org}
	}
	for _, o := range orgs {
		if _, ok := tx.Get(table, o, key...); ok {
			return o, true
		}
	}
	return "", false
}

func builtinInsert(tx *LocalTx, args json.RawMessage) error {
	a, row, err := parseBuiltin(args, "row")
	if err != nil {
		return err
	}
	org := a.Org
	if org == "" {
		// The root key column is not known here: the row's organisation
		// is the subscribed one that is a value of the row.
		for _, o := range tx.Orgs(a.Table) {
			for _, v := range row {
				if s, ok := v.(string); ok && s == o {
					org = o
				}
			}
		}
		if org == "" {
			return nil // not in a subscribed organisation: nothing to show
		}
	}
	return tx.Put(a.Table, org, row)
}

func builtinUpdate(tx *LocalTx, args json.RawMessage) error {
	a, key, err := parseBuiltin(args, "key")
	if err != nil {
		return err
	}
	var set Row
	if len(a.Set) > 0 {
		if set, err = decodeRow(a.Set); err != nil {
			return fmt.Errorf("client: arguments: set: %w", err)
		}
	}
	kv, err := tx.keyValues(a.Table, key)
	if err != nil {
		return err
	}
	org, ok := tx.findOrg(a.Table, a.Org, kv)
	if !ok {
		return nil
	}
	row, _ := tx.Get(a.Table, org, kv...)
	for c, v := range set {
		row[c] = v
	}
	if cols := tx.KeyColumns(a.Table); cols != nil {
		if nk, err := rowKey(row, cols); err == nil {
			if ok, _ := keyOf(kv...); ok != nk {
				// The key itself changed: the old row goes away.
				if err := tx.Delete(a.Table, org, kv...); err != nil {
					return err
				}
			}
		}
	}
	return tx.Put(a.Table, org, row)
}

func builtinDelete(tx *LocalTx, args json.RawMessage) error {
	a, key, err := parseBuiltin(args, "key")
	if err != nil {
		return err
	}
	kv, err := tx.keyValues(a.Table, key)
	if err != nil {
		return err
	}
	org, ok := tx.findOrg(a.Table, a.Org, kv)
	if !ok {
		return nil
	}
	return tx.Delete(a.Table, org, kv...)
}

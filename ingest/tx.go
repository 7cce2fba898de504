package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ripple-sync/ripple/schema"
)

// part is the buffered operations of one (organisation, table) of the open
// transaction.
type part struct {
	org, table, subject string
	seq                 int    // next chunk number
	ops                 []byte // encoded ops, comma-separated
	nops                int
	hdr                 int    // upper bound of the header size without subjects
	prefix              []byte // header up to "seq":, built on first use
}

// txn is the open transaction.
type txn struct {
	open       bool
	xid        schema.XID8
	commitTime time.Time
	parts      map[string]*part            // by subject
	byTable    map[string]map[string]*part // by table, then organisation
	buffered   int
	rows       int
	chunked    map[string]bool // subjects on which a chunk went out
	resyncs    []schema.Resync
	described  []*relation // relations to record as streamed once the resyncs are out
}

func (t *txn) begin(xid schema.XID8, commitTime time.Time) {
	t.open, t.xid, t.commitTime = true, xid, commitTime
	if t.parts == nil {
		t.parts = make(map[string]*part)
		t.byTable = make(map[string]map[string]*part)
		t.chunked = make(map[string]bool)
	}
}

func (t *txn) reset() {
	t.open = false
	if len(t.parts) > 4096 {
		// Do not keep the buckets of a huge transaction.
		t.parts, t.chunked = make(map[string]*part), make(map[string]bool)
		t.byTable = make(map[string]map[string]*part)
	}
	for _, m := range t.byTable {
		clear(m)
	}
	clear(t.parts)
	clear(t.chunked)
	clear(t.described)
	t.described = t.described[:0]
	t.buffered, t.rows = 0, 0
	t.resyncs = t.resyncs[:0]
}

// addResync queues a resync marker, published after the transaction's
// parts with its commit LSN.
func (t *txn) addResync(table, org, reason string) {
	for _, r := range t.resyncs {
		if r.Table == table && r.Org == org && r.Reason == reason {
			return
		}
	}
	t.resyncs = append(t.resyncs, schema.Resync{Table: table, Org: org, Reason: reason})
}

// project collects a tuple's text values in encoder column order. fill
// provides values for unchanged TOAST columns ('u'); ok is false when such a
// value is missing.
func (s *session) project(b *boundRel, t []tupleCol, fill [][]byte, dst [][]byte) (vals [][]byte, ok bool, err error) {
	vals = dst[:0]
	ok = true
	for j, ti := range b.rowIdx {
		if ti >= len(t) {
			return nil, false, fmt.Errorf("%w: tuple of %s has %d columns, relation has %d", ErrMalformed, b.table, len(t), len(b.rel.Columns))
		}
		c := t[ti]
		switch c.Kind {
		case colNull:
			vals = append(vals, nil)
		case colText:
			v := c.Data
			if v == nil {
				v = []byte{}
			}
			vals = append(vals, v)
		case colUnchanged:
			if fill != nil && fill[j] != nil {
				vals = append(vals, fill[j])
			} else {
				vals = append(vals, nil)
				ok = false
			}
		default:
			return nil, false, fmt.Errorf("%w: column kind %q in a text-format stream", ErrMalformed, c.Kind)
		}
	}
	return vals, ok, nil
}

// change routes an insert, update or delete (BRIEF rules 6, 7).
func (s *session) change(m *walMessage) error {
	b := s.rels[m.RelID]
	if b == nil {
		return fmt.Errorf("%w: change of relation %d before its Relation message", ErrMalformed, m.RelID)
	}
	if b.kind == relIgnored {
		return nil
	}
	if !s.tx.open {
		return fmt.Errorf("%w: change outside a transaction", ErrMalformed)
	}
	if b.failed != "" {
		s.tx.addResync(b.table, "", "unsupported")
		return nil
	}
	var err error
	var ok bool
	var old [][]byte
	if m.OldKind == 'O' || m.OldKind == 'K' {
		// A 'K' tuple (REPLICA IDENTITY of an index) holds the key
		// columns only; the others are NULL.
		if s.oldVals, ok, err = s.project(b, m.Old, nil, s.oldVals); err != nil {
			return err
		}
		old = s.oldVals
	}
	switch m.Kind {
	case kindInsert:
		if s.vals, ok, err = s.project(b, m.New, nil, s.vals); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: unchanged TOAST value in an insert", ErrMalformed)
		}
		return s.addOp(b, s.vals, schema.OpInsert)
	case kindDelete:
		if old == nil || old[b.rootIdx] == nil {
			// Without the root key (no REPLICA IDENTITY FULL) the delete
			// cannot be routed: every subscriber of the table resyncs.
			s.warnOnce("unroutable delete (is REPLICA IDENTITY FULL set?)", b.table)
			s.tx.addResync(b.table, "", "unroutable_delete")
			return nil
		}
		return s.addOp(b, old, schema.OpDelete)
	}
	// Update.
	var fill [][]byte
	if m.OldKind == 'O' {
		fill = old
	}
	if s.vals, ok, err = s.project(b, m.New, fill, s.vals); err != nil {
		return err
	}
	newVals := s.vals
	if !ok {
		s.warnOnce("update with an unchanged TOAST value and no old tuple (is REPLICA IDENTITY FULL set?)", b.table)
		if newVals[b.rootIdx] != nil {
			s.tx.addResync(b.table, string(newVals[b.rootIdx]), "unchanged_toast")
		} else {
			s.tx.addResync(b.table, "", "unchanged_toast")
		}
		return nil
	}
	if old != nil && m.OldKind == 'K' && old[b.rootIdx] == nil {
		// The root key is not part of the identity: assume it did not
		// change (REPLICA IDENTITY FULL, which enable sets, avoids this).
		old[b.rootIdx] = newVals[b.rootIdx]
	}
	if old != nil {
		if !bytes.Equal(old[b.rootIdx], newVals[b.rootIdx]) || old[b.rootIdx] == nil != (newVals[b.rootIdx] == nil) {
			// Moved to another organisation: gone from the old one, a
			// whole new row in the new one.
			if old[b.rootIdx] != nil {
				if err := s.addOp(b, old, schema.OpDelete); err != nil {
					return err
				}
			}
			return s.addOp(b, newVals, schema.OpInsert)
		}
		for _, k := range b.pkIdx {
			if !bytes.Equal(old[k], newVals[k]) {
				if err := s.addOp(b, old, schema.OpDelete); err != nil {
					return err
				}
				break
			}
		}
	}
	return s.addOp(b, newVals, schema.OpUpdate)
}

func (s *session) warnOnce(msg, table string) {
	key := msg + "\x00" + table
	if !s.i.ignored[key] {
		s.i.ignored[key] = true
		s.i.log.Warn(msg, "table", table)
	}
}

// addOp encodes one operation into its part, sending a chunk when the part
// would outgrow MaxMessageBytes.
func (s *session) addOp(b *boundRel, vals [][]byte, op string) error {
	root := vals[b.rootIdx]
	if root == nil {
		s.warnOnce("row with a NULL root key is not published", b.table)
		return nil
	}
	p := s.part(root, b.table)
	before := len(p.ops)
	start := before
	if p.nops > 0 {
		p.ops = append(p.ops, ',')
		start++
	}
	p.ops = append(p.ops, `{"op":"`...)
	p.ops = append(p.ops, op...)
	var err error
	if op == schema.OpDelete {
		p.ops = append(p.ops, `","key":`...)
		p.ops, err = b.enc.AppendColumns(p.ops, vals, b.pkIdx)
	} else {
		p.ops = append(p.ops, `","row":`...)
		p.ops, err = b.enc.AppendRow(p.ops, vals)
	}
	if err != nil {
		// A value the codec rejects: the row cannot be streamed; the
		// subscribers of this organisation's table resync instead.
		p.ops = p.ops[:before]
		s.i.log.Error("cannot encode a row; publishing a resync marker instead", "table", b.table, "err", err)
		s.tx.addResync(b.table, p.org, "bad_value")
		return nil
	}
	p.ops = append(p.ops, '}')
	opLen := len(p.ops) - start
	if p.hdr+opLen+64 > int(s.nc.MaxPayload()) {
		p.ops = p.ops[:before]
		s.i.log.Error("row too large for one NATS message; publishing a resync marker instead", "table", b.table, "bytes", opLen)
		s.tx.addResync(b.table, p.org, "oversized_row")
		return nil
	}
	if p.nops > 0 && p.hdr+len(p.ops)+2 > s.cfg.MaxMessageBytes {
		// Send what was there as a chunk and keep the new op.
		s.tail = append(s.tail[:0], p.ops[start:]...)
		p.ops = p.ops[:before]
		if err := s.flushChunk(p); err != nil {
			return err
		}
		p.ops = append(p.ops[:0], s.tail...)
		before = 0
	}
	p.nops++
	s.tx.rows++
	s.tx.buffered += len(p.ops) - before
	if s.tx.buffered > s.cfg.MaxBufferedBytes {
		return s.flushLargest()
	}
	return nil
}

func (s *session) part(root []byte, table string) *part {
	byOrg := s.tx.byTable[table]
	if byOrg == nil {
		byOrg = make(map[string]*part)
		s.tx.byTable[table] = byOrg
	}
	if p := byOrg[string(root)]; p != nil {
		return p
	}
	org := string(root)
	p := &part{org: org, table: table, subject: schema.DataSubject(org, table)}
	p.hdr = 200 + len(s.epochJSON) + 2*len(org) + 2*len(table) + 16
	if n := len(s.free); n > 0 {
		p.ops = s.free[n-1][:0]
		s.free = s.free[:n-1]
	}
	s.tx.parts[p.subject] = p
	byOrg[org] = p
	return p
}

func (s *session) recycle(p *part) {
	if p.ops != nil && cap(p.ops) <= 2*s.cfg.MaxMessageBytes && len(s.free) < 16 {
		s.free = append(s.free, p.ops[:0])
	}
	p.ops = nil
}

// flushLargest sends the largest parts as chunks until the transaction's
// buffered bytes are at most half of MaxBufferedBytes.
func (s *session) flushLargest() error {
	ps := make([]*part, 0, len(s.tx.parts))
	for _, p := range s.tx.parts {
		if p.nops > 0 {
			ps = append(ps, p)
		}
	}
	slices.SortFunc(ps, func(a, b *part) int { return len(b.ops) - len(a.ops) })
	for _, p := range ps {
		if s.tx.buffered <= s.cfg.MaxBufferedBytes/2 {
			break
		}
		if err := s.flushChunk(p); err != nil {
			return err
		}
		s.recycle(p)
	}
	return nil
}

// flushChunk publishes the buffered ops of p as a non-last chunk.
func (s *session) flushChunk(p *part) error {
	if err := s.publishPart(p, false, 0, nil); err != nil {
		return err
	}
	s.tx.chunked[p.subject] = true
	s.tx.buffered -= len(p.ops)
	p.ops = p.ops[:0]
	p.nops = 0
	p.seq++
	return nil
}

func (s *session) publishPart(p *part, last bool, lsn uint64, subjects []byte) error {
	msg := s.appendPartHeader(s.scratch[:0], p, last, lsn, subjects)
	msg = append(msg, `,"ops":[`...)
	msg = append(msg, p.ops...)
	msg = append(msg, "]}"...)
	s.scratch = msg[:0]
	return s.publish(p.subject, msg)
}

// appendPartHeader appends the fields of a schema.Part before "ops", as
// encoding/json would, without reflection. subjects is the JSON array of
// the part's Subjects (last chunks only).
func (s *session) appendPartHeader(dst []byte, p *part, last bool, lsn uint64, subjects []byte) []byte {
	if p.prefix == nil {
		org, _ := json.Marshal(p.org)
		table, _ := json.Marshal(p.table)
		b := append([]byte(`{"k":"part","epoch":`), s.epochJSON...)
		b = append(b, `,"xid":"`...)
		b = strconv.AppendUint(b, uint64(s.tx.xid), 10)
		b = append(b, `","org":`...)
		b = append(b, org...)
		b = append(b, `,"table":`...)
		b = append(b, table...)
		p.prefix = append(b, `,"seq":`...)
	}
	dst = append(dst, p.prefix...)
	dst = strconv.AppendInt(dst, int64(p.seq), 10)
	if last {
		dst = append(dst, `,"last":true`...)
		if lsn != 0 {
			dst = append(dst, `,"lsn":"`...)
			dst = appendLSN(dst, lsn)
			dst = append(dst, '"')
		}
		if !s.tx.commitTime.IsZero() {
			dst = append(dst, `,"time":"`...)
			dst = s.tx.commitTime.AppendFormat(dst, time.RFC3339Nano)
			dst = append(dst, '"')
		}
		if len(subjects) > 0 {
			dst = append(dst, `,"subjects":`...)
			dst = append(dst, subjects...)
		}
	}
	return dst
}

// appendLSN appends the Postgres text form of an LSN (upper-case hex).
func appendLSN(dst []byte, lsn uint64) []byte {
	start := len(dst)
	dst = strconv.AppendUint(dst, lsn>>32, 16)
	dst = append(dst, '/')
	dst = strconv.AppendUint(dst, lsn&0xFFFFFFFF, 16)
	for i := start; i < len(dst); i++ {
		if c := dst[i]; c >= 'a' && c <= 'f' {
			dst[i] = c - 'a' + 'A'
		}
	}
	return dst
}

// commit publishes every part's last chunk, the transaction's resync
// markers and deferred barriers, then advances D to the commit's end LSN.
func (s *session) commit(m *walMessage) error {
	end := m.EndLSN
	if len(s.tx.parts) > 0 {
		ps := make([]*part, 0, len(s.tx.parts))
		for _, p := range s.tx.parts {
			ps = append(ps, p)
		}
		slices.SortFunc(ps, func(a, b *part) int {
			if c := strings.Compare(a.org, b.org); c != 0 {
				return c
			}
			return strings.Compare(a.subject, b.subject)
		})
		for i := 0; i < len(ps); {
			j := i
			subjects := make([]string, 0, 4)
			for j < len(ps) && ps[j].org == ps[i].org {
				subjects = append(subjects, ps[j].subject)
				j++
			}
			sort.Strings(subjects)
			subJSON, err := json.Marshal(subjects)
			if err != nil {
				return fmt.Errorf("ingest: encode subjects: %w", err)
			}
			subLen := len(subJSON) + 16
			for _, p := range ps[i:j] {
				if p.nops > 0 && p.hdr+subLen+len(p.ops)+2 > s.cfg.MaxMessageBytes {
					if err := s.flushChunk(p); err != nil {
						return err
					}
				}
				if err := s.publishPart(p, true, end, subJSON); err != nil {
					return err
				}
				s.recycle(p)
			}
			i = j
		}
		s.i.m.commits.Inc()
		s.i.m.rows.Add(float64(s.tx.rows))
		s.i.m.lagSeconds.Set(max(0, time.Since(s.tx.commitTime).Seconds()))
	}
	for _, r := range s.tx.resyncs {
		r.LSN = schema.LSN(end)
		if err := s.publishResync(r); err != nil {
			return err
		}
	}
	if err := s.recordStreamed(s.tx.described...); err != nil {
		return err
	}
	s.tx.reset()
	s.i.d = max(s.i.d, end)
	deferred := s.deferred
	s.deferred = nil
	for _, req := range deferred {
		if err := s.barrier(req); err != nil {
			return err
		}
	}
	return nil
}

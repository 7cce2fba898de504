package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/schema"
)

// errNATSDown ends a session when the NATS connection dropped: messages in
// flight may be lost, so replication restarts from the slot's confirmed
// position, which never passes what NATS accepted.
var errNATSDown = errors.New("ingest: NATS connection lost")

const (
	readBudget     = 16 << 20 // memory of decoded messages between reader and main loop (walMessage.footprint)
	flushTimeout   = 10 * time.Second
	maxPendingCkpt = 64
	// statusInterval is the longest time without a status update (well
	// under the server's wal_sender_timeout, 60s by default).
	statusInterval = 10 * time.Second
)

// session is one replication connection's lifetime. Everything in it is
// owned by the goroutine running (*session).loop, except the reader.
type session struct {
	i     *Ingest
	cfg   *Config
	nc    *nats.Conn
	repl  *pgconn.PgConn
	br    *bufio.Reader // the replication connection's read buffer (reader goroutine only)
	query *pgx.Conn
	types *schema.Types

	rels   map[uint32]*boundRel
	xidRef uint64 // a recent next-xid (xid8) for widening pgoutput's 32-bit xids

	acked      uint64    // last LSN acknowledged to Postgres
	sentAck    uint64    // acked as of the last status update sent
	sentAt     time.Time // when the last status update was sent
	walEnd     uint64    // server WAL end from the last keepalive
	reconnects uint64    // NATS reconnect count when the session started

	tx        txn
	deferred  []*nats.Msg // barrier requests waiting for the open transaction's commit
	ckpts     []checkpoint
	hbPending bool

	epochJSON []byte   // the epoch as a JSON string
	scratch   []byte   // message being published
	tail      []byte   // an op moved out of a part while it is flushed
	free      [][]byte // recycled part buffers
	vals      [][]byte
	oldVals   [][]byte
}

// replicate runs one replication session until an error or ctx is done.
func (i *Ingest) replicate(ctx context.Context, nc *nats.Conn, ckpts <-chan checkpoint) error {
	if !nc.IsConnected() {
		return fmt.Errorf("ingest: NATS is not connected (%v)", nc.Status())
	}
	// Forget disconnects from before this session.
	select {
	case <-i.natsDown:
	default:
	}
	s := &session{i: i, cfg: &i.cfg, nc: nc, rels: make(map[uint32]*boundRel), reconnects: nc.Stats().Reconnects}
	s.epochJSON, _ = json.Marshal(i.cfg.Epoch)
	defer s.close()
	if err := s.connect(ctx); err != nil {
		return err
	}
	i.m.sessions.Inc()
	return s.loop(ctx, ckpts)
}

func (s *session) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if s.repl != nil {
		_ = s.repl.Close(ctx)
	}
	if s.query != nil {
		_ = s.query.Close(ctx)
	}
}

// connect opens the query and replication connections, creates the slot if
// missing and starts replication from the slot's confirmed position.
func (s *session) connect(ctx context.Context) error {
	qcfg, err := pgx.ParseConfig(s.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("ingest: parse DatabaseURL: %w", err)
	}
	schema.ApplySessionSettings(&qcfg.Config)
	if s.query, err = pgx.ConnectConfig(ctx, qcfg); err != nil {
		return fmt.Errorf("ingest: connect query connection: %w", err)
	}
	if s.types, err = schema.LoadTypes(ctx, s.query); err != nil {
		return fmt.Errorf("ingest: load types: %w", err)
	}
	var xmax string
	if err := s.query.QueryRow(ctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text").Scan(&xmax); err != nil {
		return fmt.Errorf("ingest: read next xid: %w", err)
	}
	x, err := schema.ParseXID8(xmax)
	if err != nil {
		return fmt.Errorf("ingest: read next xid: %w", err)
	}
	s.xidRef = uint64(x)

	rcfg, err := pgconn.ParseConfig(s.cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("ingest: parse DatabaseURL: %w", err)
	}
	schema.ApplySessionSettings(rcfg)
	rcfg.RuntimeParams["replication"] = "database"
	// Large reads: a busy stream then costs one syscall per many messages.
	rcfg.BuildFrontend = func(r io.Reader, w io.Writer) *pgproto3.Frontend {
		s.br = bufio.NewReaderSize(&lingerReader{r: r}, 256<<10)
		return pgproto3.NewFrontend(s.br, w)
	}
	if s.repl, err = pgconn.ConnectConfig(ctx, rcfg); err != nil {
		return fmt.Errorf("ingest: connect replication connection: %w", err)
	}

	var confirmed *string
	err = s.query.QueryRow(ctx, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", s.cfg.SlotName).Scan(&confirmed)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		res, cerr := pglogrepl.CreateReplicationSlot(ctx, s.repl, s.cfg.SlotName, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication})
		var pgErr *pgconn.PgError
		if cerr != nil && !(errors.As(cerr, &pgErr) && pgErr.Code == "42710") { // duplicate_object: created concurrently
			return fmt.Errorf("ingest: create replication slot %q: %w", s.cfg.SlotName, cerr)
		}
		if cerr == nil {
			s.i.log.Info("created replication slot", "slot", s.cfg.SlotName, "consistent_point", res.ConsistentPoint)
			if l, perr := schema.ParseLSN(res.ConsistentPoint); perr == nil {
				s.acked = uint64(l)
			}
		}
	case err != nil:
		return fmt.Errorf("ingest: look up replication slot %q: %w", s.cfg.SlotName, err)
	case confirmed != nil:
		l, perr := schema.ParseLSN(*confirmed)
		if perr != nil {
			return fmt.Errorf("ingest: slot position: %w", perr)
		}
		s.acked = uint64(l)
	}
	// Everything up to the slot's confirmed position was published (by
	// this process or a previous leader) before it was acknowledged; beyond
	// it nothing is known to have reached NATS (a previous session may have
	// ended because NATS lost what it published), so D starts there and
	// only moves as this session publishes again (rule 1).
	s.i.d = s.acked

	err = pglogrepl.StartReplication(ctx, s.repl, s.cfg.SlotName, 0, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + s.cfg.Publication + "'"},
	})
	if err != nil {
		return fmt.Errorf("ingest: start replication on slot %q: %w", s.cfg.SlotName, err)
	}
	s.i.log.Info("replication started", "slot", s.cfg.SlotName, "publication", s.cfg.Publication,
		"from", schema.LSN(s.acked), "d", schema.LSN(s.i.d))
	return nil
}

// Linger: the walsender sends every message with a write of its own, so a
// reader that keeps up wakes up and reads once per message (a row!): half
// of the ingest's CPU went to those reads and wake-ups, taken from the
// walsender on a busy machine. While the server streams fast, the reader
// waits a moment before each read instead, so one read takes many messages.
const (
	lingerWindow = time.Millisecond
	// lingerReads small reads within lingerWindow start lingering (a
	// commit, even a few per millisecond, never does).
	lingerReads = 8
	// lingerDelay is the wait before a read while lingering (shorter
	// sleeps take about a millisecond anyway when the process is idle, and
	// a shorter, exact one gathered too little). It bounds what lingering
	// adds to a commit's latency.
	lingerDelay = time.Millisecond
	// lingerMinBytes: lingering stops when a read after the wait returns
	// less (the stream slowed down).
	lingerMinBytes = 2 << 10
)

// lingerReader is the replication connection's raw reader (one goroutine).
type lingerReader struct {
	r           io.Reader
	linger      bool
	windowStart time.Time
	reads       int
}

func (l *lingerReader) Read(p []byte) (int, error) {
	if l.linger {
		time.Sleep(lingerDelay)
	}
	n, err := l.r.Read(p)
	full := n >= len(p)/2 // more is likely waiting: read on at once
	if l.linger {
		l.linger = n >= lingerMinBytes && !full
		return n, err
	}
	now := time.Now()
	if now.Sub(l.windowStart) >= lingerWindow {
		l.windowStart, l.reads = now, 0
	}
	l.reads++
	if l.reads >= lingerReads && !full {
		l.linger, l.reads = true, 0
	}
	return n, err
}

// byteBudget bounds the decoded bytes queued between the reader and the
// main loop. There is one acquirer (the reader).
type byteBudget struct {
	max   int64
	used  atomic.Int64
	freed chan struct{}
}

func (b *byteBudget) acquire(ctx context.Context, n int64) error {
	for {
		if b.tryAcquire(n) {
			return nil
		}
		select {
		case <-b.freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// tryAcquire takes n bytes if that needs no wait.
func (b *byteBudget) tryAcquire(n int64) bool {
	u := b.used.Load()
	if u == 0 || u+n <= b.max {
		b.used.Add(n)
		return true
	}
	return false
}

func (b *byteBudget) release(n int64) {
	b.used.Add(-n)
	select {
	case b.freed <- struct{}{}:
	default:
	}
}

type inMsg struct {
	m    *walMessage
	size int64
}

// queue hands decoded messages from the reader to the main loop in
// batches: the reader appends and signals, the main loop takes everything
// queued at once. No message waits for a later one.
type queue struct {
	mu     sync.Mutex
	items  []inMsg
	free   []inMsg // owned by the main loop
	signal chan struct{}
}

func (q *queue) put(in inMsg, more bool) {
	q.mu.Lock()
	q.items = append(q.items, in)
	n := len(q.items)
	q.mu.Unlock()
	// Wake the main loop only when it has something to publish or answer
	// (a commit, a keepalive, ...) and no more input is buffered, or every
	// 256 messages: one wake-up per transaction or batch instead of one
	// per message. A change waiting in the queue is no different from a
	// change that has not arrived yet: nothing of its transaction can be
	// published before its commit, which wakes the main loop.
	if (more || deferrable(in.m.Kind)) && n%256 != 0 {
		return
	}
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// deferrable reports whether a message of this kind can wait in the queue
// for a later message to wake the main loop.
func deferrable(kind byte) bool {
	switch kind {
	case kindBegin, kindInsert, kindUpdate, kindDelete:
		return true
	}
	return false
}

// flush wakes the main loop for whatever is queued.
func (q *queue) flush() {
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *queue) take() []inMsg {
	q.mu.Lock()
	batch := q.items
	q.items = q.free[:0]
	q.mu.Unlock()
	return batch
}

func (q *queue) recycle(batch []inMsg) {
	clear(batch)
	q.free = batch[:0]
}

// read receives replication messages, decodes them and queues them until
// an error (closing the connection ends it).
func (s *session) read(ctx context.Context, q *queue, budget *byteBudget) error {
	for {
		// context.Background: watching a context costs per message; the
		// main loop closes the connection to stop this read.
		msg, err := s.repl.ReceiveMessage(context.Background())
		if err != nil {
			return fmt.Errorf("ingest: receive from replication connection: %w", err)
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			buf := bytes.Clone(msg.Data)
			m, err := decodeCopyData(buf)
			if err != nil {
				return err
			}
			n := m.footprint(len(buf))
			if !budget.tryAcquire(n) {
				q.flush() // the main loop must see what is queued to release budget
				if err := budget.acquire(ctx, n); err != nil {
					return err
				}
			}
			q.put(inMsg{m, n}, s.br.Buffered() > 0)
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("ingest: replication: %w", pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyDone:
			return errors.New("ingest: the server ended the replication stream")
		}
	}
}

// loop is the one goroutine that owns publishing order.
func (s *session) loop(ctx context.Context, ckpts <-chan checkpoint) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	barriers := make(chan *nats.Msg, 1024)
	bsub, err := s.nc.ChanSubscribe(schema.SubjectBarrier, barriers)
	if err != nil {
		return fmt.Errorf("ingest: subscribe %s: %w", schema.SubjectBarrier, err)
	}
	defer bsub.Unsubscribe()
	positions := make(chan *nats.Msg, 1024)
	psub, err := s.nc.ChanSubscribe(schema.SubjectPosition, positions)
	if err != nil {
		return fmt.Errorf("ingest: subscribe %s: %w", schema.SubjectPosition, err)
	}
	defer psub.Unsubscribe()
	for _, sub := range []*nats.Subscription{bsub, psub} {
		_ = sub.SetPendingLimits(-1, -1)
	}
	if err := s.nc.FlushTimeout(flushTimeout); err != nil {
		return fmt.Errorf("ingest: flush subscriptions: %w", err)
	}

	q := &queue{signal: make(chan struct{}, 1)}
	budget := &byteBudget{max: readBudget, freed: make(chan struct{}, 1)}
	var readErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		readErr = s.read(ctx, q, budget)
		cancel()
	}()
	stopReader := func() {
		cancel()
		_ = s.repl.Conn().Close() // ends a pending ReceiveMessage
		wg.Wait()
	}
	defer stopReader()

	hb := time.NewTicker(s.cfg.HeartbeatInterval)
	defer hb.Stop()
	s.i.update(func(st *State) { st.Streaming, st.LastError = true, "" })
	// Ask for the position right away so a quiet system gets a first
	// heartbeat quickly.
	s.hbPending = true
	if err := s.sendStatus(true); err != nil {
		return err
	}

	for {
		select {
		case <-ctx.Done():
			stopReader()
			if readErr != nil && !errors.Is(readErr, context.Canceled) {
				return readErr
			}
			return ctx.Err()
		case <-q.signal:
			batch := q.take()
			var size int64
			var err error
			for _, in := range batch {
				size += in.size
				if err = s.handle(ctx, in.m); err != nil {
					break
				}
			}
			q.recycle(batch)
			budget.release(size)
			if err != nil {
				return err
			}
		case req := <-barriers:
			if err := s.barrier(req); err != nil {
				return err
			}
		case req := <-positions:
			if err := s.position(req); err != nil {
				return err
			}
		case cp := <-ckpts:
			s.xidRef = max(s.xidRef, cp.xmax)
			if len(s.ckpts) == maxPendingCkpt {
				s.ckpts = s.ckpts[1:]
			}
			s.ckpts = append(s.ckpts, cp)
		case <-hb.C:
			if s.tx.open {
				// D cannot move while a transaction is open: publish the
				// heartbeat now instead of asking the server.
				if err := s.heartbeat(); err != nil {
					return err
				}
				continue
			}
			if s.hbPending {
				// No keepalive answered the last request: publish anyway.
				if err := s.heartbeat(); err != nil {
					return err
				}
			}
			s.hbPending = true
			if err := s.sendStatus(true); err != nil {
				return err
			}
		case <-s.i.natsDown:
			return errNATSDown
		}
	}
}

// sendStatus acknowledges s.acked to the server.
func (s *session) sendStatus(replyRequested bool) error {
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.repl, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(s.acked),
		WALFlushPosition: pglogrepl.LSN(s.acked),
		WALApplyPosition: pglogrepl.LSN(s.acked),
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("ingest: send standby status: %w", err)
	}
	s.sentAck, s.sentAt = s.acked, time.Now()
	return nil
}

// heartbeat publishes D (with the newest checkpoint D has passed), makes
// sure NATS accepted everything so far and then acknowledges D.
func (s *session) heartbeat() error {
	s.hbPending = false
	d := s.i.d
	h := schema.Heartbeat{K: schema.KindHeartbeat, Epoch: s.cfg.Epoch, D: schema.LSN(d), Time: time.Now().UTC()}
	n := 0
	for n < len(s.ckpts) && s.ckpts[n].lsn <= d {
		n++
	}
	if n > 0 {
		cp := s.ckpts[n-1]
		h.Checkpoint = &schema.Checkpoint{LSN: schema.LSN(cp.lsn), XMin: schema.XID8(cp.xmin)}
		s.ckpts = s.ckpts[n:]
	}
	if err := s.publishJSON(schema.SubjectControl, h); err != nil {
		return err
	}
	fstart := time.Now()
	if err := s.nc.FlushTimeout(flushTimeout); err != nil {
		s.i.m.publishErrors.Inc()
		return fmt.Errorf("ingest: flush NATS: %w", err)
	}
	if took := time.Since(fstart); took > time.Second {
		s.i.log.Warn("slow NATS flush", "took", took)
	}
	if s.nc.Stats().Reconnects != s.reconnects {
		return errNATSDown
	}
	s.acked = max(s.acked, d)
	s.i.m.decoded.Set(float64(d))
	s.i.m.acked.Set(float64(s.acked))
	s.i.update(func(st *State) {
		st.D, st.Acked, st.LastProgress = schema.LSN(d), schema.LSN(s.acked), time.Now()
	})
	if s.acked == s.sentAck && time.Since(s.sentAt) < statusInterval {
		return nil // nothing new to acknowledge
	}
	return s.sendStatus(false)
}

func (s *session) publishJSON(subject string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("ingest: encode %T: %w", v, err)
	}
	return s.publish(subject, b)
}

func (s *session) publish(subject string, data []byte) error {
	if err := s.nc.Publish(subject, data); err != nil {
		s.i.m.publishErrors.Inc()
		return fmt.Errorf("ingest: publish on %s: %w", subject, err)
	}
	s.i.m.messages.Inc()
	s.i.m.bytes.Add(float64(len(data)))
	return nil
}

// barrier answers a BarrierRequest (rule 2).
func (s *session) barrier(req *nats.Msg) error {
	var br schema.BarrierRequest
	if err := json.Unmarshal(req.Data, &br); err != nil {
		return s.reply(req, schema.BarrierReply{Epoch: s.cfg.Epoch, D: schema.LSN(s.i.d), Error: "bad barrier request: " + err.Error()})
	}
	if _, _, err := schema.ParseDataSubject(br.Subject); err != nil {
		return s.reply(req, schema.BarrierReply{Epoch: s.cfg.Epoch, D: schema.LSN(s.i.d), Error: err.Error()})
	}
	if s.tx.open && s.tx.chunked[br.Subject] {
		// A chunk of the open transaction went out on this subject: a
		// barrier now would split the transaction around it.
		s.deferred = append(s.deferred, req)
		return nil
	}
	return s.publishBarrier(req, br)
}

func (s *session) publishBarrier(req *nats.Msg, br schema.BarrierRequest) error {
	d := schema.LSN(s.i.d)
	if err := s.publishJSON(br.Subject, schema.Barrier{K: schema.KindBarrier, Epoch: s.cfg.Epoch, ID: br.ID, D: d}); err != nil {
		return err
	}
	return s.reply(req, schema.BarrierReply{Epoch: s.cfg.Epoch, D: d})
}

func (s *session) position(req *nats.Msg) error {
	return s.reply(req, schema.PositionReply{Epoch: s.cfg.Epoch, D: schema.LSN(s.i.d)})
}

func (s *session) reply(req *nats.Msg, v any) error {
	if req.Reply == "" {
		return nil
	}
	return s.publishJSON(req.Reply, v)
}

// fullXID widens a 32-bit xid from BEGIN to an xid8 using a recent next-xid
// reference: both are within 2^31 of each other.
func (s *session) fullXID(x uint32) uint64 {
	delta := int32(x - uint32(s.xidRef))
	return uint64(int64(s.xidRef) + int64(delta))
}

// handle processes one decoded replication message.
func (s *session) handle(ctx context.Context, m *walMessage) error {
	switch m.Kind {
	case kindKeepalive:
		s.walEnd = max(s.walEnd, m.WALEnd)
		if !s.tx.open && m.WALEnd > s.i.d {
			// Rule 1: with no transaction open, everything the server
			// decoded up to its WAL end has been published.
			s.i.d = m.WALEnd
		}
		if s.walEnd > s.i.d {
			s.i.m.lagBytes.Set(float64(s.walEnd - s.i.d))
		} else {
			s.i.m.lagBytes.Set(0)
			s.i.m.lagSeconds.Set(0)
		}
		if s.hbPending {
			if err := s.heartbeat(); err != nil {
				return err
			}
		}
		if m.ReplyRequested && time.Since(s.sentAt) > time.Millisecond {
			return s.sendStatus(false)
		}
	case kindBegin:
		if s.tx.open {
			return fmt.Errorf("%w: BEGIN inside a transaction", ErrMalformed)
		}
		s.tx.begin(schema.XID8(s.fullXID(m.XID)), m.CommitTime)
	case kindCommit:
		if !s.tx.open {
			return fmt.Errorf("%w: COMMIT outside a transaction", ErrMalformed)
		}
		return s.commit(m)
	case kindRelation:
		return s.relation(ctx, m.Rel)
	case kindInsert, kindUpdate, kindDelete:
		return s.change(m)
	case kindTruncate:
		if !s.tx.open {
			return fmt.Errorf("%w: TRUNCATE outside a transaction", ErrMalformed)
		}
		for _, id := range m.RelIDs {
			if b := s.rels[id]; b != nil && b.kind != relIgnored {
				s.tx.addResync(b.table, "", "truncate")
			}
		}
	case kindOrigin, kindType, kindMessage:
	}
	return nil
}

// relation binds a Relation message and detects schema changes: columns
// that differ from those this process streamed before, or, for a relation
// it has not seen yet, from those recorded in ripple.streamed_relations (a
// change made while no ingest ran).
func (s *session) relation(ctx context.Context, rel *relation) error {
	b, err := bindRelation(ctx, s.query, s.types, rel)
	if err != nil {
		return err
	}
	prev := s.i.relCache[rel.ID]
	s.i.relCache[rel.ID] = rel
	s.rels[rel.ID] = b
	name := rel.Namespace + "." + rel.Name
	switch {
	case b.kind == relIgnored:
		if !s.i.ignored[name] {
			s.i.ignored[name] = true
			s.i.log.Info("ignoring relation that is not a sync table", "relation", name)
		}
		return nil
	case b.failed != "":
		s.i.log.Error("sync table cannot be streamed; its changes become resync markers", "relation", name, "reason", b.failed)
	}
	changed := prev != nil && !sameColumns(prev, rel)
	record := changed
	if prev == nil {
		stored, found, err := s.streamedColumns(ctx, rel)
		if err != nil {
			return err
		}
		changed = found && stored != columnsText(rel)
		record = !found || changed
	}
	if changed {
		s.i.log.Info("schema change of a sync table", "table", b.table)
		if err := s.types.Refresh(ctx, s.query); err != nil {
			return fmt.Errorf("ingest: reload types: %w", err)
		}
	}
	if s.tx.open {
		// The marker and the record go out with the transaction's commit.
		if changed {
			s.tx.addResync(b.table, "", "schema_change")
		}
		if record {
			s.tx.described = append(s.tx.described, rel)
		}
		return nil
	}
	if changed {
		if err := s.publishResync(schema.Resync{Table: b.table, Reason: "schema_change", LSN: schema.LSN(s.i.d)}); err != nil {
			return err
		}
	}
	if record {
		return s.recordStreamed(rel)
	}
	return nil
}

// columnsText is the description of a relation's columns that
// ripple.streamed_relations keeps: name and type OID of each, in order
// (what sameColumns compares).
func columnsText(rel *relation) string {
	var b strings.Builder
	for i, c := range rel.Columns {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(c.Name))
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(uint64(c.TypeOID), 10))
	}
	return b.String()
}

// streamedColumns reads the recorded description of rel's columns. A
// database migrated before ripple.streamed_relations existed has none: the
// comparison is then only with what this process streamed.
func (s *session) streamedColumns(ctx context.Context, rel *relation) (string, bool, error) {
	if s.i.noStreamed.Load() {
		return "", false, nil
	}
	var cols string
	err := s.query.QueryRow(ctx, "SELECT columns FROM ripple.streamed_relations WHERE schema_name = $1 AND relation = $2",
		rel.Namespace, rel.Name).Scan(&cols)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return "", false, nil
	case isUndefinedTable(err):
		s.i.noStreamedTable()
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("ingest: read ripple.streamed_relations: %w", err)
	}
	return cols, true, nil
}

// recordStreamed records the columns of rels as streamed, once every
// resync marker published so far has reached NATS (a marker lost with the
// connection must be published again by the next session, which compares
// with this record).
func (s *session) recordStreamed(rels ...*relation) error {
	if len(rels) == 0 || s.i.noStreamed.Load() {
		return nil
	}
	if err := s.nc.Flush(); err != nil {
		return fmt.Errorf("%w: flush: %w", errNATSDown, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, rel := range rels {
		_, err := s.query.Exec(ctx, `INSERT INTO ripple.streamed_relations (schema_name, relation, columns) VALUES ($1, $2, $3)
			ON CONFLICT (schema_name, relation) DO UPDATE SET columns = EXCLUDED.columns, updated_at = now()`,
			rel.Namespace, rel.Name, columnsText(rel))
		if isUndefinedTable(err) {
			s.i.noStreamedTable()
			return nil
		}
		if err != nil {
			return fmt.Errorf("ingest: record streamed columns of %s.%s: %w", rel.Namespace, rel.Name, err)
		}
	}
	return nil
}

func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

func (s *session) publishResync(r schema.Resync) error {
	r.K, r.Epoch = schema.KindResync, s.cfg.Epoch
	s.i.m.resyncs.Inc()
	return s.publishJSON(schema.SubjectControl, r)
}

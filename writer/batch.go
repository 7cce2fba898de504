package writer

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/schema"
)

// maxBatch bounds Config.MaxBatch: every mutation of a batch runs under its
// own savepoint, and a transaction with more than 64 live subtransactions
// overflows its backend's subtransaction cache, which slows every snapshot
// on the server.
const maxBatch = 64

// Statements of a batch (see doc.go, "Group commit").
const (
	sqlRecordBatch = `INSERT INTO ripple.mutations (client_id, mutation_id, org, status, code, message, result)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]::json[])
RETURNING client_id, mutation_id, ripple_xid::text, result::text`
)

// pending is a request waiting in a lane for its batch.
type pending struct {
	msg   *nats.Msg
	req   schema.MutationRequest
	start time.Time
	// held is when the request was first held back for its predecessor
	// (zero: never).
	held time.Time
}

// lanes spread clients over the batchers: a client always maps to the same
// lane, so one writer never runs one client's mutations in two transactions
// at once and runs them in the order they arrived. Several writers may
// still run one client's mutations at once; the lock on the client's row
// serialises them (see doc.go).
type lanes struct {
	seed maphash.Seed
	in   []chan *pending
}

func newLanes(n, depth int) *lanes {
	l := &lanes{seed: maphash.MakeSeed(), in: make([]chan *pending, n)}
	for i := range l.in {
		l.in[i] = make(chan *pending, depth)
	}
	return l
}

func (l *lanes) of(clientID string) chan *pending {
	return l.in[maphash.String(l.seed, clientID)%uint64(len(l.in))]
}

// runLane is a lane's batcher: it takes the requests that are waiting (at
// least one, at most Config.MaxBatch) and applies them in one transaction,
// then takes the ones that arrived meanwhile. Requests that came before
// their predecessor are held back (Config.OrderWait) and join the next
// batch. It returns when quit is closed and nothing waits.
func (w *Writer) runLane(ctx context.Context, in chan *pending, quit <-chan struct{}) {
	batch := make([]*pending, 0, w.cfg.MaxBatch)
	var held []*pending
	stopping := false
	for {
		batch = batch[:0]
		var timer *time.Timer
		var expired <-chan time.Time
		if len(held) > 0 {
			first := held[0].held
			for _, p := range held[1:] {
				if p.held.Before(first) {
					first = p.held
				}
			}
			timer = time.NewTimer(time.Until(first.Add(w.cfg.OrderWait)))
			expired = timer.C
		}
		if !stopping {
			select {
			case p := <-in:
				batch = append(batch, p)
			case <-expired:
			case <-quit:
				stopping = true
			}
		}
		if timer != nil {
			timer.Stop()
		}
		if stopping && len(held) == 0 {
			select {
			case p := <-in:
				batch = append(batch, p)
			default:
				return
			}
		}
		batch = append(batch, held...)
		held = held[:0]
	fill:
		for len(batch) < w.cfg.MaxBatch {
			select {
			case p := <-in:
				batch = append(batch, p)
			default:
				break fill
			}
		}
		held = w.runBatch(ctx, batch, !stopping)
	}
}

// hold reports whether a request answered with reply is held back for its
// predecessor instead (and marks it held).
func (w *Writer) hold(p *pending, reply schema.MutationReply, canHold bool) bool {
	if !canHold || w.cfg.OrderWait <= 0 || reply.Code != CodeOutOfOrder {
		return false
	}
	var r schema.OutOfOrderResult
	if json.Unmarshal(reply.Result, &r) != nil || p.req.MutationID <= r.Expected {
		return false // not ahead: its predecessor will not come
	}
	now := time.Now()
	if p.held.IsZero() {
		p.held = now
	}
	return now.Before(p.held.Add(w.cfg.OrderWait))
}

// item is one distinct mutation of a batch.
type item struct {
	p    *pending
	dups []*pending // the same (client_id, mutation_id) sent again meanwhile
	req  schema.MutationRequest
	m    Mutator
	tx   *Tx
	// early is the prepared built-in write, sent without a round trip of
	// its own; nil means the mutator runs interactively.
	early *prepared
	// force is a rejection to record without running the mutator.
	force *Rejection

	// From ripple.begin_mutations.
	expected int64
	stored   *storedRow

	// Outcome.
	done   bool // decided: applied (rej == nil) or rejected
	rej    *Rejection
	result []byte
	reply  schema.MutationReply
}

func (it *item) runs() bool { return it.stored == nil && it.req.MutationID == it.expected }

// errBatch marks a failure of a batch's transaction as a whole: nothing of
// it committed and its mutations run again one by one.
var errBatch = errors.New("writer: batch failed")

// runBatch applies a batch and answers every request in it, except the
// ones it returns: they came before their predecessor and wait for the next
// batch (canHold false answers them too).
func (w *Writer) runBatch(ctx context.Context, batch []*pending, canHold bool) (held []*pending) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.RequestTimeout)
	defer cancel()
	w.metrics.batch.Observe(float64(len(batch)))
	if len(batch) == 1 {
		reply := w.process(ctx, batch[0].req)
		if w.hold(batch[0], reply, canHold) {
			return []*pending{batch[0]}
		}
		w.respond(batch[0], reply)
		return nil
	}
	// One item per distinct mutation; a repeat waits for the first's reply.
	byKey := make(map[mutationKey]*item, len(batch))
	items := make([]*item, 0, len(batch))
	for _, p := range batch {
		k := mutationKey{p.req.ClientID, p.req.MutationID}
		if it := byKey[k]; it != nil {
			it.dups = append(it.dups, p)
			continue
		}
		it := &item{p: p, req: p.req}
		byKey[k] = it
		items = append(items, it)
	}
	// Client rows are locked in client_id order, and one client's
	// mutations run in id order.
	slices.SortFunc(items, func(a, b *item) int {
		return cmp.Or(cmp.Compare(a.req.ClientID, b.req.ClientID), cmp.Compare(a.req.MutationID, b.req.MutationID))
	})
	if err := w.execBatch(ctx, items); err != nil {
		// Nothing committed: run each mutation in its own transaction,
		// one client's in id order.
		w.metrics.fallbacks.Inc()
		w.log.Debug("batch failed; running its mutations one by one", "size", len(items), "err", err)
		for _, it := range items {
			it.reply = w.process(ctx, it.req)
		}
	}
	for _, it := range items {
		if w.hold(it.p, it.reply, canHold) {
			held = append(held, it.p)
			held = append(held, it.dups...)
			continue
		}
		w.respond(it.p, it.reply)
		for _, d := range it.dups {
			w.respond(d, it.reply)
		}
	}
	return held
}

type mutationKey struct {
	client string
	id     int64
}

// prepare sets up the items before the transaction: the mutator, forced
// rejections, and the built-in writes whose table metadata is cached.
func (w *Writer) prepareItems(ctx context.Context, items []*item) {
	for _, it := range items {
		req := it.req
		m, known := w.mutators[req.Mutator]
		it.m = m
		switch {
		case !known:
			it.force = Reject(CodeUnknownMutator, "unknown mutator %q", req.Mutator)
		case len(req.Claims.WriteOrgs) == 0:
			it.force = Reject(CodeForbidden, "the token grants no organisation to write")
		}
		it.tx = &Tx{cache: w.tables, claims: req.Claims, clientID: req.ClientID, mutationID: req.MutationID}
		if it.force != nil {
			continue
		}
		if prep := builtinPreparer(req.Mutator); prep != nil {
			if p, err := prep(ctx, it.tx, req.Args); err == nil {
				it.early = p
			}
			// Otherwise the mutator runs interactively and meets the
			// same problem there (possibly with fresher metadata).
			it.tx = &Tx{cache: w.tables, claims: req.Claims, clientID: req.ClientID, mutationID: req.MutationID}
		}
	}
}

// execBatch runs the batch's transaction. It returns errBatch (wrapped) when
// the transaction failed as a whole; then nothing of it committed. Otherwise
// every item holds its reply.
func (w *Writer) execBatch(ctx context.Context, items []*item) (err error) {
	w.prepareItems(ctx, items)
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%w: acquire connection: %w", errBatch, err)
	}
	defer conn.Release()
	defer func() {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			if _, err := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
				conn.Conn().Close(context.WithoutCancel(ctx))
			}
		}
	}()
	for _, it := range items {
		it.tx.q = conn
	}
	run := &batchRun{w: w, conn: conn, items: items}

	// First round trip: begin, the bookkeeping of every mutation, and the
	// prepared writes up to the first mutation that must run
	// interactively.
	clients := make([]string, len(items))
	ids := make([]int64, len(items))
	for i, it := range items {
		clients[i], ids[i] = it.req.ClientID, it.req.MutationID
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sqlBegin, clients, ids)
	// Fast path: when every mutation's write is prepared, they all run
	// under one savepoint instead of one each (a subtransaction per
	// mutation costs the server an xid and bookkeeping). At the first
	// mutation that must not keep its writes, everything rolls back to that
	// savepoint and the batch continues with one savepoint per mutation.
	fast := run.allPrepared()
	var queued []int
	if fast {
		b.Queue("SAVEPOINT " + spFast)
		for i, it := range items {
			if it.force == nil {
				it.early.queue(b)
				queued = append(queued, i)
			}
		}
	} else {
		queued = run.queueWrites(b, 0, false)
	}
	br := conn.SendBatch(ctx, b)
	err = func() error {
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		seen := 0
		for rows.Next() {
			var ord int32
			var expected int64
			var st storedRow
			var status *string
			if err := rows.Scan(&ord, &expected, &status, &st.code, &st.message, &st.result, &st.xid); err != nil {
				rows.Close()
				return err
			}
			if ord < 1 || int(ord) > len(items) {
				rows.Close()
				return fmt.Errorf("ripple.begin_mutations answered position %d of %d", ord, len(items))
			}
			it := items[ord-1]
			it.expected = expected
			if status != nil {
				st.status = *status
				it.stored = &st
			}
			seen++
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if seen != len(items) {
			return fmt.Errorf("ripple.begin_mutations answered %d rows for %d mutations", seen, len(items))
		}
		if fast {
			return run.readFast(br, queued)
		}
		return run.readWrites(br, queued)
	}()
	if err != nil {
		return fmt.Errorf("%w: %w", errBatch, err)
	}
	if err := run.finish(ctx); err != nil {
		return fmt.Errorf("%w: %w", errBatch, err)
	}
	return nil
}

// batchRun is the state of one batch's transaction.
type batchRun struct {
	w     *Writer
	conn  *pgxpool.Conn
	items []*item
	// undo names the savepoint to roll back to before anything else is
	// sent ("" when none): the mutation it belongs to was rejected or
	// must not apply, and the writes sent after it are discarded with it.
	undo string
}

func savepoint(i int) string { return "s" + strconv.Itoa(i) }

// spFast is the one savepoint of the fast path.
const spFast = "b"

// allPrepared reports whether every mutation of the batch has a prepared
// write or a forced rejection (nothing runs interactively).
func (r *batchRun) allPrepared() bool {
	for _, it := range r.items {
		if it.force == nil && it.early == nil {
			return false
		}
	}
	return true
}

// readFast reads the fast path's writes. At the first mutation that is not
// to run or whose write is refused or fails, it stops, forgets every outcome
// and schedules the rollback to spFast: the batch then goes on with one
// savepoint per mutation, which settles that mutation on its own. Errors
// are left for that path to meet again.
func (r *batchRun) readFast(br pgx.BatchResults, queued []int) error {
	if _, err := br.Exec(); err != nil {
		return err // SAVEPOINT itself failed
	}
	for _, i := range queued {
		it := r.items[i]
		ok := it.runs()
		if ok {
			res, merr := it.early.read(it.tx, it.early.t, br)
			ok = merr == nil && it.tx.poison == nil && it.setResult(res) == nil
		}
		if !ok {
			for _, it := range r.items {
				it.done, it.rej, it.result = false, nil, nil
				it.tx = &Tx{q: r.conn, cache: r.w.tables, claims: it.req.Claims, clientID: it.req.ClientID, mutationID: it.req.MutationID}
			}
			r.undo = spFast
			return nil
		}
	}
	return nil
}

// queueWrites queues, from item from on, the prepared writes of the items
// that run (each under its own savepoint), up to the first item that must
// run interactively. Before the bookkeeping is known (known == false) every
// item with a prepared write is queued.
func (r *batchRun) queueWrites(b *pgx.Batch, from int, known bool) []int {
	var queued []int
	for i := from; i < len(r.items); i++ {
		it := r.items[i]
		if it.force != nil || (known && (!it.runs() || it.done)) {
			continue
		}
		if it.early == nil {
			break
		}
		b.Queue("SAVEPOINT " + savepoint(i))
		it.early.queue(b)
		queued = append(queued, i)
	}
	return queued
}

// readWrites reads the results of queued prepared writes, in order, and
// settles the items. At the first item that must not keep its writes (not
// to run, rejected), it stops: that item's savepoint is to be rolled back,
// which discards the writes of the items queued after it too, and they are
// queued again. An error that fails the transaction as a whole is returned.
func (r *batchRun) readWrites(br pgx.BatchResults, queued []int) error {
	for _, i := range queued {
		it := r.items[i]
		if _, err := br.Exec(); err != nil {
			return err // SAVEPOINT itself failed
		}
		if !it.runs() {
			// Recorded already or out of order: its write must not
			// stay.
			r.undo = savepoint(i)
			return nil
		}
		res, merr := it.early.read(it.tx, it.early.t, br)
		if merr == nil && it.tx.poison != nil {
			merr = it.tx.poison
		}
		if merr != nil {
			rej, retry := classify(merr)
			if retry || rej == nil {
				return merr
			}
			it.done, it.rej = true, rej
			r.undo = savepoint(i)
			return nil
		}
		if err := it.setResult(res); err != nil {
			r.undo = savepoint(i)
			return nil
		}
	}
	return nil
}

// setResult records a successful mutator's result; a result that is not
// JSON turns the mutation into an "internal" rejection (returned as error,
// its writes are then to be rolled back).
func (it *item) setResult(res any) error {
	if res != nil {
		b, err := json.Marshal(res)
		if err != nil {
			it.done, it.rej = true, Reject(CodeInternal, "the mutator's result is not JSON: %v", err)
			return it.rej
		}
		it.result = b
	}
	it.done = true
	return nil
}

// finish settles the remaining items (interactive mutators, further
// pipelines after a rollback), then records every decided mutation and
// commits: the last round trip (ripple.begin_mutations advanced the clients
// in the first).
func (r *batchRun) finish(ctx context.Context) error {
	for {
		i := r.firstUndecided()
		if i < 0 {
			break
		}
		if r.items[i].early == nil {
			if err := r.interactive(ctx, i); err != nil {
				return err
			}
			continue
		}
		if err := r.settleAborted(ctx); err != nil {
			return err
		}
		b := &pgx.Batch{}
		undo := r.undo
		if undo != "" {
			b.Queue("ROLLBACK TO SAVEPOINT " + undo)
			r.undo = ""
		}
		queued := r.queueWrites(b, i, true)
		br := r.conn.SendBatch(ctx, b)
		err := func() error {
			defer br.Close()
			if undo != "" {
				if _, err := br.Exec(); err != nil {
					return err
				}
			}
			return r.readWrites(br, queued)
		}()
		if err != nil {
			return err
		}
	}

	// Record, commit.
	n := len(r.items)
	var (
		clients  = make([]string, 0, n)
		ids      = make([]int64, 0, n)
		orgs     = make([]string, 0, n)
		statuses = make([]string, 0, n)
		codes    = make([]*string, 0, n)
		messages = make([]*string, 0, n)
		results  = make([]*string, 0, n)
	)
	for _, it := range r.items {
		if !it.runs() {
			continue
		}
		if !it.done {
			return fmt.Errorf("mutation %s/%d left undecided", it.req.ClientID, it.req.MutationID)
		}
		var touched []string
		if it.rej == nil {
			touched = it.tx.orgs
		}
		clients = append(clients, it.req.ClientID)
		ids = append(ids, it.req.MutationID)
		orgs = append(orgs, recordOrg(it.req.Claims, touched, it.rej != nil))
		if it.rej != nil {
			statuses = append(statuses, schema.MutationRejected)
			codes = append(codes, &it.rej.Code)
			messages = append(messages, &it.rej.Message)
			results = append(results, nil)
		} else {
			statuses = append(statuses, schema.MutationApplied)
			codes = append(codes, nil)
			messages = append(messages, nil)
			if it.result != nil {
				s := string(it.result)
				results = append(results, &s)
			} else {
				results = append(results, nil)
			}
		}
	}
	if err := r.settleAborted(ctx); err != nil {
		return err
	}
	b := &pgx.Batch{}
	if r.undo != "" {
		b.Queue("ROLLBACK TO SAVEPOINT " + r.undo)
	}
	if len(clients) > 0 {
		b.Queue(sqlRecordBatch, clients, ids, orgs, statuses, codes, messages, results)
	}
	b.Queue("COMMIT")
	type rec struct {
		xid    string
		result *string
	}
	recorded := make(map[mutationKey]rec, len(clients))
	br := r.conn.SendBatch(ctx, b)
	err := func() error {
		defer br.Close()
		if r.undo != "" {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		if len(clients) > 0 {
			rows, err := br.Query()
			if err != nil {
				return err
			}
			for rows.Next() {
				var k mutationKey
				var x rec
				if err := rows.Scan(&k.client, &k.id, &x.xid, &x.result); err != nil {
					rows.Close()
					return err
				}
				recorded[k] = x
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		tag, err := br.Exec()
		if err != nil {
			return err
		}
		if tag.String() != "COMMIT" {
			return fmt.Errorf("commit answered %q", tag.String())
		}
		return nil
	}()
	if err != nil {
		return err
	}

	// Committed: build the replies.
	for _, it := range r.items {
		base := schema.MutationReply{ClientID: it.req.ClientID, MutationID: it.req.MutationID}
		switch {
		case it.stored != nil:
			r.w.metrics.replays.Inc()
			it.reply = it.stored.reply(base)
		case !it.runs():
			it.reply = outOfOrderReply(base, it.expected-1)
		default:
			x, ok := recorded[mutationKey{it.req.ClientID, it.req.MutationID}]
			if !ok {
				// Cannot happen: the insert returns every row. Say
				// so rather than answer without a commit id.
				r.w.log.Error("recorded mutation missing from RETURNING", "client_id", it.req.ClientID, "mutation_id", it.req.MutationID)
				it.reply = rejectedReply(base, CodeUnavailable, "the writer could not complete the mutation; send it again")
				continue
			}
			xid, err := schema.ParseXID8(x.xid)
			if err != nil {
				it.reply = rejectedReply(base, CodeUnavailable, "the writer could not complete the mutation; send it again")
				continue
			}
			reply := base
			reply.XID = xid
			if it.rej != nil {
				reply.Status, reply.Code, reply.Message = schema.MutationRejected, it.rej.Code, it.rej.Message
			} else {
				reply.Status = schema.MutationApplied
			}
			if x.result != nil {
				reply.Result = json.RawMessage(*x.result)
			}
			it.reply = reply
		}
	}
	return nil
}

// settleAborted rolls back to the pending savepoint at once, in a round trip
// of its own, when a statement failed and left the transaction aborted: pgx
// prepares the statements of a pipeline before running any, and Postgres
// refuses to prepare in an aborted transaction. Otherwise the rollback rides
// along with the next pipeline.
func (r *batchRun) settleAborted(ctx context.Context) error {
	if r.undo == "" || r.conn.Conn().PgConn().TxStatus() != 'E' {
		return nil
	}
	if _, err := r.conn.Exec(ctx, "ROLLBACK TO SAVEPOINT "+r.undo); err != nil {
		return err
	}
	r.undo = ""
	return nil
}

// firstUndecided returns the first item that is to run and has no outcome
// yet, or -1. Forced rejections are decided on the way.
func (r *batchRun) firstUndecided() int {
	for i, it := range r.items {
		if !it.runs() || it.done {
			continue
		}
		if it.force != nil {
			it.done, it.rej = true, it.force
			continue
		}
		return i
	}
	return -1
}

// interactive runs item i's mutator in the transaction under its own
// savepoint (custom mutators, built-ins whose metadata was not cached).
func (r *batchRun) interactive(ctx context.Context, i int) error {
	it := r.items[i]
	if err := r.settleAborted(ctx); err != nil {
		return err
	}
	b := &pgx.Batch{}
	if r.undo != "" {
		b.Queue("ROLLBACK TO SAVEPOINT " + r.undo)
		r.undo = ""
	}
	b.Queue("SAVEPOINT " + savepoint(i))
	if err := r.conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	res, merr := callMutator(ctx, it.m, it.tx, it.req)
	if merr == nil && it.tx.poison != nil {
		merr = it.tx.poison
	}
	if merr == nil && r.conn.Conn().PgConn().TxStatus() != 'T' {
		// The mutator swallowed an error of its own statement: the
		// transaction is aborted. Run the batch one by one, where the
		// failure is recorded against this mutation alone.
		return errors.New("transaction aborted under a mutator that returned no error")
	}
	if merr == nil {
		if it.setResult(res) == nil {
			return nil
		}
	} else {
		rej, retry := classify(merr)
		if retry || rej == nil {
			return merr
		}
		it.done, it.rej = true, rej
	}
	r.undo = savepoint(i)
	return nil
}

// outOfOrderReply is the answer to a mutation that is neither recorded nor
// next; last is the client's last mutation id before it. A mutation ahead
// of the next one is out of order: the client sends the missing mutations
// first and then this one again. A mutation at or below last was processed
// before and its record pruned (migrations.PruneMutations): it is expired,
// a final answer, and never applied again.
func outOfOrderReply(base schema.MutationReply, last int64) schema.MutationReply {
	res, _ := json.Marshal(schema.OutOfOrderResult{Expected: last + 1})
	r := rejectedReply(base, CodeOutOfOrder, fmt.Sprintf("mutation %d is out of order: expected mutation_id %d", base.MutationID, last+1))
	if base.MutationID <= last {
		r = rejectedReply(base, CodeExpired, fmt.Sprintf("mutation %d was processed before and its record has been pruned: its outcome is unknown (expected mutation_id %d)", base.MutationID, last+1))
	}
	r.Result = res
	return r
}

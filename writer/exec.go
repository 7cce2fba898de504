package writer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/schema"
)

// Statements of the exactly-once protocol (see doc.go). sqlBegin is the
// bookkeeping function of migrations/sql/0003_writer_begin_mutations_advance.sql:
// it makes sure the clients' rows exist, locks them in client_id order,
// answers, per mutation, the id expected at that point and the recorded
// outcome if there is one, and (p_advance) advances each client's
// last_mutation_id past the mutations to run (the writer records every one
// of them, or rolls the transaction back).
const (
	sqlBegin  = `SELECT o_ord, o_expected, o_status, o_code, o_message, o_result, o_xid FROM ripple.begin_mutations($1::text[], $2::bigint[], true)`
	sqlRecord = `INSERT INTO ripple.mutations (client_id, mutation_id, org, status, code, message, result)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::json) RETURNING ripple_xid::text, result::text`
)

// maxClientIDLen bounds client ids (they are primary key values).
const maxClientIDLen = 256

// outcome is what one attempt of a mutation's transaction produced.
type outcome struct {
	reply schema.MutationReply
	// retry: run the whole transaction again (serialization failure,
	// deadlock, stale metadata).
	retry bool
	// force: run again, recording this rejection without running the
	// mutator (the mutator's writes failed at commit).
	force *Rejection
	// err: a transient failure; nothing recorded.
	err error
	// late: run again without preparing a built-in write before the
	// transaction (its statements failed with the protocol's own).
	late bool
}

// process executes one mutation request exactly once and returns the reply.
func (w *Writer) process(ctx context.Context, req schema.MutationRequest) schema.MutationReply {
	base := schema.MutationReply{ClientID: req.ClientID, MutationID: req.MutationID}
	if req.ClientID == "" || len(req.ClientID) > maxClientIDLen {
		return rejectedReply(base, CodeInvalidArgument, fmt.Sprintf("client_id must be 1 to %d bytes", maxClientIDLen))
	}
	if req.MutationID < 1 {
		return rejectedReply(base, CodeInvalidArgument, "mutation_id must be a positive integer")
	}
	m, known := w.mutators[req.Mutator]
	var force *Rejection
	switch {
	case !known:
		force = Reject(CodeUnknownMutator, "unknown mutator %q", req.Mutator)
	case len(req.Claims.WriteOrgs) == 0:
		force = Reject(CodeForbidden, "the token grants no organisation to write")
	}
	var last outcome
	late := false
	for attempt := 1; attempt <= w.cfg.MaxAttempts; attempt++ {
		if ctx.Err() != nil {
			break
		}
		last = w.attempt(ctx, req, m, force, late)
		late = late || last.late
		switch {
		case last.force != nil:
			force = last.force
			continue
		case last.retry:
			w.metrics.retries.Inc()
			continue
		case last.err != nil:
			w.log.Warn("mutation failed", "client_id", req.ClientID, "mutation_id", req.MutationID, "err", last.err)
			return rejectedReply(base, CodeUnavailable, "the writer could not complete the mutation; send it again")
		}
		return last.reply
	}
	if last.err != nil || ctx.Err() != nil {
		w.log.Warn("mutation gave up", "client_id", req.ClientID, "mutation_id", req.MutationID, "err", errors.Join(last.err, ctx.Err()))
	}
	return rejectedReply(base, CodeUnavailable, "the writer could not complete the mutation; send it again")
}

func rejectedReply(base schema.MutationReply, code, msg string) schema.MutationReply {
	base.Status = schema.MutationRejected
	base.Code = code
	base.Message = msg
	return base
}

// attempt runs the transaction once. See doc.go for the protocol.
func (w *Writer) attempt(ctx context.Context, req schema.MutationRequest, m Mutator, force *Rejection, late bool) (out outcome) {
	base := schema.MutationReply{ClientID: req.ClientID, MutationID: req.MutationID}
	conn, err := w.pool.Acquire(ctx)
	if err != nil {
		return outcome{err: fmt.Errorf("acquire connection: %w", err)}
	}
	// pgxpool destroys a released connection that is still inside a
	// transaction; every path below ends the transaction anyway.
	defer conn.Release()
	defer func() {
		if conn.Conn().PgConn().TxStatus() != 'I' {
			if _, err := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); err != nil {
				conn.Conn().Close(context.WithoutCancel(ctx))
			}
		}
	}()

	// A built-in write whose table is cached is prepared before the
	// transaction, so its statements travel in the first round trip. If the
	// mutation turns out to be recorded already or out of order, they are
	// rolled back with everything else.
	tx := &Tx{cache: w.tables, claims: req.Claims, clientID: req.ClientID, mutationID: req.MutationID}
	var early *prepared
	if force == nil && !late {
		if prep := builtinPreparer(req.Mutator); prep != nil {
			if p, err := prep(ctx, tx, req.Args); err == nil {
				early = p
			}
			// Otherwise the mutator runs the usual way, in the
			// transaction, and meets the same problem there.
			tx = &Tx{cache: w.tables, claims: req.Claims, clientID: req.ClientID, mutationID: req.MutationID}
		}
	}
	tx.q = conn

	// One round trip: begin, make sure the client's row exists, lock it
	// (this serialises one client's mutations across all writers), look up
	// a recorded outcome for this id, set the savepoint the mutator runs
	// under, and (for a prepared built-in) write.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(sqlBegin, []string{req.ClientID}, []int64{req.MutationID})
	b.Queue("SAVEPOINT mutation")
	if early != nil {
		early.queue(b)
	}
	var (
		lastID int64
		stored storedRow
		found  bool
		result any
		merr   error
	)
	br := conn.SendBatch(ctx, b)
	err = func() error {
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return err
		}
		var ord int32
		var expected int64
		var status *string
		if err := br.QueryRow().Scan(&ord, &expected, &status, &stored.code, &stored.message, &stored.result, &stored.xid); err != nil {
			return err
		}
		lastID = expected - 1
		if status != nil {
			found, stored.status = true, *status
		}
		if _, err := br.Exec(); err != nil {
			return err
		}
		if early != nil && !found && req.MutationID == lastID+1 {
			result, merr = early.read(tx, early.t, br)
		}
		return nil
	}()
	if err != nil {
		if early != nil {
			// pgx prepares every statement of a batch before running
			// any: a prepared write built from stale metadata fails the
			// whole batch. Forget the metadata and run the write late.
			w.tables.drop(early.t.Name)
			return outcome{retry: true, late: true}
		}
		return failed(err)
	}

	if found {
		// Already recorded: answer exactly what was answered the first
		// time and change nothing.
		w.metrics.replays.Inc()
		return outcome{reply: stored.reply(base)}
	}
	if req.MutationID != lastID+1 {
		// Not recorded and not applied: the client sends the missing
		// mutations first and retries this one.
		return outcome{reply: outOfOrderReply(base, lastID)}
	}

	rej := force
	var resultJSON []byte
	var orgs []string
	if rej == nil {
		if early == nil {
			result, merr = callMutator(ctx, m, tx, req)
		}
		if merr == nil && tx.poison != nil {
			merr = tx.poison
		}
		if merr == nil && result != nil {
			if resultJSON, err = json.Marshal(result); err != nil {
				merr = Reject(CodeInternal, "the mutator's result is not JSON: %v", err)
			}
		}
		if merr != nil {
			r, retry := classify(merr)
			switch {
			case retry:
				return outcome{retry: true}
			case r == nil:
				return outcome{err: merr}
			}
			rej = r
		}
		orgs = tx.orgs
	}

	org := recordOrg(req.Claims, orgs, rej != nil)
	b = &pgx.Batch{}
	var status string
	var code, message, resultText *string
	if rej != nil {
		b.Queue("ROLLBACK TO SAVEPOINT mutation")
		status = schema.MutationRejected
		code, message = &rej.Code, &rej.Message
	} else {
		status = schema.MutationApplied
		if resultJSON != nil {
			s := string(resultJSON)
			resultText = &s
		}
	}
	b.Queue(sqlRecord, req.ClientID, req.MutationID, org, status, code, message, resultText)
	b.Queue("COMMIT")
	var xid string
	var recorded *string
	br = conn.SendBatch(ctx, b)
	err = func() error {
		defer br.Close()
		if rej != nil {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		if err := br.QueryRow().Scan(&xid, &recorded); err != nil {
			return err
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
		if rej == nil {
			// The mutator's writes failed when recorded or committed
			// (a deferred constraint, an error the mutator swallowed):
			// record the failure instead, in a fresh transaction.
			r, retry := classify(err)
			switch {
			case retry:
				return outcome{retry: true}
			case r != nil:
				return outcome{force: r}
			}
		}
		return failed(err)
	}
	x, err := schema.ParseXID8(xid)
	if err != nil {
		return outcome{err: err}
	}
	reply := base
	reply.Status = status
	reply.XID = x
	if rej != nil {
		reply.Code, reply.Message = rej.Code, rej.Message
	}
	if recorded != nil {
		reply.Result = json.RawMessage(*recorded)
	}
	return outcome{reply: reply}
}

// callMutator runs a mutator, turning a panic into an "internal" rejection so
// that one faulty mutator cannot take the writer down.
func callMutator(ctx context.Context, m Mutator, tx *Tx, req schema.MutationRequest) (result any, err error) {
	defer func() {
		if r := recover(); r != nil {
			result, err = nil, Reject(CodeInternal, "mutator %q panicked: %v", req.Mutator, r)
		}
	}()
	return m(ctx, tx, req.Claims, req.Args)
}

// failed turns an error of the protocol's own statements into an outcome.
func failed(err error) outcome {
	if _, retry := classify(err); retry {
		return outcome{retry: true}
	}
	return outcome{err: err}
}

// recordOrg picks the organisation a mutation's record belongs to (and so
// the subject its record is published on): the first organisation the
// mutation wrote, else the token's first write organisation, else its first
// read organisation. A rejection is recorded under an organisation of the
// token, never under one the token may not write.
func recordOrg(c schema.Claims, touched []string, rejected bool) string {
	for _, o := range touched {
		if !rejected || slices.Contains(c.WriteOrgs, o) {
			return o
		}
	}
	if len(c.WriteOrgs) > 0 {
		return c.WriteOrgs[0]
	}
	if len(c.Orgs) > 0 {
		return c.Orgs[0]
	}
	return ""
}

// storedRow is a row of ripple.mutations.
type storedRow struct {
	status  string
	code    *string
	message *string
	result  *string
	xid     *string
}

func (s storedRow) reply(base schema.MutationReply) schema.MutationReply {
	base.Status = s.status
	if s.code != nil {
		base.Code = *s.code
	}
	if s.message != nil {
		base.Message = *s.message
	}
	if s.result != nil {
		base.Result = json.RawMessage(*s.result)
	}
	if s.xid != nil {
		base.XID, _ = schema.ParseXID8(*s.xid)
	}
	return base
}

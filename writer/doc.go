// Package writer executes client mutations next to the PostgreSQL primary,
// exactly once and, for each client, in mutation id order.
//
// Gateways forward a client's mutation to the writers as a NATS request
// (schema.MutationRequest on schema.SubjectMutate, queue group
// schema.WriterQueue), so several writers share the load and any one may
// die; edge gateways need no connection to the primary. The writer answers
// with a schema.MutationReply.
//
//	w, err := writer.New(writer.Config{DatabaseURL: url, NATSURL: natsURL})
//	w.Register("transfer", transfer) // custom mutators, before Run
//	err = w.Run(ctx)                 // serves until ctx is done, then drains
//
// # Exactly once, in order
//
// A request (client_id, mutation_id) runs as one transaction:
//
//  1. BEGIN; INSERT INTO ripple.clients (client_id) ON CONFLICT DO NOTHING;
//     SELECT last_mutation_id ... FOR UPDATE. The row lock serialises one
//     client's mutations across every writer.
//  2. If ripple.mutations already holds (client_id, mutation_id), the stored
//     reply is sent again (same status, code, message, result and xid) and
//     nothing changes: a retry after a lost reply is harmless.
//  3. If mutation_id is not last_mutation_id+1, the reply is a rejection with
//     code "mutation_out_of_order" whose message and result
//     (schema.OutOfOrderResult) name the expected id. It is not recorded:
//     the client sends the missing mutations first and then this one again,
//     keeping its optimistic state.
//  4. Otherwise the mutator runs under a savepoint. On success the mutation
//     is recorded as applied with its result, last_mutation_id advances and
//     the transaction commits; the reply carries the recording transaction's
//     id (ripple_xid = pg_current_xact_id()), so the client can recognise
//     the commit in the stream that makes its write part of synced data.
//  5. On a rejection the transaction rolls back to the savepoint (nothing of
//     the mutation stays), records the rejection, advances last_mutation_id
//     and commits: a retry gets the same rejection.
//
// Steps 1 and 2 (and, for a built-in mutator whose table metadata is cached,
// the write itself, under the savepoint) travel to the database in one
// pipelined round trip; the record, the advance of last_mutation_id and the
// COMMIT in a second one. A write sent early for a mutation that turns out
// to be recorded already or out of order is rolled back with the rest.
//
// Serialization failures and deadlocks run the whole transaction again (up
// to Config.MaxAttempts). When the mutator's writes fail only at commit (a
// deferred constraint), the mutation is run again as a recorded rejection.
// Connection failures and timeouts record nothing and are answered with code
// "unavailable": the client sends the mutation again.
//
// The record's organisation (ripple.mutations.org, which decides the subject
// the record is replicated on) is the first organisation the mutation wrote;
// for a mutator that wrote no sync table through Tx.Insert/Update/Delete or
// Tx.Authorize it is the token's first write organisation. Rejections are
// always recorded under an organisation the token may write. A token with no
// write organisation gets a recorded "forbidden" rejection for every
// mutation.
//
// # Built-in mutators
//
//	insert {"table": "todos", "row": {"id": "1", "org": "acme", "title": "milk"}}
//	update {"table": "todos", "key": {"id": "1"}, "set": {"title": "oat milk"}}
//	delete {"table": "todos", "key": {"id": "1"}}
//
// The table must be a sync table (ripple.tables). The row's root key before
// the write (update, delete: the row is locked and read first) and after it
// (insert, update) must be an organisation in the token's write_orgs, and the
// table must be in its tables claim when that is set; otherwise the mutation
// is rejected "forbidden" and nothing is written. update is partial (only the
// columns in set change; the last commit wins). Values are JSON as the
// stream encodes them: each is passed as text and cast to the column's type
// by Postgres, so strings work for int8, numeric, timestamps, uuids; json
// columns take any JSON value; JSON arrays fill array columns. The result is
// the row as written (for delete: its primary key), encoded by the schema
// codec exactly as the stream encodes it.
//
// # Rejection codes
//
// unknown_mutator, unknown_table, forbidden, invalid_argument (malformed
// args, unknown or generated column, a value Postgres cannot convert),
// constraint_violation (the message names the constraint), not_found (update
// or delete of a missing row), internal (any other failure of a mutator), and
// custom codes returned by mutators as *Rejection. The constants are in
// package schema (schema.MutationCode*).
package writer

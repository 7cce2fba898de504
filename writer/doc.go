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
// A request (client_id, mutation_id) runs in a transaction:
//
//  1. BEGIN; SELECT ... FROM ripple.begin_mutations(client_ids, mutation_ids,
//     true) (migrations/sql/0003_writer_begin_mutations_advance.sql): in one
//     call it makes sure the client's row of ripple.clients exists and
//     locks it (FOR UPDATE), answers the id expected next and the recorded
//     outcome of the mutation, if any, and, when the mutation is to run
//     (steps 4 and 5), advances the client's last_mutation_id to it. The row lock serialises
//     one client's mutations across every writer. The advance is part of
//     the transaction: it commits with the mutation's record or not at all.
//  2. If ripple.mutations already holds (client_id, mutation_id), the stored
//     reply is sent again (same status, code, message, result and xid) and
//     nothing changes: a retry after a lost reply is harmless.
//  3. If mutation_id is ahead of the expected id, the reply is a rejection
//     with code "mutation_out_of_order" whose message and result
//     (schema.OutOfOrderResult) name the expected id. It is not recorded:
//     the client sends the missing mutations first and then this one again,
//     keeping its optimistic state. If it is below the expected id (processed
//     before, its record pruned), the reply is the final rejection
//     "mutation_expired", not recorded either.
//  4. Otherwise the mutator runs under a savepoint. On success the mutation
//     is recorded as applied with its result and the transaction commits; the reply carries the recording transaction's
//     id (ripple_xid = pg_current_xact_id()), so the client can recognise
//     the commit in the stream that makes its write part of synced data.
//  5. On a rejection the transaction rolls back to the savepoint (nothing of
//     the mutation stays), records the rejection and commits: a retry gets
//     the same rejection. Any other failure rolls the whole transaction back,
//     the advance of step 1 with it.
//
// Step 1 (and, for a built-in mutator whose table metadata is cached, the
// write itself, under the savepoint) travels to the database in one
// pipelined round trip; the record and the COMMIT in a second one. A write sent early for a mutation that turns out
// to be recorded already or out of order is rolled back.
//
// # Group commit
//
// Mutations that arrive while the database is busy are applied together, up
// to Config.MaxBatch in one transaction, each under its own savepoint, with
// the protocol above for each: the cost of a commit and of the round trips
// is shared. Each database connection has a batcher (a lane); a client's
// mutations always go to the same lane (by a hash of its client id), so one
// writer never runs one client's mutations in two transactions at once, and
// runs them in arrival order. A batcher takes every request waiting for it
// (at least one, at most MaxBatch) as soon as its previous batch finished;
// there is no added delay, so a lone mutation runs alone.
//
// A batch is sorted by (client_id, mutation_id): ripple.begin_mutations
// locks the clients' rows in that order (two batches, of one writer or of
// several, that share clients cannot deadlock on them, and a client's row
// stays locked until the batch commits, so other writers' transactions for
// that client wait), and one client's mutations run in id order; the id
// expected for a client's second mutation in the batch counts its first.
// One round trip carries BEGIN, the bookkeeping of every mutation and the
// prepared built-in writes. When every write of the batch is prepared they
// run under one savepoint (subtransactions cost the server); if any
// mutation turns out recorded already, out of order, refused or failing,
// the batch rolls back to that savepoint and goes on with one SAVEPOINT per
// mutation, which settles each on its own. Under per-mutation savepoints, a
// mutation that
// is recorded already, out of order or rejected is rolled back to its
// savepoint (its rejection recorded) and the writes queued after it are sent
// again. Custom mutators (and built-ins whose metadata is not cached) run
// interactively under their savepoints. A last round trip records every
// mutation (one INSERT of all records; the clients advanced in the first)
// and commits; only then are the replies sent. Every mutation of a batch is
// recorded with the batch's xid, and the client recognises its confirmation
// by its own record in that commit, as for a transaction of one.
//
// A mutation whose id is ahead of the expected one is first held back in its
// lane for up to Config.OrderWait and joins the next batches: a gateway
// forwards one client's mutations concurrently, so a mutation may overtake
// its predecessor on the way, and the predecessor usually arrives within
// milliseconds. Only if it does not is the mutation answered
// "mutation_out_of_order" (nothing is recorded for it either way).
//
// When the batch's transaction fails as a whole (a serialization failure or
// deadlock, a mutator that left the transaction aborted, a deferred
// constraint or any failure at COMMIT, a lost connection), nothing of it
// committed and each of its mutations runs again in its own transaction as
// described above, in (client_id, mutation_id) order. A repeated request for
// a mutation already waiting in the same batch gets the first one's reply.
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
// Table metadata (columns, cast types, array and generated columns) comes
// from schema.LoadRegistry and is cached: every sync table when Run starts;
// a table not cached (enabled after the writer started), or a column it does
// not know, is loaded again inside the mutation's transaction; a statement
// built from cached metadata that fails with an undefined column or table
// drops the table from the cache and runs the transaction again.
//
// # Rejection codes
//
// unknown_mutator, unknown_table, forbidden, invalid_argument (malformed
// args, unknown or generated column, a value Postgres cannot convert),
// constraint_violation (the message names the constraint), not_found (update
// or delete of a missing row), internal (any other failure of a mutator),
// mutation_expired (a retry of a mutation at or below the client's last id
// whose record has been pruned: final, nothing changes, outcome unknown), and
// custom codes returned by mutators as *Rejection. The constants are in
// package schema (schema.MutationCode*).
//
// # Pruning
//
// Records are kept for migrations.DefaultMutationRetention (30 days) and
// then deleted by migrations.PruneMutations (ripple prune, and the ingest's
// hourly prune). The client's row of ripple.clients is kept: its last
// mutation id still tells a pruned retry from a new mutation.
package writer

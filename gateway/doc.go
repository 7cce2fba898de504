// Package gateway serves Ripple's WebSocket protocol (docs/protocol.md): it
// authenticates clients with JWTs (package auth), subscribes to the NATS
// subjects its clients need, runs catch-up queries (package catchup) and
// merges snapshot and live stream exactly as the consistency contract says.
//
// Structure:
//
//   - One hub goroutine owns all streaming state. Every NATS subscription
//     of the gateway's connection (one per data subject, shared by all
//     clients and dropped with the last one, plus the control subject and
//     a reply inbox) delivers into one channel, handled in order (rule 8).
//   - A topic becomes live when the barrier it asked the ingest for arrives
//     on the subject itself (rule 2); until then its subscriptions wait.
//   - A subscription's catch-up runs in its own goroutine and streams its
//     snapshot straight to the connection's queue; meanwhile the hub
//     buffers live parts of the topic for it. Once the snapshot is done and
//     the decoded-through position passed its upper bound U, the hub sends
//     the buffered commits above what the client holds, then ready
//     (rules 3 and 4).
//   - Transactions are assembled per (xid, organisation): each chunk is
//     encoded once and the same bytes go to every live subscription
//     without a column list; a per-connection commit frame closes the
//     transaction when every subscribed subject it names delivered its last
//     chunk (rule 7). Mutation records are never forwarded: their ids go
//     into the commit frame of the connection that wrote them.
//   - Gaps (NATS disconnects, reconnects, slow-consumer drops, missing
//     heartbeats, chunks out of sequence) resynchronise the affected
//     subscriptions by cursor (rule 9).
//   - Each connection has a reader goroutine (started by ServeHTTP, which
//     returns after the upgrade so that the HTTP server lets go of the
//     request and its buffers), a bounded outbound queue and a writer
//     goroutine that runs only while the queue holds frames; a client whose
//     live stream overflows the queue is cut with error slow_client and
//     never slows anyone else. The hub starts the writers of the queues it
//     filled once it is through with the NATS messages waiting (at most
//     1 ms later), so that a transaction's frames, and under load several
//     transactions, leave in one write; checkpoints start no writer of
//     their own and leave with the connection's next write (or within
//     about a second).
package gateway

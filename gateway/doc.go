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
//     (rules 3 and 4). A commit can reach the gateway before it is visible
//     to new snapshots on the primary (the backend flushes its commit
//     record, the ingest publishes it, and only then does the backend leave
//     the proc array; a commit waiting for a synchronous standby stays
//     invisible for as long as it waits). Such a commit, completed on the
//     topic before the subscription began buffering, is in neither the
//     snapshot nor the buffer: each topic remembers the transactions it
//     completed in the last ten seconds, and a snapshot that does not see
//     one completed before its catch-up began is taken again.
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
//     request and its buffers) and a bounded outbound queue; a client whose
//     live stream overflows the queue is cut with error slow_client and
//     never slows anyone else.
//   - The live stream is written by a small pool of flushers (one per
//     GOMAXPROCS), not by a goroutine per connection: the hub hands them
//     the connections whose queues it filled once it is through with the
//     NATS messages waiting (at most 1 ms later), so that a transaction's
//     frames leave in one write; a flusher pops everything a connection's
//     queue holds and writes it with one non-blocking writev. Under load the
//     flushers fall behind the hub and each write carries several
//     transactions, so the cost per delivery falls as the load rises. A
//     socket that cannot take a whole write (a slow reader) is handed to a
//     writer goroutine of the connection's own that blocks up to
//     WriteTimeout; replies, snapshots and the final frames are written by
//     such a goroutine too, which runs only while the queue holds frames.
//     At most one writer (a flusher or the connection's goroutine) owns a
//     connection at a time. Checkpoints start no writer of their own and
//     leave with the connection's next write (or within about a second).
package gateway

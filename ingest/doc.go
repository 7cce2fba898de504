// Package ingest streams committed changes of Ripple's sync tables from the
// PostgreSQL primary to core NATS.
//
// One Ingest process is active at a time: it holds a session advisory lock
// (Config.LockID) on a plain connection for as long as it leads; others wait
// as hot standbys, retrying every StandbyPollInterval, and take over within
// about that time when the leader's lock connection goes away. A leader whose
// lock connection fails stops replicating at once.
//
// The leader reads the publication (default "ripple") through a persistent
// pgoutput slot (protocol version 1, created when missing) and resumes from
// the slot's confirmed position after any restart. Replication and query
// connections use schema.ApplySessionSettings, so values have the same text
// form as catch-up reads and encode to the same bytes (rule 10).
//
// Publishing (one goroutine owns the order of everything published):
//
//   - Each transaction is split by (root key value, table). The operations of
//     one part go to schema.DataSubject(org, table) as a schema.Part; a part
//     larger than MaxMessageBytes is sent as numbered chunks as it is decoded
//     (and the largest parts are sent early when a transaction holds more
//     than MaxBufferedBytes), so memory stays bounded for any transaction
//     size. At COMMIT every part's last chunk goes out with the commit's end
//     LSN (rule 0), commit time and the sorted subjects of its own
//     organisation that the transaction touched (rule 7).
//   - Inserts and updates carry whole rows (unchanged TOAST values are filled
//     from the REPLICA IDENTITY FULL old row), deletes the primary key. A row
//     moved to another organisation becomes a delete on the old
//     organisation's subject and an insert on the new one; a primary key
//     change becomes a delete of the old key and the new row. Rows of
//     ripple.mutations go to DataSubject(org, schema.MutationsTable); other
//     relations never leak.
//   - TRUNCATE and column changes of a sync table publish a schema.Resync on
//     schema.SubjectControl in order with the data. A column change is
//     noticed by comparing a Relation message with the previous one of the
//     relation, or, the first time this process streams the relation, with
//     the columns recorded in ripple.streamed_relations (written once any
//     marker went out to NATS), so a change made while no ingest ran, or
//     before a standby took over, is not missed.
//   - Every HeartbeatInterval the ingest asks the server for its
//     decoded-through position (a status update with reply requested); the
//     keepalive answer, taken only while no transaction is open, advances D,
//     the decoded-through LSN (rule 1), which goes out in a schema.Heartbeat
//     after every commit at or below it, with the newest checkpoint
//     {lsn, xmin} (rule 5) that D has passed. Inside a long transaction the
//     heartbeat goes out with the unchanged D.
//   - Barrier requests on schema.SubjectBarrier publish a schema.Barrier
//     carrying D on the requested subject, then reply (rule 2); a barrier on
//     a subject that the open transaction already sent a chunk on waits for
//     that commit. Position requests on schema.SubjectPosition get D.
//   - Postgres is told a position (flush = D) only after NATS accepted
//     everything before it (publish + flush), so a crash or a lost NATS
//     connection only ever repeats commits, never skips one (rule 9). Any
//     publish error or NATS disconnect restarts replication from the slot.
//
// Reading: a reader goroutine decodes the replication stream and hands the
// messages to the publishing goroutine in batches, waking it once per
// commit (or keepalive, or 256 messages), not per row. While the server
// streams fast (the walsender writes every message on its own), the reader
// waits about a millisecond before each read so that one read takes many
// messages; a commit arriving on a quiet stream is read at once.
//
// Every message carries the Ingest's Epoch. Tombstones older than
// TombstoneRetention are pruned every PruneInterval. Run reconnects to
// Postgres and NATS with backoff (100ms doubling to 5s) and logs each step;
// State, Healthy and Ready expose what it is doing for a health endpoint.
package ingest

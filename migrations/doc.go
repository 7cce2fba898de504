// Package migrations holds the SQL that makes PostgreSQL tables syncable by
// Ripple, embedded in the binary, and the Go API that applies it.
//
// Migrate installs Ripple's own objects in schema "ripple" (versioned in
// ripple.schema_migrations, under a transaction-level advisory lock so
// concurrent runs are safe):
//
//   - ripple.tables: the registry of sync tables (name, schema_name,
//     relation, root_key, primary_key, enabled_at).
//   - ripple.tombstones: one row per deleted row, or per row moved to
//     another root key or primary key, with the deleting transaction's id.
//   - ripple.horizon: the pruned horizon; a resume cursor below it cannot be
//     served and the client must resynchronise in full (BRIEF rule 6).
//   - ripple.clients and ripple.mutations: the writer's exactly-once
//     mutation log; mutations is replicated (REPLICA IDENTITY FULL, member
//     of the publication).
//   - the publication "ripple" (insert, update, delete, truncate).
//
// Enable makes one table syncable: it adds the column ripple_xid (the id of
// the transaction that last wrote the row, set by trigger), an index on
// (root key, ripple_xid), tombstone triggers, REPLICA IDENTITY FULL and
// publication membership, and registers the table. The application's
// ordinary INSERT, UPDATE and DELETE statements keep working unchanged.
// Disable undoes it. Prune deletes old tombstones and raises the horizon;
// Horizon and CheckCursor read it. DemoSchema builds the small demo used by
// "ripple dev".
//
// Every function that changes something runs in one transaction: on error
// nothing is changed.
package migrations

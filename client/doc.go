// Package client is the Go client of Ripple's WebSocket protocol
// (docs/protocol.md): it keeps an in-memory, transactionally consistent view
// of every subscribed (table, organisation), applies the client's own
// mutations optimistically, and reconnects and resumes by cursor on its own.
//
// # Views
//
// Dial connects and authenticates; Client.Subscribe starts a subscription.
// Everything the gateway sends between snapshot_begin and ready is staged and
// becomes visible at ready, all at once (a full snapshot replaces the view, a
// resume applies on top), so the first visible state is the database at one
// commit. Live transactions arrive as part frames, buffered by transaction
// id, and are applied at their commit frame to every subscription of their
// (table, organisation) at once, under one lock: Rows, Get and Len always
// show the data at some commit, never a partial transaction. Commits at or
// below the LSN a view already holds are dropped. OnChange callbacks receive
// every change of a view, in commit order, on one goroutine.
//
// Rows are identified by their primary key (the snapshot_begin frame names
// the key columns); Row values are what encoding/json decodes with UseNumber,
// with int8, numeric and xid8 values as strings, as the gateway sends them.
//
// # Reconnects
//
// When the connection drops, the client reconnects with exponential backoff
// (Config.ReconnectMin..ReconnectMax) and resubscribes every subscription
// with its cursor (from the last ready or checkpoint) and LSN, so the gateway
// sends only what changed. Views keep showing their data until the new
// ready. A resync frame works the same way on a live connection. When the
// token expires, Config.TokenFunc supplies a fresh one (it is also called
// shortly before expiry and sent on the live connection).
//
// # Mutations
//
// Client.Mutate sends a mutation to a writer through the gateway. Mutation
// ids are strictly increasing per Config.ClientID and allocated by the
// PendingStore, which keeps the mutation until it is settled. A mutator may
// have an optimistic counterpart (Client.RegisterMutator; the built-ins
// insert, update and delete have one): what a view shows is synced data with
// every pending mutation's optimistic function applied on top, in id order,
// re-run whenever synced data changes. Pending mutations are (re)sent in order
// on every connection until the gateway answers. A mutation leaves the
// pending store exactly when the commit whose confirmed list names it is
// applied, so the synced data includes the change at that same moment and the
// view never flickers; a rejected mutation is removed at once, its effect
// rolled back, and Pending.Wait returns a *MutationError with the writer's
// code and message.
//
// Watch is the library side of `ripple watch`: it prints a subscription's
// rows and changes as JSON lines.
package client

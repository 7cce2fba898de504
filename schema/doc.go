// Package schema is Ripple's shared contract: the pieces every other part
// (ingest, catchup, gateway, writer, client) must agree on byte for byte.
//
//   - LSN and XID8: Postgres positions and transaction ids, which travel as
//     strings on every wire (JavaScript numbers cannot hold them).
//   - Subjects: how an (organisation, table) pair becomes a NATS subject, with
//     any organisation id escaped into a safe token.
//   - Wire messages: what the ingest publishes on NATS (transaction parts,
//     barriers, heartbeats, checkpoints, resync markers) and the request/reply
//     bodies of barriers, positions and mutations.
//   - Protocol: the frames a gateway and its WebSocket clients exchange
//     (docs/protocol.md is the prose version).
//   - Registry and value codec: which tables sync, their root key and primary
//     key, and the one encoder that turns a Postgres text-format value into
//     JSON. Rows decoded from replication and rows read by a catch-up query go
//     through the same encoder, so they encode to identical bytes.
//   - Registry loader: LoadRegistry (validated) and LoadTableDefs (raw) are
//     the one reader of ripple.tables, for catch-up, ingest and writer alike.
//     With each table they return its columns in attribute order and what
//     statements built from them need (Attribute: type name, cast type,
//     array, generated); a RegistryFilter reads one table by registry name or
//     by relation. How often to load and what to do on a miss is up to each
//     caller.
package schema

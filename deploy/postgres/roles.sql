-- Roles for a Ripple deployment (run once on the primary, as a superuser).
-- ripple_ingest: logical replication + reads the registry and checkpoints.
CREATE ROLE ripple_ingest LOGIN REPLICATION PASSWORD :'ingest_password';
-- ripple_writer: executes mutations; needs write access to the synced tables.
CREATE ROLE ripple_writer LOGIN PASSWORD :'writer_password';
-- ripple_gateway: read-only catch-up queries on a replica.
CREATE ROLE ripple_gateway LOGIN PASSWORD :'gateway_password';
-- physical streaming replication for regional replicas
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'replicator_password';

GRANT USAGE ON SCHEMA ripple TO ripple_ingest, ripple_writer, ripple_gateway;
GRANT SELECT ON ALL TABLES IN SCHEMA ripple TO ripple_ingest, ripple_gateway;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ripple TO ripple_writer;
GRANT DELETE ON ripple.tombstones, ripple.mutations TO ripple_ingest;   -- pruning
GRANT INSERT, UPDATE ON ripple.streamed_relations TO ripple_ingest;   -- schema-change detection
GRANT SELECT, UPDATE, INSERT ON ripple.horizon TO ripple_ingest;
-- Grant ripple_writer and ripple_gateway access to your own sync tables, e.g.:
-- GRANT SELECT ON public.todo_items TO ripple_gateway;
-- GRANT SELECT, INSERT, UPDATE, DELETE ON public.todo_items TO ripple_writer;

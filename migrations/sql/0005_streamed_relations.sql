-- Ripple's own objects, version 5: the columns the ingest last streamed for
-- each replicated relation. Applied by migrations.Migrate inside one
-- transaction that holds Ripple's advisory lock; never edit an applied
-- file, add a new one.
--
-- pgoutput describes a relation (a Relation message) before its first
-- change of each replication session and after its columns change. The
-- ingest compares that description with the one it streamed before and
-- publishes a schema_change resync marker when they differ. Kept only in
-- the ingest's memory, the comparison missed a change made while no ingest
-- ran, or before a standby took over: the new ingest saw the new columns
-- first and had nothing to compare them with, so clients kept rows of the
-- old shape. The last description is therefore kept here; the ingest writes
-- it after it published any marker the change called for.
CREATE TABLE ripple.streamed_relations (
    schema_name text NOT NULL,
    relation    text NOT NULL,
    columns     text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, relation)
);

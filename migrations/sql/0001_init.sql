-- Ripple's own objects, version 1.
-- Applied by migrations.Migrate inside one transaction that holds
-- Ripple's advisory lock; never edit an applied file, add a new one.

CREATE SCHEMA IF NOT EXISTS ripple;

-- The registry: which tables sync, by which root key and primary key.
CREATE TABLE ripple.tables (
    name        text PRIMARY KEY,
    schema_name text NOT NULL,
    relation    text NOT NULL,
    root_key    text NOT NULL,
    primary_key text[] NOT NULL,
    enabled_at  timestamptz DEFAULT now(),
    UNIQUE (schema_name, relation)
);

-- One row per deleted row (or per row moved away from its root key / primary
-- key) of a sync table. pk holds the text form of each primary key column in
-- key order; xid is the deleting transaction's pg_current_xact_id().
CREATE TABLE ripple.tombstones (
    table_name text NOT NULL,
    root_key   text,
    pk         text[] NOT NULL,
    xid        xid8 NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tombstones_table_root_xid ON ripple.tombstones (table_name, root_key, xid);
CREATE INDEX tombstones_deleted_at ON ripple.tombstones (deleted_at);

-- The pruned horizon: one row. xid is one more than the largest xid of any
-- pruned tombstone; a resume cursor below it cannot be served.
CREATE TABLE ripple.horizon (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    xid       xid8 NOT NULL DEFAULT '0',
    pruned_at timestamptz
);
INSERT INTO ripple.horizon DEFAULT VALUES;

-- Writer bookkeeping: the last mutation applied per client, and every
-- recorded mutation (applied or rejected) with its result.
CREATE TABLE ripple.clients (
    client_id        text PRIMARY KEY,
    last_mutation_id bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz
);

CREATE TABLE ripple.mutations (
    client_id   text NOT NULL,
    mutation_id bigint NOT NULL,
    org         text NOT NULL,
    status      text NOT NULL CHECK (status IN ('applied', 'rejected')),
    code        text,
    message     text,
    result      jsonb,
    ripple_xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz DEFAULT now(),
    PRIMARY KEY (client_id, mutation_id)
);
ALTER TABLE ripple.mutations REPLICA IDENTITY FULL;
CREATE INDEX mutations_created_at ON ripple.mutations (created_at);

-- Stamps every inserted or updated row of a sync table with the id of the
-- writing transaction (BRIEF rule 5). Shared by all sync tables.
CREATE FUNCTION ripple.stamp_xid() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.ripple_xid := pg_catalog.pg_current_xact_id();
    RETURN NEW;
END
$$;

-- Ripple's own objects, version 4: a cheaper record of each mutation.
-- Applied by migrations.Migrate inside one transaction that holds
-- Ripple's advisory lock; never edit an applied file, add a new one.

-- ripple.mutations.result becomes json. The writer stores a mutation's
-- result as the JSON text it encoded, and Postgres only checks it: jsonb
-- parsed every result into its binary form and printed it again for the
-- reply, about a third of the database's cost of recording a mutation. A
-- retry's reply reads the same text back, so it still equals the first
-- reply. Writers of earlier versions keep working: their jsonb values are
-- stored through the jsonb-to-json assignment cast.
--
-- The index on created_at (for deleting old records by age) becomes a BRIN
-- index: records are appended in created_at order, which a BRIN index
-- serves for range deletes at next to no cost per insert, where every
-- record of a transaction (they share its now()) went into one leaf of the
-- b-tree.
--
-- Both rewrite data: the type change rewrites ripple.mutations and its
-- primary key index under an exclusive lock, so writers wait for the
-- migration, for a while on a large mutation log.
DROP INDEX IF EXISTS ripple.mutations_created_at;
ALTER TABLE ripple.mutations ALTER COLUMN result TYPE json USING result::json;
CREATE INDEX mutations_created_at ON ripple.mutations USING brin (created_at);

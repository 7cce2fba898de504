package migrations

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/schema"
)

// Names of the triggers Enable creates on a sync table.
const (
	// TriggerStampXID is the BEFORE INSERT OR UPDATE trigger that sets
	// ripple_xid to the writing transaction's id.
	TriggerStampXID = "ripple_stamp_xid"
	// TriggerTombstoneDelete is the AFTER DELETE trigger that writes a tombstone.
	TriggerTombstoneDelete = "ripple_tombstone_delete"
	// TriggerTombstoneMove is the AFTER UPDATE trigger that writes a tombstone
	// for the old key when the root key or a primary key column changes.
	TriggerTombstoneMove = "ripple_tombstone_move"
)

const xid8OID = 5069

// maxIdentLen is PostgreSQL's NAMEDATALEN-1.
const maxIdentLen = 63

// EnableResult describes a table Enable made syncable. The embedded
// schema.Table is its registry entry (Columns excludes ripple_xid).
type EnableResult struct {
	schema.Table
	// AlreadyEnabled is true when the table was a sync table before the call.
	AlreadyEnabled bool
	// AddedColumn is true when Enable added the ripple_xid column (and
	// stamped existing rows with its own transaction id).
	AddedColumn bool
	// HorizonRaised is true when Enable raised the pruned horizon to its own
	// transaction id, because the table had a ripple_xid column but was not a
	// sync table (it was disabled with the column kept): deletes made in
	// between left no tombstones, so older cursors must resynchronise.
	HorizonRaised bool
}

// DisableOptions tunes DisableWithOptions.
type DisableOptions struct {
	// DropColumn also drops the ripple_xid column. Default: the column is
	// kept (without its default), which makes a later Enable cheap.
	DropColumn bool
}

// ParseTableName splits "todos" or "schema.todos" into a schema and a
// relation name. A bare name means schema public. Names are taken literally
// (no case folding, no quote removal); the schema part ends at the first dot.
func ParseTableName(table string) (schemaName, relation string, err error) {
	schemaName, relation, ok := strings.Cut(table, ".")
	if !ok {
		schemaName, relation = "public", table
	}
	switch {
	case schemaName == "" || relation == "" || strings.Contains(relation, "."):
		return "", "", fmt.Errorf("%w: %q", ErrBadTableName, table)
	case len(schemaName) > maxIdentLen || len(relation) > maxIdentLen:
		return "", "", fmt.Errorf("%w: %q: name longer than %d bytes", ErrBadTableName, table, maxIdentLen)
	case strings.IndexByte(table, 0) >= 0 || !utf8.ValidString(table):
		return "", "", fmt.Errorf("%w: %q: not valid UTF-8 text", ErrBadTableName, table)
	case schemaName == "ripple" || schemaName == "pg_catalog" || schemaName == "information_schema":
		return "", "", fmt.Errorf("%w: %q: tables in schema %s cannot be sync tables", ErrBadTableName, table, schemaName)
	}
	return schemaName, relation, nil
}

// limitName keeps a generated identifier within 63 bytes: a longer name is
// cut (on a character boundary) and given a hash of the full name, so distinct
// long names stay distinct.
func limitName(s string) string {
	if len(s) <= maxIdentLen {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	suffix := "_" + hex.EncodeToString(sum[:4])
	cut := maxIdentLen - len(suffix)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + suffix
}

// tombstoneFunc is the name (in schema ripple) of a table's generated
// tombstone trigger function. It depends on the registry name only, so
// Disable finds it even after the table was dropped.
func tombstoneFunc(name string) string { return limitName("tombstone_" + name) }

// indexName is the name of the (root key, ripple_xid) index, in the table's
// schema.
func indexName(relation string) string { return limitName(relation + "_ripple_xid") }

// relInfo is a table as the catalogs describe it.
type relInfo struct {
	oid     uint32
	relkind string
}

// lookupRelation finds a table; found is false when it does not exist.
func lookupRelation(ctx context.Context, q Querier, schemaName, relation string) (relInfo, bool, error) {
	var r relInfo
	err := q.QueryRow(ctx, `
SELECT c.oid, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2`, schemaName, relation).Scan(&r.oid, &r.relkind)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("migrations: look up %s.%s: %w", schemaName, relation, err)
	}
	return r, true, nil
}

// primaryKey returns the primary key columns in key order (nil: none).
func primaryKey(ctx context.Context, q execer, relOID uint32) ([]string, error) {
	rows, err := q.Query(ctx, `
SELECT a.attname
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = $1 AND i.indisprimary
ORDER BY k.ord`, relOID)
	if err != nil {
		return nil, fmt.Errorf("migrations: read primary key: %w", err)
	}
	pk, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("migrations: read primary key: %w", err)
	}
	return pk, nil
}

// registryRow is a row of ripple.tables.
type registryRow struct {
	schemaName, relation, rootKey string
	primaryKey                    []string
}

func lookupRegistry(ctx context.Context, q Querier, name string) (registryRow, bool, error) {
	var r registryRow
	err := q.QueryRow(ctx, "SELECT schema_name, relation, root_key, primary_key FROM ripple.tables WHERE name = $1", name).
		Scan(&r.schemaName, &r.relation, &r.rootKey, &r.primaryKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("migrations: read ripple.tables: %w", err)
	}
	return r, true, nil
}

// Enable makes a table syncable, rooted at the column rootKey (the
// organisation). table is "todos" (schema public) or "schema.todos".
//
// It checks that the table exists, has a primary key, has the root key
// column and that the value codec supports every column type; then it adds
// the column ripple_xid (xid8; existing rows get Enable's own transaction
// id), a BEFORE INSERT OR UPDATE trigger that stamps it with the writing
// transaction's pg_current_xact_id(), an index on (rootKey, ripple_xid), a
// generated trigger function with AFTER DELETE and AFTER UPDATE triggers that
// write a tombstone for the old root key and primary key when a row is
// deleted or moved (root key or a primary key column changed), sets REPLICA
// IDENTITY FULL, adds the table to the publication and records it in
// ripple.tables.
//
// Ordinary INSERT, UPDATE and DELETE statements of the application keep
// working unchanged: the triggers fill in everything Ripple needs.
//
// Everything happens in one transaction (which also applies Migrate): on any
// error nothing is changed. Enabling an enabled table again with the same
// root key is harmless and refreshes its triggers (for example after a
// primary key change); another root key is refused with ErrAlreadyEnabled.
func Enable(ctx context.Context, conn *pgx.Conn, table, rootKey string) (*EnableResult, error) {
	var res *EnableResult
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		var err error
		res, err = enableTx(ctx, tx, table, rootKey)
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func enableTx(ctx context.Context, tx execer, table, rootKey string) (*EnableResult, error) {
	schemaName, relation, err := ParseTableName(table)
	if err != nil {
		return nil, err
	}
	if rootKey == "" {
		return nil, fmt.Errorf("%w: empty root key for table %q", ErrNoRootKey, table)
	}
	if rootKey == schema.XIDColumn {
		return nil, fmt.Errorf("%w: %s cannot be the root key", ErrNoRootKey, schema.XIDColumn)
	}
	if err := migrateTx(ctx, tx); err != nil {
		return nil, err
	}
	name := schema.TableName(schemaName, relation)
	qtable := pgx.Identifier{schemaName, relation}.Sanitize()

	rel, found, err := lookupRelation(ctx, tx, schemaName, relation)
	if err != nil {
		return nil, err
	}
	if !found || rel.relkind != "r" {
		return nil, fmt.Errorf("%w: %s.%s", ErrTableNotFound, schemaName, relation)
	}
	// Take the lock ALTER TABLE would take anyway, before looking at the
	// table, so nothing changes between the checks and the changes.
	if _, err := tx.Exec(ctx, "LOCK TABLE "+qtable+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		return nil, fmt.Errorf("migrations: lock %s: %w", name, err)
	}

	pk, err := primaryKey(ctx, tx, rel.oid)
	if err != nil {
		return nil, err
	}
	if len(pk) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoPrimaryKey, name)
	}
	cols, err := loadColumns(ctx, tx, rel.oid)
	if err != nil {
		return nil, err
	}
	// Load the codec's types inside this transaction, so types created in
	// it (an enum of the demo schema, say) are known.
	types, err := schema.LoadTypes(ctx, tx)
	if err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	res := &EnableResult{Table: schema.Table{
		Name: name, Schema: schemaName, Relation: relation, RootKey: rootKey, PrimaryKey: pk,
	}}
	var (
		haveRoot   bool
		xidCol     *columnInfo
		unsupports []error
	)
	for i, c := range cols {
		if c.name == schema.XIDColumn {
			if c.typeOID != xid8OID {
				return nil, fmt.Errorf("%w: %s.%s has type %s, want xid8", ErrBadColumn, name, c.name, c.typeName)
			}
			xidCol = &cols[i]
			continue
		}
		if c.name == rootKey {
			haveRoot = true
		}
		if err := c.checkType(types); err != nil {
			unsupports = append(unsupports, err)
		}
		res.Columns = append(res.Columns, schema.Column{Name: c.name, TypeOID: c.typeOID})
	}
	if !haveRoot {
		return nil, fmt.Errorf("%w: table %s has no column %q", ErrNoRootKey, name, rootKey)
	}
	if len(unsupports) > 0 {
		return nil, fmt.Errorf("migrations: cannot enable %s: %w", name, errors.Join(unsupports...))
	}

	reg, registered, err := lookupRegistry(ctx, tx, name)
	if err != nil {
		return nil, err
	}
	if registered {
		if reg.schemaName != schemaName || reg.relation != relation {
			return nil, fmt.Errorf("%w: registry name %q belongs to %s.%s", ErrAlreadyEnabled, name, reg.schemaName, reg.relation)
		}
		if reg.rootKey != rootKey {
			return nil, fmt.Errorf("%w: %s is enabled with root key %q; disable it first to use %q",
				ErrAlreadyEnabled, name, reg.rootKey, rootKey)
		}
		res.AlreadyEnabled = true
	}

	var xid string
	if err := tx.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&xid); err != nil {
		return nil, fmt.Errorf("migrations: read transaction id: %w", err)
	}
	qcol := pgx.Identifier{schema.XIDColumn}.Sanitize()
	var stmts []string
	if xidCol == nil {
		// A constant default fills existing rows without rewriting the table
		// or firing any trigger; the volatile default comes afterwards and
		// only applies to new rows.
		stmts = append(stmts,
			"ALTER TABLE "+qtable+" ADD COLUMN "+qcol+" xid8 NOT NULL DEFAULT "+quoteLiteral(xid)+"::xid8",
		)
		res.AddedColumn = true
	} else {
		stmts = append(stmts,
			"UPDATE "+qtable+" SET "+qcol+" = pg_current_xact_id() WHERE "+qcol+" IS NULL",
			"ALTER TABLE "+qtable+" ALTER COLUMN "+qcol+" SET NOT NULL",
		)
		if !registered {
			stmts = append(stmts, "UPDATE ripple.horizon SET xid = greatest(xid, "+quoteLiteral(xid)+"::xid8)")
			res.HorizonRaised = true
		}
	}
	fn := pgx.Identifier{"ripple", tombstoneFunc(name)}.Sanitize()
	stmts = append(stmts,
		"ALTER TABLE "+qtable+" ALTER COLUMN "+qcol+" SET DEFAULT pg_current_xact_id()",
		"CREATE OR REPLACE FUNCTION "+fn+"() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS "+
			quoteLiteral(tombstoneBody(name, rootKey, pk, dateTimeColumns(cols))),
		"CREATE OR REPLACE TRIGGER "+pgx.Identifier{TriggerStampXID}.Sanitize()+
			" BEFORE INSERT OR UPDATE ON "+qtable+" FOR EACH ROW EXECUTE FUNCTION ripple.stamp_xid()",
		"CREATE OR REPLACE TRIGGER "+pgx.Identifier{TriggerTombstoneDelete}.Sanitize()+
			" AFTER DELETE ON "+qtable+" FOR EACH ROW EXECUTE FUNCTION "+fn+"()",
		"CREATE OR REPLACE TRIGGER "+pgx.Identifier{TriggerTombstoneMove}.Sanitize()+
			" AFTER UPDATE ON "+qtable+" FOR EACH ROW WHEN ("+movedCondition(rootKey, pk)+") EXECUTE FUNCTION "+fn+"()",
		"CREATE INDEX IF NOT EXISTS "+pgx.Identifier{indexName(relation)}.Sanitize()+" ON "+qtable+
			" ("+pgx.Identifier{rootKey}.Sanitize()+", "+qcol+")",
		"ALTER TABLE "+qtable+" REPLICA IDENTITY FULL",
	)
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return nil, fmt.Errorf("migrations: enable %s: %w", name, err)
		}
	}
	if err := addToPublication(ctx, tx, schemaName, relation); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `
INSERT INTO ripple.tables (name, schema_name, relation, root_key, primary_key) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET primary_key = EXCLUDED.primary_key`,
		name, schemaName, relation, rootKey, pk); err != nil {
		return nil, fmt.Errorf("migrations: register %s: %w", name, err)
	}
	return res, nil
}

// tombstoneBody is the body of a table's tombstone trigger function: static
// column references, no dynamic SQL. Every name is fully qualified because
// the function runs as SECURITY DEFINER (so application roles need no
// privileges on ripple.tombstones).
//
// The primary key is stored as text (keyText) that the catch-up casts back
// to the column's type and renders under Ripple's session settings, so a
// delete reaches clients with the key exactly as the stream renders it,
// whatever the settings of the session that deleted. The root key is
// stored as its text cast and compared with the organisation as clients
// name it.
func tombstoneBody(name, rootKey string, pk []string, dateTime map[string]bool) string {
	keys := make([]string, len(pk))
	for i, c := range pk {
		keys[i] = keyText(c, dateTime[c])
	}
	return "BEGIN\n" +
		"    INSERT INTO ripple.tombstones (table_name, root_key, pk, xid)\n" +
		"    VALUES (" + quoteLiteral(name) + ", OLD." + pgx.Identifier{rootKey}.Sanitize() + "::pg_catalog.text, " +
		"ARRAY[" + strings.Join(keys, ", ") + "]::pg_catalog.text[], pg_catalog.pg_current_xact_id());\n" +
		"    RETURN NULL;\n" +
		"END"
}

// keyText is the trigger's text form of OLD.col: its text cast, except for
// date/time columns, whose text output follows the session's DateStyle
// (German, DMY...) and would be read back as another value: those go through
// to_jsonb, which writes ISO 8601 whatever the settings. (A float key
// written by a session with extra_float_digits below 1 is stored rounded;
// Ripple's own sessions use 1.)
func keyText(col string, dateTime bool) string {
	q := "OLD." + pgx.Identifier{col}.Sanitize()
	if dateTime {
		return "(pg_catalog.to_jsonb(" + q + ") OPERATOR(pg_catalog.#>>) '{}'::pg_catalog.text[])"
	}
	return q + "::pg_catalog.text"
}

// dateTimeColumns returns the names of the columns of the date/time category.
func dateTimeColumns(cols []columnInfo) map[string]bool {
	m := map[string]bool{}
	for _, c := range cols {
		if c.dateTime {
			m[c.name] = true
		}
	}
	return m
}

// movedCondition is the WHEN clause of the AFTER UPDATE trigger: the root
// key or a primary key column changed.
func movedCondition(rootKey string, pk []string) string {
	cols := append([]string{rootKey}, pk...)
	seen := map[string]bool{}
	var conds []string
	for _, c := range cols {
		if seen[c] {
			continue
		}
		seen[c] = true
		q := pgx.Identifier{c}.Sanitize()
		conds = append(conds, "OLD."+q+" IS DISTINCT FROM NEW."+q)
	}
	return strings.Join(conds, " OR ")
}

// quoteLiteral quotes s as an SQL string literal (standard_conforming_strings
// is on in every supported PostgreSQL).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// Disable undoes Enable but keeps the ripple_xid column: see
// DisableWithOptions. Application statements keep working unchanged.
func Disable(ctx context.Context, conn *pgx.Conn, table string) error {
	return DisableWithOptions(ctx, conn, table, DisableOptions{})
}

// DisableWithOptions makes a sync table an ordinary table again, in one
// transaction: it drops the triggers, the generated trigger function and the
// (root key, ripple_xid) index, makes the ripple_xid column nullable without
// default (or drops it with DropColumn), sets REPLICA IDENTITY DEFAULT, removes the table
// from the publication, deletes its tombstones and its ripple.tables row.
// It also cleans up after a table that was dropped while enabled. A table
// with nothing to undo gives ErrNotEnabled and nothing changes, so calling
// it twice is harmless.
func DisableWithOptions(ctx context.Context, conn *pgx.Conn, table string, opts DisableOptions) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return disableTx(ctx, tx, table, opts)
	})
}

func disableTx(ctx context.Context, tx execer, table string, opts DisableOptions) error {
	schemaName, relation, err := ParseTableName(table)
	if err != nil {
		return err
	}
	name := schema.TableName(schemaName, relation)
	var migrated bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass('ripple.tables') IS NOT NULL").Scan(&migrated); err != nil {
		return fmt.Errorf("migrations: disable %s: %w", name, err)
	}
	if !migrated {
		return fmt.Errorf("%w: %s (Ripple is not installed in this database)", ErrNotEnabled, name)
	}
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", LockKey); err != nil {
		return fmt.Errorf("migrations: take advisory lock: %w", err)
	}
	reg, registered, err := lookupRegistry(ctx, tx, name)
	if err != nil {
		return err
	}
	if registered && (reg.schemaName != schemaName || reg.relation != relation) {
		return fmt.Errorf("%w: registry name %q belongs to %s.%s", ErrAlreadyEnabled, name, reg.schemaName, reg.relation)
	}
	rel, found, err := lookupRelation(ctx, tx, schemaName, relation)
	if err != nil {
		return err
	}
	found = found && rel.relkind == "r"
	qtable := pgx.Identifier{schemaName, relation}.Sanitize()
	qcol := pgx.Identifier{schema.XIDColumn}.Sanitize()
	fn := pgx.Identifier{"ripple", tombstoneFunc(name)}.Sanitize()

	var stmts []string
	something := registered
	if found {
		if _, err := tx.Exec(ctx, "LOCK TABLE "+qtable+" IN ACCESS EXCLUSIVE MODE"); err != nil {
			return fmt.Errorf("migrations: lock %s: %w", name, err)
		}
		var triggers int
		var hasCol bool
		if err := tx.QueryRow(ctx, `
SELECT (SELECT count(*) FROM pg_trigger WHERE tgrelid = $1 AND tgname = ANY($2)),
       EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = $1 AND attname = $3 AND NOT attisdropped)`,
			rel.oid, []string{TriggerStampXID, TriggerTombstoneDelete, TriggerTombstoneMove}, schema.XIDColumn,
		).Scan(&triggers, &hasCol); err != nil {
			return fmt.Errorf("migrations: disable %s: %w", name, err)
		}
		member, err := inPublication(ctx, tx, schemaName, relation)
		if err != nil {
			return err
		}
		something = something || triggers > 0 || member || (hasCol && opts.DropColumn)
		if something {
			for _, t := range []string{TriggerStampXID, TriggerTombstoneDelete, TriggerTombstoneMove} {
				stmts = append(stmts, "DROP TRIGGER IF EXISTS "+pgx.Identifier{t}.Sanitize()+" ON "+qtable)
			}
			stmts = append(stmts,
				"DROP INDEX IF EXISTS "+pgx.Identifier{schemaName, indexName(relation)}.Sanitize(),
				"ALTER TABLE "+qtable+" REPLICA IDENTITY DEFAULT",
			)
			if hasCol {
				if opts.DropColumn {
					stmts = append(stmts, "ALTER TABLE "+qtable+" DROP COLUMN "+qcol)
				} else {
					// Without the trigger nothing fills the column any more:
					// it must accept the application's inserts.
					stmts = append(stmts,
						"ALTER TABLE "+qtable+" ALTER COLUMN "+qcol+" DROP DEFAULT",
						"ALTER TABLE "+qtable+" ALTER COLUMN "+qcol+" DROP NOT NULL",
					)
				}
			}
			if member {
				stmts = append(stmts, "ALTER PUBLICATION "+pgx.Identifier{Publication}.Sanitize()+" DROP TABLE "+qtable)
			}
		}
	}
	if !something {
		return fmt.Errorf("%w: %s", ErrNotEnabled, name)
	}
	stmts = append(stmts, "DROP FUNCTION IF EXISTS "+fn+"()")
	for _, s := range stmts {
		if _, err := tx.Exec(ctx, s); err != nil {
			return fmt.Errorf("migrations: disable %s: %w", name, err)
		}
	}
	if _, err := tx.Exec(ctx, "DELETE FROM ripple.tombstones WHERE table_name = $1", name); err != nil {
		return fmt.Errorf("migrations: delete tombstones of %s: %w", name, err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM ripple.tables WHERE name = $1", name); err != nil {
		return fmt.Errorf("migrations: unregister %s: %w", name, err)
	}
	return nil
}

package writer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ripple-sync/ripple/schema"
)

// querier is what a Tx runs statements on: the connection that holds the
// mutation's transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Tx is the transaction a mutator runs in. It is open on the primary and
// already holds the lock of the client's row of ripple.clients; everything a
// mutator does through it commits together with the record of the mutation,
// or not at all. A Tx must not be used after the mutator returns, nor from
// several goroutines at once.
//
// Insert, Update and Delete write rows of sync tables after checking the
// caller's claims: the row's organisation (root key) before and after the
// write must be one the token may write. Exec, Query and QueryRow run any SQL
// without checks: a custom mutator that writes through them is responsible
// for its own authorisation (see Authorize).
type Tx struct {
	q          querier
	cache      *tableCache
	claims     schema.Claims
	clientID   string
	mutationID int64
	// orgs lists the organisations written, in the order first touched.
	orgs []string
	// fresh names the tables whose metadata was loaded in this transaction.
	fresh map[string]bool
	// poison is set when a built-in write was refused after it reached the
	// database (a check on the row as written failed): the mutation is then
	// rejected with it even if the mutator ignores the error, so nothing of
	// it is committed.
	poison *Rejection
}

// Claims returns the claims of the token that sent the mutation.
func (tx *Tx) Claims() schema.Claims { return tx.claims }

// ClientID returns the id of the client that sent the mutation.
func (tx *Tx) ClientID() string { return tx.clientID }

// MutationID returns the mutation's per-client id.
func (tx *Tx) MutationID() int64 { return tx.mutationID }

// Exec runs a statement in the mutation's transaction.
func (tx *Tx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return tx.q.Exec(ctx, sql, args...)
}

// Query runs a query in the mutation's transaction.
func (tx *Tx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return tx.q.Query(ctx, sql, args...)
}

// QueryRow runs a query returning at most one row in the mutation's
// transaction.
func (tx *Tx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return tx.q.QueryRow(ctx, sql, args...)
}

// Authorize checks that the token may write table of org and records org as
// written by this mutation (the first organisation written is the one the
// mutation's record is published to). It returns a *Rejection with code
// "forbidden" otherwise. Custom mutators that write sync tables with Exec
// call it for every organisation they write.
func (tx *Tx) Authorize(org, table string) error {
	if !tx.claims.CanWrite(org, table) {
		return Reject(CodeForbidden, "the token may not write table %q of organisation %q", table, org)
	}
	tx.touch(org)
	return nil
}

func (tx *Tx) touch(org string) {
	if !slices.Contains(tx.orgs, org) {
		tx.orgs = append(tx.orgs, org)
	}
}

// Insert inserts a row into a sync table and returns the row as written,
// encoded like the stream encodes it. Values are what JSON would carry
// (strings, numbers, booleans, nil, slices, maps for json columns); each is
// converted to the column's type by Postgres.
func (tx *Tx) Insert(ctx context.Context, table string, row map[string]any) (json.RawMessage, error) {
	raw, err := marshalMembers(row)
	if err != nil {
		return nil, err
	}
	return tx.insert(ctx, table, raw)
}

// Update changes the given columns of the row of a sync table with primary key
// key and returns the row as written. key must name every primary key column
// and nothing else.
func (tx *Tx) Update(ctx context.Context, table string, key, set map[string]any) (json.RawMessage, error) {
	k, err := marshalMembers(key)
	if err != nil {
		return nil, err
	}
	s, err := marshalMembers(set)
	if err != nil {
		return nil, err
	}
	return tx.update(ctx, table, k, s)
}

// Delete deletes the row of a sync table with primary key key and returns its
// key as encoded by the stream.
func (tx *Tx) Delete(ctx context.Context, table string, key map[string]any) (json.RawMessage, error) {
	k, err := marshalMembers(key)
	if err != nil {
		return nil, err
	}
	return tx.delete(ctx, table, k)
}

func marshalMembers(m map[string]any) (map[string]json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(m))
	for k, v := range m {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, Reject(CodeInvalidArgument, "column %q: %v", k, err)
		}
		out[k] = b
	}
	return out, nil
}

// table returns the metadata of a sync table, loading it inside the
// transaction when the cache does not know it (a table enabled after the
// writer started). Unknown tables are rejected with "unknown_table", tables
// outside claims.Tables with "forbidden".
func (tx *Tx) table(ctx context.Context, name string) (*table, error) {
	t := tx.cache.get(name)
	if t == nil {
		var err error
		if t, err = tx.reload(ctx, name); err != nil {
			return nil, err
		}
		if t == nil {
			return nil, Reject(CodeUnknownTable, "%q is not a sync table", name)
		}
	}
	if len(tx.claims.Tables) > 0 && !slices.Contains(tx.claims.Tables, name) {
		return nil, Reject(CodeForbidden, "the token may not write table %q", name)
	}
	return t, nil
}

// errNotPrepared is returned while preparing a built-in write outside the
// transaction when the cached metadata does not suffice.
var errNotPrepared = errors.New("writer: metadata not cached")

func (tx *Tx) reload(ctx context.Context, name string) (*table, error) {
	if tx.q == nil {
		return nil, errNotPrepared
	}
	t, err := tx.cache.load(ctx, tx.q, name)
	if err != nil {
		return nil, err
	}
	if tx.fresh == nil {
		tx.fresh = map[string]bool{}
	}
	tx.fresh[name] = true
	return t, nil
}

// columnOf returns the column named name, reloading the table's metadata once
// (inside the transaction) when the cache does not know the column.
func (tx *Tx) columnOf(ctx context.Context, t **table, name string) (column, error) {
	if i, ok := (*t).byName[name]; ok {
		return (*t).cols[i], nil
	}
	if name != schema.XIDColumn && !tx.fresh[(*t).Name] {
		nt, err := tx.reload(ctx, (*t).Name)
		if err != nil {
			return column{}, err
		}
		if nt == nil {
			return column{}, Reject(CodeUnknownTable, "%q is not a sync table", (*t).Name)
		}
		*t = nt
		if i, ok := nt.byName[name]; ok {
			return nt.cols[i], nil
		}
	}
	return column{}, Reject(CodeInvalidArgument, "table %q has no column %q", (*t).Name, name)
}

// stmtError turns an error of a built-in statement into the mutator's error.
// An undefined column in a statement built from cached metadata means the
// table changed since: the cache entry is dropped and the transaction retried.
func (tx *Tx) stmtError(t *table, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42703" || pgErr.Code == "42P01") && !tx.fresh[t.Name] {
		tx.cache.drop(t.Name)
		return &errRetry{err: err}
	}
	return err
}

// params builds "$n::text::type" placeholders for the given columns and
// appends their text values to args.
type paramList struct {
	args []any
}

func (p *paramList) add(col column, raw json.RawMessage) (string, error) {
	v, err := textParam(col, raw)
	if err != nil {
		return "", Reject(CodeInvalidArgument, "%v", err)
	}
	if v == nil {
		p.args = append(p.args, nil)
	} else {
		p.args = append(p.args, *v)
	}
	return "$" + strconv.Itoa(len(p.args)) + "::text::" + col.cast, nil
}

// keyWhere builds the WHERE clause matching a primary key given as JSON.
func (tx *Tx) keyWhere(ctx context.Context, t **table, key map[string]json.RawMessage, p *paramList) (string, error) {
	tb := *t
	if len(key) != len(tb.PrimaryKey) {
		return "", Reject(CodeInvalidArgument, "key must name exactly the primary key columns %v of %q", tb.PrimaryKey, tb.Name)
	}
	var b strings.Builder
	for i, k := range tb.PrimaryKey {
		raw, ok := key[k]
		if !ok {
			return "", Reject(CodeInvalidArgument, "key must name exactly the primary key columns %v of %q", tb.PrimaryKey, tb.Name)
		}
		if string(raw) == "null" {
			return "", Reject(CodeInvalidArgument, "key column %q is null", k)
		}
		col, err := tx.columnOf(ctx, t, k)
		if err != nil {
			return "", err
		}
		ph, err := p.add(col, raw)
		if err != nil {
			return "", err
		}
		if i > 0 {
			b.WriteString(" AND ")
		}
		b.WriteString(pgx.Identifier{k}.Sanitize())
		b.WriteString(" = ")
		b.WriteString(ph)
	}
	return b.String(), nil
}

// scanRow reads one row of text values (RETURNING col::text, ...).
func scanRow(rows pgx.Rows) ([][]byte, bool, error) {
	defer rows.Close()
	if !rows.Next() {
		return nil, false, rows.Err()
	}
	raw := rows.RawValues()
	vals := make([][]byte, len(raw))
	for i, v := range raw {
		if v != nil {
			vals[i] = append([]byte{}, v...)
		}
	}
	// Drain (there is at most one row: the key is the primary key).
	for rows.Next() {
	}
	return vals, true, rows.Err()
}

// checkRoot checks the organisation of a row (its root key value as text).
func (tx *Tx) checkRoot(t *table, root []byte, when string) *Rejection {
	if root == nil {
		return Reject(CodeForbidden, "the row %s has no organisation (%s is null)", when, t.RootKey)
	}
	if !tx.claims.CanWrite(string(root), t.Name) {
		return Reject(CodeForbidden, "the token may not write table %q of organisation %q", t.Name, string(root))
	}
	return nil
}

func (tx *Tx) encode(t *table, vals [][]byte, keyOnly bool) (json.RawMessage, error) {
	var out []byte
	var err error
	if keyOnly {
		out, err = t.enc.AppendColumns(nil, vals, t.pkIdx)
	} else {
		out, err = t.enc.AppendRow(nil, vals)
	}
	if err != nil {
		return nil, fmt.Errorf("writer: encode row of %q: %w", t.Name, err)
	}
	return out, nil
}

// prepared is a built-in write ready to send: its statements and the
// function that reads their results. Preparing needs no round trip when the
// table's metadata is cached, so the writer can send the statements in the
// same round trip as the start of the transaction.
type prepared struct {
	t     *table
	stmts []stmt
	read  func(tx *Tx, t *table, br pgx.BatchResults) (json.RawMessage, error)
}

type stmt struct {
	sql  string
	args []any
}

func (p *prepared) queue(b *pgx.Batch) {
	for _, s := range p.stmts {
		b.Queue(s.sql, s.args...)
	}
}

// run sends the statements and reads their results.
func (tx *Tx) run(ctx context.Context, p *prepared, err error) (json.RawMessage, error) {
	if err != nil {
		return nil, err
	}
	b := &pgx.Batch{}
	p.queue(b)
	br := tx.q.SendBatch(ctx, b)
	defer br.Close()
	return p.read(tx, p.t, br)
}

func (tx *Tx) insert(ctx context.Context, name string, row map[string]json.RawMessage) (json.RawMessage, error) {
	p, err := tx.prepInsert(ctx, name, row)
	return tx.run(ctx, p, err)
}

func (tx *Tx) update(ctx context.Context, name string, key, set map[string]json.RawMessage) (json.RawMessage, error) {
	p, err := tx.prepUpdate(ctx, name, key, set)
	return tx.run(ctx, p, err)
}

func (tx *Tx) delete(ctx context.Context, name string, key map[string]json.RawMessage) (json.RawMessage, error) {
	p, err := tx.prepDelete(ctx, name, key)
	return tx.run(ctx, p, err)
}

func (tx *Tx) prepInsert(ctx context.Context, name string, row map[string]json.RawMessage) (*prepared, error) {
	t, err := tx.table(ctx, name)
	if err != nil {
		return nil, err
	}
	if raw, ok := row[t.RootKey]; ok {
		// Refuse before writing anything when the given organisation is
		// plainly outside the token (so a constraint of another
		// organisation's data cannot answer instead).
		if v, err := textParam(t.cols[t.rootIdx], raw); err == nil && v != nil && !tx.claims.CanWrite(*v, t.Name) {
			return nil, Reject(CodeForbidden, "the token may not write table %q of organisation %q", t.Name, *v)
		}
	}
	names := sortedKeys(row)
	var p paramList
	var cols, vals strings.Builder
	for i, n := range names {
		col, err := tx.columnOf(ctx, &t, n)
		if err != nil {
			return nil, err
		}
		if col.generated {
			return nil, Reject(CodeInvalidArgument, "column %q of %q is generated", n, t.Name)
		}
		ph, err := p.add(col, row[n])
		if err != nil {
			return nil, err
		}
		if i > 0 {
			cols.WriteString(", ")
			vals.WriteString(", ")
		}
		cols.WriteString(pgx.Identifier{n}.Sanitize())
		vals.WriteString(ph)
	}
	var sql string
	if len(names) == 0 {
		sql = "INSERT INTO " + t.ident + " DEFAULT VALUES RETURNING " + t.returning
	} else {
		sql = "INSERT INTO " + t.ident + " (" + cols.String() + ") VALUES (" + vals.String() + ") RETURNING " + t.returning
	}
	return &prepared{t: t, stmts: []stmt{{sql, p.args}}, read: readInsert}, nil
}

func readInsert(tx *Tx, t *table, br pgx.BatchResults) (json.RawMessage, error) {
	return tx.readInsert(t, br)
}

func (tx *Tx) prepUpdate(ctx context.Context, name string, key, set map[string]json.RawMessage) (*prepared, error) {
	t, err := tx.table(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(set) == 0 {
		return nil, Reject(CodeInvalidArgument, "set names no column")
	}
	if raw, ok := set[t.RootKey]; ok {
		if v, err := textParam(t.cols[t.rootIdx], raw); err == nil && v != nil && !tx.claims.CanWrite(*v, t.Name) {
			return nil, Reject(CodeForbidden, "the token may not write table %q of organisation %q", t.Name, *v)
		}
	}
	// Validate the columns first (this may reload t), then build the
	// statements from the final metadata.
	names := sortedKeys(set)
	for _, n := range names {
		col, err := tx.columnOf(ctx, &t, n)
		if err != nil {
			return nil, err
		}
		if col.generated {
			return nil, Reject(CodeInvalidArgument, "column %q of %q is generated", n, t.Name)
		}
	}
	var kp paramList
	where, err := tx.keyWhere(ctx, &t, key, &kp)
	if err != nil {
		return nil, err
	}
	up := paramList{args: append([]any{}, kp.args...)}
	var sets strings.Builder
	for i, n := range names {
		ph, err := up.add(t.cols[t.byName[n]], set[n])
		if err != nil {
			return nil, err
		}
		if i > 0 {
			sets.WriteString(", ")
		}
		sets.WriteString(pgx.Identifier{n}.Sanitize())
		sets.WriteString(" = ")
		sets.WriteString(ph)
	}
	// Lock and read the row as it is, then update it. The lock is taken
	// first, so the row read is the one updated.
	return &prepared{t: t, stmts: []stmt{
		{"SELECT " + t.returning + " FROM " + t.ident + " WHERE " + where + " FOR UPDATE", kp.args},
		{"UPDATE " + t.ident + " SET " + sets.String() + " WHERE " + where + " RETURNING " + t.returning, up.args},
	}, read: readUpdate}, nil
}

func readUpdate(tx *Tx, t *table, br pgx.BatchResults) (json.RawMessage, error) {
	return tx.lockedWrite(t, br, false)
}
func readDelete(tx *Tx, t *table, br pgx.BatchResults) (json.RawMessage, error) {
	return tx.lockedWrite(t, br, true)
}

func (tx *Tx) prepDelete(ctx context.Context, name string, key map[string]json.RawMessage) (*prepared, error) {
	t, err := tx.table(ctx, name)
	if err != nil {
		return nil, err
	}
	var p paramList
	where, err := tx.keyWhere(ctx, &t, key, &p)
	if err != nil {
		return nil, err
	}
	return &prepared{t: t, stmts: []stmt{
		{"SELECT " + t.returning + " FROM " + t.ident + " WHERE " + where + " FOR UPDATE", p.args},
		{"DELETE FROM " + t.ident + " WHERE " + where + " RETURNING " + t.returning, p.args},
	}, read: readDelete}, nil
}

// readInsert reads the result of a prepared insert and checks the row as
// written.
func (tx *Tx) readInsert(t *table, br pgx.BatchResults) (json.RawMessage, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, tx.stmtError(t, err)
	}
	out, ok, err := scanRow(rows)
	if err != nil {
		return nil, tx.stmtError(t, err)
	}
	if !ok {
		// A BEFORE trigger returned NULL: nothing was inserted.
		return nil, Reject(CodeInternal, "the insert into %q wrote no row", t.Name)
	}
	if rej := tx.checkRoot(t, out[t.rootIdx], "as written"); rej != nil {
		tx.poison = rej
		return nil, rej
	}
	tx.touch(string(out[t.rootIdx]))
	return tx.encode(t, out, false)
}

// lockedWrite reads the results of a (SELECT ... FOR UPDATE; UPDATE/DELETE
// ... RETURNING) pair: the row before is checked first, so a row of an
// organisation outside the token is refused (and its write rolled back)
// whatever the write statement answered.
func (tx *Tx) lockedWrite(t *table, br pgx.BatchResults, isDelete bool) (json.RawMessage, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, tx.stmtError(t, err)
	}
	before, ok, err := scanRow(rows)
	if err != nil {
		return nil, tx.stmtError(t, err)
	}
	if !ok {
		// Nothing matched, so the write statement matched nothing either.
		return nil, Reject(CodeNotFound, "no row of %q has that key", t.Name)
	}
	if rej := tx.checkRoot(t, before[t.rootIdx], "before the write"); rej != nil {
		tx.poison = rej
		return nil, rej
	}
	rows, err = br.Query()
	if err != nil {
		return nil, tx.stmtError(t, err)
	}
	after, ok, err := scanRow(rows)
	if err != nil {
		return nil, tx.stmtError(t, err)
	}
	tx.touch(string(before[t.rootIdx]))
	if !ok {
		// A BEFORE trigger skipped the row.
		return nil, Reject(CodeInternal, "the write to %q changed no row", t.Name)
	}
	if isDelete {
		return tx.encode(t, after, true)
	}
	if rej := tx.checkRoot(t, after[t.rootIdx], "as written"); rej != nil {
		tx.poison = rej
		return nil, rej
	}
	tx.touch(string(after[t.rootIdx]))
	return tx.encode(t, after, false)
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

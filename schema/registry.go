package schema

import "errors"

// XIDColumn is the column `ripple enable` adds to a sync table: the
// pg_current_xact_id() of the transaction that last wrote the row (rule 5).
// It is never part of an encoded row.
const XIDColumn = "ripple_xid"

// ErrUnknownTable is returned for a table that is not a sync table.
var ErrUnknownTable = errors.New("schema: not a sync table")

// ErrUnsupportedType is returned for a column type the value codec cannot
// encode. `ripple enable` refuses tables with such columns.
var ErrUnsupportedType = errors.New("schema: unsupported column type")

// Column is one column of a sync table as the codec sees it.
type Column struct {
	Name    string `json:"name"`
	TypeOID uint32 `json:"type_oid"`
}

// Table describes one sync table.
type Table struct {
	// Name is the registry name: the bare relation name for tables in the
	// public schema, "schema.relation" otherwise. It is what clients
	// subscribe to and what appears in subjects.
	Name string `json:"name"`
	// Schema and Relation name the Postgres table.
	Schema   string `json:"schema"`
	Relation string `json:"relation"`
	// RootKey is the column holding the organisation.
	RootKey string `json:"root_key"`
	// PrimaryKey lists the primary key columns in key order.
	PrimaryKey []string `json:"primary_key"`
	// Columns lists every column except XIDColumn, in attribute order.
	Columns []Column `json:"columns"`
}

// TableName returns the registry name of a Postgres table.
func TableName(schemaName, relation string) string {
	if schemaName == "public" {
		return relation
	}
	return schemaName + "." + relation
}

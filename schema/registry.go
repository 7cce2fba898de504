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

// Attribute is what pg_catalog says about one column of a sync table beyond
// the codec's Column: what statements built from the registry need.
type Attribute struct {
	// TypeName is the column's type as format_type(atttypid, NULL) spells
	// it, without type modifier: "integer", "character varying", "text[]",
	// "app.status".
	TypeName string
	// FullTypeName is the column's type with its modifier, as
	// format_type(atttypid, atttypmod) spells it: "character(6)",
	// "numeric(10,2)". A text value of the column cast to it is rendered
	// exactly as the column renders it (a char(n) value padded to n).
	FullTypeName string
	// Array reports a type of the array category (pg_type.typcategory 'A'),
	// which includes a domain over an array type.
	Array bool
	// Generated reports a generated column (pg_attribute.attgenerated set):
	// it cannot be written.
	Generated bool
}

// CastType returns the type to cast a text value to for the column: TypeName,
// except that "character" becomes "bpchar" (also for arrays). Without a
// modifier "character" means character(1), which would cut a longer value;
// bpchar is the unlimited blank-padded type. An explicit cast to a type with
// its modifier, varchar(n) say, would truncate silently, while assignment to
// the column checks the length.
func (a Attribute) CastType() string {
	switch a.TypeName {
	case "character":
		return "bpchar"
	case "character[]":
		return "bpchar[]"
	}
	return a.TypeName
}

// TableDef is a sync table as LoadRegistry and LoadTableDefs read it: the
// row of ripple.tables with its relation's columns as pg_catalog describes
// them at load time.
type TableDef struct {
	*Table
	// Attributes describes Table.Columns, at the same index. It is nil for a
	// table given to NewRegistry.
	Attributes []Attribute
}

// TableName returns the registry name of a Postgres table.
func TableName(schemaName, relation string) string {
	if schemaName == "public" {
		return relation
	}
	return schemaName + "." + relation
}

package schema

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ripple-sync/ripple/testenv"
)

// TestBuiltinOIDs checks the codec's fixed table of built-in types against a
// real PostgreSQL 15 catalog: every OID, name and array OID.
func TestBuiltinOIDs(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, b := range builtins() {
		var name string
		var arr, elem uint32
		var delim string
		err := conn.QueryRow(ctx, `SELECT t.typname::text, t.typarray, a.typelem, e.typdelim::text
			FROM pg_type t JOIN pg_type a ON a.oid = t.typarray JOIN pg_type e ON e.oid = a.typelem
			WHERE t.oid = $1`, b.oid).Scan(&name, &arr, &elem, &delim)
		if err != nil {
			t.Errorf("%s (oid %d): %v", b.name, b.oid, err)
			continue
		}
		if name != b.name || arr != b.arrayOID || elem != b.oid || delim != "," {
			t.Errorf("oid %d: catalog says %s, array %d (elem %d, delim %q); table says %s, array %d",
				b.oid, name, arr, elem, delim, b.name, b.arrayOID)
		}
	}
}

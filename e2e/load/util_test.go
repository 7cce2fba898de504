package load

import (
	"net/url"
	"strings"
	"testing"
)

// dbName returns the database name of a postgres URL.
func dbName(t testing.TB, u string) string {
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(p.Path, "/")
}

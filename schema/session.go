package schema

import (
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// SessionSettings are the session parameters every connection whose values
// reach the codec must use (the ingest's replication connection and every
// catch-up connection), as "name=value" pairs separated by "; ". Text output
// of dates, times, intervals, floats and bytea depends on them; with the same
// settings on both sides, a row decoded from replication and the same row read
// by a query have identical text forms and so encode to identical JSON.
// extra_float_digits > 0 selects the shortest exact float output.
const SessionSettings = "client_encoding=UTF8; DateStyle=ISO,MDY; IntervalStyle=postgres; TimeZone=UTC; extra_float_digits=1; bytea_output=hex"

// SessionParams returns SessionSettings as a new map of parameter name to value.
func SessionParams() map[string]string {
	m := make(map[string]string, 6)
	for _, kv := range strings.Split(SessionSettings, "; ") {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// ConnConfigOptions returns SessionSettings as a libpq "options" value:
// "-c client_encoding=UTF8 -c DateStyle=ISO,MDY ...". Append it to a
// connection string (options=...) when the connection is not configured
// through ApplySessionSettings. In a URL, escape its spaces as %20 (pgx does
// not read '+' as a space).
func ConnConfigOptions() string {
	var b strings.Builder
	for i, kv := range strings.Split(SessionSettings, "; ") {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("-c ")
		b.WriteString(kv)
	}
	return b.String()
}

// ApplySessionSettings sets SessionSettings as startup parameters of cfg
// (RuntimeParams), overriding any value the connection string gave. Use it on
// the pgconn.Config of replication connections and (through
// pgx.ConnConfig.Config or pgxpool.Config.ConnConfig.Config) query
// connections.
func ApplySessionSettings(cfg *pgconn.Config) {
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = make(map[string]string, 6)
	}
	for k, v := range SessionParams() {
		// Parameter names are case-insensitive; drop other spellings so
		// the startup packet carries one value per parameter.
		for old := range cfg.RuntimeParams {
			if old != k && strings.EqualFold(old, k) {
				delete(cfg.RuntimeParams, old)
			}
		}
		cfg.RuntimeParams[k] = v
	}
}

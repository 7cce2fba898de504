package schema_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// TestSessionSettingsApplied connects the three ways ingest and catch-up do
// (pgx with ApplySessionSettings, a URL with ConnConfigOptions, a replication
// connection) starting from conflicting settings, and checks what the server
// reports.
func TestSessionSettingsApplied(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	base := pg.CreateDatabase(t) + "&timezone=Asia/Tokyo&DateStyle=German"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]string{
		"client_encoding": "UTF8", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres",
		"TimeZone": "UTC", "extra_float_digits": "1", "bytea_output": "hex",
	}
	check := func(t *testing.T, conn *pgconn.PgConn) {
		t.Helper()
		for name, w := range want {
			res, err := conn.Exec(ctx, "SHOW "+name).ReadAll()
			if err != nil {
				t.Fatalf("SHOW %s: %v", name, err)
			}
			if got := string(res[0].Rows[0][0]); got != w {
				t.Errorf("%s = %q, want %q", name, got, w)
			}
		}
	}
	t.Run("ApplySessionSettings", func(t *testing.T) {
		cfg, err := pgx.ParseConfig(base)
		if err != nil {
			t.Fatal(err)
		}
		schema.ApplySessionSettings(&cfg.Config)
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		check(t, conn.PgConn())
	})
	t.Run("ConnConfigOptions", func(t *testing.T) {
		conn, err := pgconn.Connect(ctx, pg.CreateDatabase(t)+"&options="+strings.ReplaceAll(url.QueryEscape(schema.ConnConfigOptions()), "+", "%20"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		check(t, conn)
	})
	t.Run("replication connection", func(t *testing.T) {
		cfg, err := pgconn.ParseConfig(base + "&replication=database")
		if err != nil {
			t.Fatal(err)
		}
		schema.ApplySessionSettings(cfg)
		conn, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		check(t, conn)
	})
}

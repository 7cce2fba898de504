package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/sync/errgroup"

	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/ingest"
	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/writer"
)

// demoOrgs are the organisations migrations.DemoSchema seeds.
var demoOrgs = []string{"acme", "globex"}

// loadOrCreateSecret returns the dev HS256 secret, generating and storing it
// under dir the first time.
func loadOrCreateSecret(dir string) (string, error) {
	if b, err := os.ReadFile(devSecretFile(dir)); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return s, nil
		}
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	s := hex.EncodeToString(buf)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(devSecretFile(dir), []byte(s+"\n"), 0o600); err != nil {
		return "", err
	}
	return s, nil
}

func startEmbeddedNATS(host string, port int) (*server.Server, error) {
	if port <= 0 {
		// 0 means any free port; nats-server itself would read 0 as its
		// default port 4222.
		port = -1
	} else if ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", host, port)); err != nil {
		port = -1 // taken: let the server pick one
	} else {
		ln.Close()
	}
	ns, err := server.NewServer(&server.Options{Host: host, Port: port, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats did not start")
	}
	return ns, nil
}

func runDev(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "dev", "[--database-url URL] [--http-addr 127.0.0.1:8080]")
	dbURL := fs.String("database-url", "", "use this database instead of a throwaway cluster (no demo schema is created there)")
	devDir := fs.String("dev-dir", ".ripple/dev", "where dev keeps its Postgres cluster and secret")
	pgPort := fs.Int("pg-port", 5499, "port of the throwaway Postgres (another free one if taken)")
	natsPort := fs.Int("nats-port", 4222, "port of the embedded NATS server (another free one if taken; 0: any free port)")
	gf := addGatewayFlags(fs)
	if _, err := parseFlags(env, fs, args); err != nil {
		return err
	}
	logger := env.logger
	secret := *gf.jwtSecret
	if secret == "" {
		s, err := loadOrCreateSecret(*devDir)
		if err != nil {
			return fmt.Errorf("dev secret: %w", err)
		}
		secret = s
		gf.jwtSecret = &secret
	}

	demo := false
	if *dbURL == "" {
		pg, err := startDevPostgres(ctx, logger, *devDir, *pgPort)
		if err != nil {
			return err
		}
		defer pg.Stop()
		if err := ensureDatabase(ctx, pg.URL("postgres"), "ripple"); err != nil {
			return fmt.Errorf("create dev database: %w", err)
		}
		u := pg.URL("ripple")
		dbURL = &u
		demo = true
	}
	conn, err := pgx.Connect(ctx, *dbURL)
	if err != nil {
		return fmt.Errorf("connect to postgres: %w", err)
	}
	if err := migrations.Migrate(ctx, conn); err != nil {
		conn.Close(ctx)
		return err
	}
	if demo {
		if err := migrations.DemoSchema(ctx, conn); err != nil {
			conn.Close(ctx)
			return fmt.Errorf("demo schema: %w", err)
		}
	}
	conn.Close(ctx)

	ns, err := startEmbeddedNATS("127.0.0.1", *natsPort)
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	natsURL := ns.ClientURL()

	reg := newRegistry()
	ing, err := ingest.New(ingest.Config{DatabaseURL: *dbURL, NATSURL: natsURL, Logger: logger.With("part", "ingest"), Registerer: reg})
	if err != nil {
		return err
	}
	wr, err := writer.New(writer.Config{DatabaseURL: *dbURL, NATSURL: natsURL, Logger: logger.With("part", "writer"), Registerer: reg})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ing.Run(gctx) })
	g.Go(func() error { return wr.Run(gctx) })
	g.Go(func() error {
		return serveGateway(gctx, env, reg, *dbURL, natsURL, gf,
			[]readiness{boolCheck("ingest", ing.Ready), ctxCheck("writer", wr.Ready)})
	})

	orgs := demoOrgs
	if !demo {
		orgs = []string{"YOUR_ORG"}
	}
	tok, err := auth.SignHS256([]byte(secret), schema.Claims{Subject: "dev-user", Orgs: orgs, WriteOrgs: orgs, Expires: time.Now().Add(24 * time.Hour)})
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(*devDir)
	fmt.Fprintf(env.stdout, `
Ripple dev is running.
  database   %s
  nats       %s
  gateway    ws://%s/v1/ws   (health /healthz, readiness /readyz, metrics /metrics)
  state      %s

A token for organisations %s (read and write, 24h):
  %s

Watch the demo data change:
  ripple watch --gateway ws://%s --token %s --table todo_items --org %s
More tokens: ripple token --org %s --write

`, *dbURL, natsURL, *gf.httpAddr, abs, strings.Join(orgs, ", "), tok, *gf.httpAddr, tok, orgs[0], orgs[0])
	return ignoreCanceled(g.Wait())
}

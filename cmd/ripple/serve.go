package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/gateway"
	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/ingest"
	"github.com/ripple-sync/ripple/migrations"
	"github.com/ripple-sync/ripple/writer"
)

func runIngest(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "ingest", "--database-url URL --nats-url URL")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of the primary")
	natsURL := fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	slot := fs.String("slot", "ripple", "replication slot name")
	maxMsg := fs.Int("max-message-bytes", 256<<10, "largest NATS message; bigger transaction parts are chunked")
	retention := fs.Duration("tombstone-retention", migrations.DefaultRetention, "keep tombstones this long")
	mutRetention := fs.Duration("mutation-retention", migrations.DefaultMutationRetention, "keep the records of processed mutations this long (a later retry gets mutation_expired)")
	httpAddr := fs.String("http-addr", "127.0.0.1:9091", "health, readiness and metrics address")
	if _, err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if *dbURL == "" {
		return fmt.Errorf("%w: --database-url (RIPPLE_DATABASE_URL) is required", errUsage)
	}
	reg := newRegistry()
	ing, err := ingest.New(ingest.Config{
		DatabaseURL:        *dbURL,
		NATSURL:            *natsURL,
		SlotName:           *slot,
		MaxMessageBytes:    *maxMsg,
		TombstoneRetention: *retention,
		MutationRetention:  *mutRetention,
		Logger:             env.logger.With("part", "ingest"),
		Registerer:         reg,
	})
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ing.Run(ctx) })
	g.Go(func() error {
		return serveHTTP(ctx, env.logger, *httpAddr, opsMux(reg, []readiness{boolCheck("ingest", ing.Ready)}, nil), nil)
	})
	return ignoreCanceled(g.Wait())
}

func runWriter(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "writer", "--database-url URL --nats-url URL")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of the primary")
	natsURL := fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	httpAddr := fs.String("http-addr", "127.0.0.1:9092", "health, readiness and metrics address")
	if _, err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if *dbURL == "" {
		return fmt.Errorf("%w: --database-url (RIPPLE_DATABASE_URL) is required", errUsage)
	}
	reg := newRegistry()
	w, err := writer.New(writer.Config{DatabaseURL: *dbURL, NATSURL: *natsURL, Logger: env.logger.With("part", "writer"), Registerer: reg})
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(ctx) })
	g.Go(func() error {
		return serveHTTP(ctx, env.logger, *httpAddr, opsMux(reg, []readiness{ctxCheck("writer", w.Ready)}, nil), nil)
	})
	return ignoreCanceled(g.Wait())
}

// gatewayFlags are the flags `ripple gateway` and `ripple dev` share.
type gatewayFlags struct {
	replicaURL    *string
	jwtSecret     *string
	jwksFile      *string
	httpAddr      *string
	replicaWait   *time.Duration
	maxFrameBytes *int
}

func addGatewayFlags(fs interface {
	String(string, string, string) *string
	Duration(string, time.Duration, string) *time.Duration
	Int(string, int, string) *int
}) gatewayFlags {
	return gatewayFlags{
		replicaURL:    fs.String("replica-url", "", "PostgreSQL URL of this region's read replica (catch-up runs there when set)"),
		jwtSecret:     fs.String("jwt-secret", "", "HS256 secret that signs client tokens"),
		jwksFile:      fs.String("jwks-file", "", "JSON Web Key Set file with RS256/EdDSA public keys for client tokens"),
		httpAddr:      fs.String("http-addr", "127.0.0.1:8080", "WebSocket (/v1/ws), health, readiness and metrics address"),
		replicaWait:   fs.Duration("replica-wait", 10*time.Second, "how long a catch-up waits for the replica to replay far enough"),
		maxFrameBytes: fs.Int("max-frame-bytes", 1<<20, "largest client frame accepted"),
	}
}

func runGateway(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "gateway", "--nats-url URL (--database-url URL | --replica-url URL) --jwt-secret S")
	dbURL := fs.String("database-url", "", "PostgreSQL URL of the primary (catch-up runs there when no replica is set)")
	natsURL := fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	gf := addGatewayFlags(fs)
	if _, err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if *dbURL == "" && *gf.replicaURL == "" {
		return fmt.Errorf("%w: --database-url or --replica-url is required", errUsage)
	}
	if *gf.jwtSecret == "" && *gf.jwksFile == "" {
		return fmt.Errorf("%w: --jwt-secret or --jwks-file is required", errUsage)
	}
	reg := newRegistry()
	return serveGateway(ctx, env, reg, *dbURL, *natsURL, gf, nil)
}

// serveGateway runs a gateway and the HTTP server until ctx is done; extra
// readiness checks (dev's ingest and writer) join its /readyz.
func serveGateway(ctx context.Context, env *cliEnv, reg *prometheus.Registry, dbURL, natsURL string, gf gatewayFlags, extra []readiness) error {
	cu, err := catchup.New(ctx, catchup.Config{
		PrimaryURL:         dbURL,
		ReplicaURL:         *gf.replicaURL,
		ReplicaWaitTimeout: *gf.replicaWait,
		Logger:             env.logger.With("part", "catchup"),
		Registerer:         reg,
	})
	if err != nil {
		return err
	}
	defer cu.Close()
	gw, err := gateway.New(ctx, gateway.Config{
		NATSURL:       natsURL,
		Catchup:       cu,
		Auth:          auth.Config{HS256Secret: []byte(*gf.jwtSecret), JWKSFile: *gf.jwksFile},
		MaxFrameBytes: *gf.maxFrameBytes,
		Logger:        env.logger.With("part", "gateway"),
		Registerer:    reg,
	})
	if err != nil {
		return err
	}
	checks := append([]readiness{{"gateway", func() error {
		if !gw.Ready() {
			return errors.New("not ready (NATS or ingest heartbeat missing)")
		}
		return nil
	}}}, extra...)
	mux := opsMux(reg, checks, map[string]http.Handler{"/v1/ws": gw})
	err = serveHTTP(ctx, env.logger, *gf.httpAddr, mux, nil)
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if serr := gw.Shutdown(shutCtx); serr != nil && err == nil {
		err = serr
	}
	return err
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

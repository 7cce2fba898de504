// Command gateway-pprof runs a Ripple gateway exactly as `ripple gateway`
// configures it (catchup against the primary, HS256 tokens, default limits)
// with net/http/pprof added under /debug/pprof/, so that the gateway
// benchmark's figures (CPU per delivery, memory per connection) can be
// explained with profiles:
//
//	gateway-pprof --nats-url nats://127.0.0.1:4222 --database-url postgres://... --jwt-secret S --http-addr 127.0.0.1:8080
//	go tool pprof -top -inuse_space http://127.0.0.1:8080/debug/pprof/heap
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/gateway"
	"github.com/ripple-sync/ripple/gateway/auth"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gateway-pprof:", err)
		os.Exit(1)
	}
}

func run() error {
	natsURL := flag.String("nats-url", "nats://127.0.0.1:4222", "NATS server URL")
	dbURL := flag.String("database-url", "", "PostgreSQL URL (catch-up runs there)")
	secret := flag.String("jwt-secret", "", "HS256 secret of client tokens")
	addr := flag.String("http-addr", "127.0.0.1:8080", "WebSocket (/v1/ws), /readyz and /debug/pprof/ address")
	flag.Parse()
	if *dbURL == "" || *secret == "" {
		return errors.New("--database-url and --jwt-secret are required")
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cu, err := catchup.New(ctx, catchup.Config{PrimaryURL: *dbURL, Logger: logger})
	if err != nil {
		return err
	}
	defer cu.Close()
	gw, err := gateway.New(ctx, gateway.Config{NATSURL: *natsURL, Catchup: cu, Auth: auth.Config{HS256Secret: []byte(*secret)}, Logger: logger})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(gateway.PathWebSocket, gw)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !gw.Ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Addr: *addr, Handler: mux}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = gw.Shutdown(sctx)
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readiness is one named readiness check; nil error means ready.
type readiness struct {
	name  string
	check func() error
}

// boolCheck adapts a Ready() bool accessor.
func boolCheck(name string, ready func() bool) readiness {
	return readiness{name, func() error {
		if !ready() {
			return errors.New("not ready")
		}
		return nil
	}}
}

// ctxCheck adapts a Ready(ctx) error accessor, bounded to two seconds.
func ctxCheck(name string, ready func(context.Context) error) readiness {
	return readiness{name, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return ready(ctx)
	}}
}

// newRegistry returns a Prometheus registry with the Go and process collectors.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// opsMux serves /healthz (the process is up), /readyz (every check passes)
// and /metrics, plus any extra handlers (the gateway's WebSocket endpoint).
func opsMux(reg *prometheus.Registry, checks []readiness, extra map[string]http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		failed := false
		for _, c := range checks {
			if err := c.check(); err != nil {
				failed = true
				fmt.Fprintf(w, "%s: %v\n", c.name, err)
			}
		}
		if failed {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	for path, h := range extra {
		mux.Handle(path, h)
	}
	return mux
}

// serveHTTP listens on addr and serves h until ctx is done, then shuts down
// gracefully. The listener is opened before it returns the bound address on
// ready (so callers can print it), which matters for ":0".
func serveHTTP(ctx context.Context, logger *slog.Logger, addr string, h http.Handler, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if ready != nil {
		ready(ln.Addr())
	}
	logger.Info("http listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

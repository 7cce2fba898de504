// Command ripple-load is the load generator of Ripple's gateway benchmark
// (package e2e/load): it runs in its own process so that the gateway's CPU
// and memory can be measured alone.
//
// Modes:
//
//	ripple-load --mode ripple --url ws://127.0.0.1:8080/v1/ws --clients 10000 --orgs 100 --jwt-secret S
//	ripple-load --mode echo --url ws://127.0.0.1:8099/ --clients 10000
//	ripple-load --mode snapshot --url ws://127.0.0.1:8080/v1/ws --org big --jwt-secret S
//
// In ripple and echo modes it opens the connections, prints one JSON line
// {"event":"ready",...} on stdout, then answers commands read from stdin, one
// per line: "stats" prints {"event":"stats","stats":{...}} (cumulative
// counters and the commit latency histogram, see load.Stats); "quit" or the
// end of stdin closes every connection and exits. In snapshot mode it
// subscribes once, prints {"event":"snapshot","result":{...}} and exits.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/ripple-sync/ripple/e2e/load"
	"github.com/ripple-sync/ripple/gateway/auth"
	"github.com/ripple-sync/ripple/schema"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ripple-load:", err)
		os.Exit(1)
	}
}

func run() error {
	mode := flag.String("mode", "ripple", "ripple, echo or snapshot")
	url := flag.String("url", "ws://127.0.0.1:8080/v1/ws", "WebSocket URL")
	clients := flag.Int("clients", 1000, "connections to open (ripple, echo)")
	orgs := flag.Int("orgs", 100, "organisations; connection i subscribes to org i mod orgs (ripple)")
	orgPrefix := flag.String("org-prefix", "org", "organisation names are PREFIX000, PREFIX001, ...")
	org := flag.String("org", "", "organisation to snapshot (snapshot)")
	table := flag.String("table", load.DefaultTable, "sync table")
	secret := flag.String("jwt-secret", os.Getenv("RIPPLE_JWT_SECRET"), "HS256 secret to sign tokens with")
	sources := flag.String("source-addrs", strings.Join(load.DefaultSourceAddrs(), ","), "local addresses to connect from, comma-separated")
	dialConc := flag.Int("dial-concurrency", load.DefaultDialConcurrency, "connections set up at once")
	readyTimeout := flag.Duration("ready-timeout", load.DefaultReadyTimeout, "bound on the time until every connection is ready")
	decode := flag.Bool("decode", false, "snapshot: decode every frame with encoding/json instead of only counting its operations")
	cpuProfile := flag.String("cpuprofile", os.Getenv("RIPPLE_LOAD_CPUPROFILE"), "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := json.NewEncoder(os.Stdout)

	tokens := map[string]string{}
	sign := func(o string) (string, error) {
		if t, ok := tokens[o]; ok {
			return t, nil
		}
		if *secret == "" {
			return "", fmt.Errorf("--jwt-secret (RIPPLE_JWT_SECRET) is required")
		}
		t, err := auth.SignHS256([]byte(*secret), schema.Claims{Subject: "load-" + o, Orgs: []string{o}, Expires: time.Now().Add(6 * time.Hour)})
		if err != nil {
			return "", err
		}
		tokens[o] = t
		return t, nil
	}
	srcs := strings.Split(*sources, ",")

	switch *mode {
	case "snapshot":
		tok, err := sign(*org)
		if err != nil {
			return err
		}
		res, err := load.Snapshot(ctx, load.SnapshotConfig{URL: *url, Token: tok, Table: *table, Org: *org, SourceAddr: srcs[0], Decode: *decode})
		if err != nil {
			return err
		}
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
			res.ClientCPUSeconds = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		}
		return out.Encode(map[string]any{"event": "snapshot", "result": res})
	case "ripple", "echo":
	default:
		return fmt.Errorf("unknown --mode %q", *mode)
	}

	cfg := load.Config{
		URL:             *url,
		Clients:         *clients,
		Mode:            load.Mode(*mode),
		Table:           *table,
		SourceAddrs:     srcs,
		DialConcurrency: *dialConc,
		ReadyTimeout:    *readyTimeout,
		Logger:          logger,
	}
	if cfg.Mode == load.ModeRipple {
		cfg.Orgs = load.OrgNames(*orgPrefix, *orgs)
		for _, o := range cfg.Orgs { // sign up front: Token is called concurrently
			if _, err := sign(o); err != nil {
				return err
			}
		}
		cfg.Token = func(o string) string { return tokens[o] }
	}
	start := time.Now()
	g, err := load.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer g.Close()
	if err := out.Encode(map[string]any{"event": "ready", "ready": g.Stats().Ready, "seconds": time.Since(start).Seconds()}); err != nil {
		return err
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- strings.TrimSpace(sc.Text())
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case line, ok := <-lines:
			if !ok || line == "quit" {
				return nil
			}
			switch line {
			case "stats":
				if err := out.Encode(map[string]any{"event": "stats", "stats": g.Stats()}); err != nil {
					return err
				}
			case "":
			default:
				if err := out.Encode(map[string]any{"event": "error", "message": "unknown command " + line}); err != nil {
					return err
				}
			}
		}
	}
}

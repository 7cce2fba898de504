package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand of ripple.
type command struct {
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) error
}

// cliEnv is what every subcommand receives from main: its streams, the
// environment lookup and the logger. Tests build their own.
type cliEnv struct {
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	logger *slog.Logger
}

func commands() map[string]command {
	return map[string]command{
		"dev":     {"run Postgres (throwaway), NATS (embedded), ingest, gateway and writer in one process", runDev},
		"ingest":  {"stream logical replication from Postgres to NATS", runIngest},
		"gateway": {"serve WebSocket clients: catch-up from a replica, live from NATS", runGateway},
		"writer":  {"execute client mutations next to the primary, exactly once", runWriter},
		"migrate": {"install Ripple's SQL objects (idempotent)", runMigrate},
		"enable":  {"make a table syncable: ripple enable TABLE --root-key COLUMN", runEnable},
		"disable": {"stop syncing a table: ripple disable TABLE", runDisable},
		"prune":   {"delete tombstones and mutation records older than their retention periods", runPrune},
		"token":   {"print a signed client token: ripple token --org O [--org O2] [--ttl 1h]", runToken},
		"watch":   {"print a table's rows of one organisation and then every change, as JSON lines", runWatch},
	}
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

func realMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	level := slog.LevelInfo
	if lv := getenv("RIPPLE_LOG_LEVEL"); lv != "" {
		_ = level.UnmarshalText([]byte(lv))
	}
	var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	if strings.EqualFold(getenv("RIPPLE_LOG_FORMAT"), "json") {
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	}
	env := &cliEnv{stdout: stdout, stderr: stderr, getenv: getenv, logger: slog.New(handler)}

	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ripple: unknown command %q\n\n", args[0])
		usage(stderr, cmds)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, env, args[1:])
	switch {
	case err == nil, errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintf(stderr, "ripple %s: %v\n", args[0], err)
		return 1
	}
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: ripple COMMAND [flags]   (ripple COMMAND --help for its flags)")
	fmt.Fprintln(w)
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nEvery flag can also be set by environment: --nats-url is RIPPLE_NATS_URL.")
}

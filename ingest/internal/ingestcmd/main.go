// Command ingestcmd runs one ingest configured by flags. Tests and
// benchmarks build it without the race detector to measure the memory and
// speed of a real ingest process; production uses `ripple ingest`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/ripple-sync/ripple/ingest"
)

func main() {
	var cfg ingest.Config
	flag.StringVar(&cfg.DatabaseURL, "database-url", "", "primary connection string")
	flag.StringVar(&cfg.NATSURL, "nats-url", "", "NATS URL")
	flag.StringVar(&cfg.SlotName, "slot", "", "replication slot")
	flag.IntVar(&cfg.MaxMessageBytes, "max-message-bytes", 0, "chunk cap")
	flag.IntVar(&cfg.MaxBufferedBytes, "max-buffered-bytes", 0, "buffer cap across open parts")
	flag.DurationVar(&cfg.HeartbeatInterval, "heartbeat", 200*time.Millisecond, "heartbeat interval")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ing, err := ingest.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := ing.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

package writer

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ripple-sync/ripple/schema"
)

// Config configures a Writer. Zero fields take the documented defaults.
type Config struct {
	// DatabaseURL is the connection string of the primary. Required.
	DatabaseURL string
	// NATSURL is the NATS server to connect to when NATS is nil.
	NATSURL string
	// NATS, when set, is used instead of dialing NATSURL. The writer never
	// closes a connection it was given.
	NATS *nats.Conn
	// Queue is the queue group shared by all writers. Default
	// schema.WriterQueue.
	Queue string
	// Subject is the request subject. Default schema.SubjectMutate.
	Subject string
	// MaxConns is the number of database connections, and so the number of
	// transactions (batches of mutations, see doc.go) executed at once.
	// With group commit a few suffice: fewer, larger batches share more
	// of each commit's cost (on 2 cores, 2 connections applied 2-3 times
	// more mutations per second than 8). More help when the primary has
	// idle cores or mutators often wait for row locks, since a batch waits
	// for its slowest mutation. Default 4.
	MaxConns int32
	// MaxBatch is the most mutations one transaction applies (group
	// commit, see doc.go). Mutations that arrive while a batch runs wait
	// for the next one; no fixed delay is added. 1 runs every mutation in
	// its own transaction. At most 64 (each mutation of a batch runs under
	// its own savepoint, and Postgres caches 64 subtransaction ids per
	// transaction). Default 64.
	MaxBatch int
	// OrderWait is how long a mutation that arrives before its
	// predecessor (its id is ahead of the client's next expected id) is
	// held back, waiting for the predecessor to arrive, before it is
	// answered "mutation_out_of_order". A gateway forwards a client's
	// mutations concurrently, so they may reach the writer slightly out of
	// order; answering at once would make the client send them again.
	// Negative answers at once. Default 100ms.
	OrderWait time.Duration
	// StatementTimeout is the statement_timeout of every connection. A
	// mutation that hits it is answered "unavailable" and not recorded.
	// Default 5s.
	StatementTimeout time.Duration
	// RequestTimeout bounds the handling of one request, retries included.
	// Default 30s.
	RequestTimeout time.Duration
	// MaxAttempts is how many times a transaction that failed with a
	// serialization failure or a deadlock is run. Default 10.
	MaxAttempts int
	// DrainTimeout bounds the wait for mutations in flight when Run's
	// context ends. Default 30s.
	DrainTimeout time.Duration
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer, when set, receives the writer's metrics.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.Queue == "" {
		c.Queue = schema.WriterQueue
	}
	if c.Subject == "" {
		c.Subject = schema.SubjectMutate
	}
	if c.MaxConns == 0 {
		c.MaxConns = 4
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 64
	}
	if c.OrderWait == 0 {
		c.OrderWait = 100 * time.Millisecond
	}
	if c.StatementTimeout == 0 {
		c.StatementTimeout = 5 * time.Second
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 30 * time.Second
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	switch {
	case c.DatabaseURL == "":
		return fmt.Errorf("%w: DatabaseURL is required", ErrBadConfig)
	case c.NATS == nil && c.NATSURL == "":
		return fmt.Errorf("%w: NATSURL or NATS is required", ErrBadConfig)
	case c.MaxConns < 1:
		return fmt.Errorf("%w: MaxConns must be positive", ErrBadConfig)
	case c.MaxBatch < 1 || c.MaxBatch > maxBatch:
		return fmt.Errorf("%w: MaxBatch must be 1 to %d", ErrBadConfig, maxBatch)
	case c.StatementTimeout < 0 || c.RequestTimeout < 0 || c.DrainTimeout < 0:
		return fmt.Errorf("%w: negative timeout", ErrBadConfig)
	case c.MaxAttempts < 1:
		return fmt.Errorf("%w: MaxAttempts must be positive", ErrBadConfig)
	}
	return nil
}

package catchup

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of Config.
const (
	DefaultReplicaWaitTimeout  = 10 * time.Second
	DefaultReplicaPollInterval = 5 * time.Millisecond
	DefaultBatchRows           = 1000
	DefaultBatchBytes          = 256 << 10
	DefaultMaxConns            = 8
	DefaultMaxAttempts         = 4
)

// ErrBadConfig is returned by New for an invalid Config.
var ErrBadConfig = errors.New("catchup: bad config")

// Config configures a Catchup. The zero value of every optional field means
// its default.
type Config struct {
	// PrimaryURL is the connection string of the primary. It is required
	// unless ReplicaURL is set; when ReplicaURL is set it is not used.
	PrimaryURL string
	// ReplicaURL, when set, is a streaming replica (hot standby) of the
	// primary; every catch-up query runs there, after waiting for replay to
	// reach the request's MinLSN.
	ReplicaURL string
	// ReplicaWaitTimeout bounds the wait for replay to reach MinLSN
	// (default 10s). When it passes, Run returns ErrReplicaLag.
	ReplicaWaitTimeout time.Duration
	// ReplicaPollInterval is the longest pause between two looks at the
	// replica's replay position while waiting (default 5ms; the first looks
	// come sooner).
	ReplicaPollInterval time.Duration
	// BatchRows is the most operations handed to emit at once (default 1000).
	BatchRows int
	// BatchBytes bounds the encoded rows and keys of one batch: a batch is
	// handed to emit as soon as it holds at least BatchBytes (default 256 KiB),
	// so it exceeds the bound by at most one row.
	BatchBytes int
	// MaxConns is the size of the connection pool (default 8): at most that
	// many catch-ups run at once, the others wait for a connection.
	MaxConns int32
	// MaxAttempts is how many times a catch-up that a replica cancelled for a
	// recovery conflict (SQLSTATE 40001, 40P01) is tried in all (default 4).
	MaxAttempts int
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// Registerer, when set, receives the Prometheus metrics of the Catchup.
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.ReplicaWaitTimeout == 0 {
		c.ReplicaWaitTimeout = DefaultReplicaWaitTimeout
	}
	if c.ReplicaPollInterval == 0 {
		c.ReplicaPollInterval = DefaultReplicaPollInterval
	}
	if c.BatchRows == 0 {
		c.BatchRows = DefaultBatchRows
	}
	if c.BatchBytes == 0 {
		c.BatchBytes = DefaultBatchBytes
	}
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports whether the Config (with defaults applied) is usable.
func (c *Config) Validate() error {
	switch {
	case c.PrimaryURL == "" && c.ReplicaURL == "":
		return fmt.Errorf("%w: PrimaryURL or ReplicaURL is required", ErrBadConfig)
	case c.ReplicaWaitTimeout < 0:
		return fmt.Errorf("%w: negative ReplicaWaitTimeout %v", ErrBadConfig, c.ReplicaWaitTimeout)
	case c.ReplicaPollInterval < 0:
		return fmt.Errorf("%w: negative ReplicaPollInterval %v", ErrBadConfig, c.ReplicaPollInterval)
	case c.BatchRows < 0:
		return fmt.Errorf("%w: negative BatchRows %d", ErrBadConfig, c.BatchRows)
	case c.BatchBytes < 0:
		return fmt.Errorf("%w: negative BatchBytes %d", ErrBadConfig, c.BatchBytes)
	case c.MaxConns < 0:
		return fmt.Errorf("%w: negative MaxConns %d", ErrBadConfig, c.MaxConns)
	case c.MaxAttempts < 0:
		return fmt.Errorf("%w: negative MaxAttempts %d", ErrBadConfig, c.MaxAttempts)
	}
	return nil
}

// url returns the database every catch-up runs on.
func (c *Config) url() string {
	if c.ReplicaURL != "" {
		return c.ReplicaURL
	}
	return c.PrimaryURL
}

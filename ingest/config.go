package ingest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrBadConfig is returned (wrapped) by New for an invalid Config.
var ErrBadConfig = errors.New("ingest: invalid config")

// DefaultLockID is the advisory lock key the active ingest holds when
// Config.LockID is zero ("ripplei" in ASCII; migrations.LockKey is "ripple").
const DefaultLockID int64 = 0x726970706c6569

// Config configures an Ingest. Zero values take the documented defaults.
type Config struct {
	// DatabaseURL is the primary's connection string (required). The
	// ingest opens a replication connection, a query connection and the
	// lock connection with it.
	DatabaseURL string
	// NATSURL is the NATS server to publish to; ignored when NATS is set.
	// One of NATSURL and NATS is required.
	NATSURL string
	// NATS is an existing connection to publish on. The ingest does not
	// close it. Its reconnect handling should allow infinite reconnects.
	NATS *nats.Conn
	// SlotName is the logical replication slot (default "ripple"). It is
	// created (persistent, pgoutput) when missing.
	SlotName string
	// Publication is the publication to stream (default "ripple").
	Publication string
	// MaxMessageBytes caps the size of one published message: parts larger
	// than this go out as numbered chunks (default 256 KiB).
	MaxMessageBytes int
	// MaxBufferedBytes caps the bytes held for all open parts of one
	// transaction; above it the largest part is sent as a chunk
	// (default 64 MiB).
	MaxBufferedBytes int
	// HeartbeatInterval is how often a heartbeat goes out and the position
	// is acknowledged to Postgres (default 1s).
	HeartbeatInterval time.Duration
	// CheckpointInterval is how often a checkpoint {lsn, xmin} is read on
	// the primary (default 2s).
	CheckpointInterval time.Duration
	// PruneInterval is how often tombstones older than TombstoneRetention
	// and mutation records older than MutationRetention are pruned
	// (default 1h, both retentions default 30 days). A negative
	// PruneInterval disables pruning.
	PruneInterval      time.Duration
	TombstoneRetention time.Duration
	MutationRetention  time.Duration
	// LockID is the advisory lock key that elects the active ingest
	// (default DefaultLockID).
	LockID int64
	// StandbyPollInterval is how often a standby retries the lock and the
	// leader checks that its lock connection is alive (default 1s).
	StandbyPollInterval time.Duration
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// Registerer, when set, receives the ingest's Prometheus metrics.
	Registerer prometheus.Registerer
	// Epoch is carried by every published message (rule 9); default a
	// random 16-hex-digit string per Ingest.
	Epoch string
}

func (c *Config) setDefaults() {
	if c.SlotName == "" {
		c.SlotName = "ripple"
	}
	if c.Publication == "" {
		c.Publication = "ripple"
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 256 << 10
	}
	if c.MaxBufferedBytes == 0 {
		c.MaxBufferedBytes = 64 << 20
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = time.Second
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = 2 * time.Second
	}
	if c.PruneInterval == 0 {
		c.PruneInterval = time.Hour
	}
	if c.TombstoneRetention == 0 {
		c.TombstoneRetention = 30 * 24 * time.Hour
	}
	if c.MutationRetention == 0 {
		c.MutationRetention = 30 * 24 * time.Hour
	}
	if c.LockID == 0 {
		c.LockID = DefaultLockID
	}
	if c.StandbyPollInterval == 0 {
		c.StandbyPollInterval = time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Epoch == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.Epoch = hex.EncodeToString(b[:])
	}
}

func (c *Config) validate() error {
	switch {
	case c.DatabaseURL == "":
		return fmt.Errorf("%w: DatabaseURL is required", ErrBadConfig)
	case c.NATS == nil && c.NATSURL == "":
		return fmt.Errorf("%w: NATSURL or NATS is required", ErrBadConfig)
	case !validIdent(c.SlotName):
		return fmt.Errorf("%w: SlotName %q must be lower-case letters, digits and underscores", ErrBadConfig, c.SlotName)
	case !validIdent(c.Publication):
		return fmt.Errorf("%w: Publication %q must be lower-case letters, digits and underscores", ErrBadConfig, c.Publication)
	case c.MaxMessageBytes < 4096:
		return fmt.Errorf("%w: MaxMessageBytes %d is below 4096", ErrBadConfig, c.MaxMessageBytes)
	case c.MaxBufferedBytes < c.MaxMessageBytes:
		return fmt.Errorf("%w: MaxBufferedBytes %d is below MaxMessageBytes %d", ErrBadConfig, c.MaxBufferedBytes, c.MaxMessageBytes)
	case c.HeartbeatInterval < 0, c.CheckpointInterval < 0, c.StandbyPollInterval < 0, c.TombstoneRetention < 0, c.MutationRetention < 0:
		return fmt.Errorf("%w: negative interval", ErrBadConfig)
	}
	return nil
}

// validIdent accepts what Postgres accepts as a replication slot name
// (lower-case letters, digits, underscore, at most 63 bytes); publication
// names are held to the same rule so they need no quoting.
func validIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

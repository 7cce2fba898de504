package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ripple-sync/ripple/catchup"
	"github.com/ripple-sync/ripple/gateway/auth"
)

// Defaults for Config fields left zero.
const (
	DefaultMaxFrameBytes        = 1 << 20
	DefaultOutboundQueue        = 1024
	DefaultSnapshotBufferLimit  = 10000
	DefaultBarrierTimeout       = time.Second
	DefaultHeartbeatTimeout     = 3 * time.Second
	DefaultMutationTimeout      = 5 * time.Second
	DefaultAuthTimeout          = 10 * time.Second
	DefaultWriteTimeout         = 10 * time.Second
	DefaultMaxMutationsInFlight = 64
)

// ErrBadConfig is returned by New for an unusable Config.
var ErrBadConfig = errors.New("gateway: bad config")

// Config configures a Gateway. Zero fields get the documented defaults.
type Config struct {
	// NATSURL is the NATS server to connect to. Ignored when NATS is set.
	NATSURL string
	// NATS is an existing connection to use instead of NATSURL. The
	// gateway installs its own disconnect, reconnect and error handlers on
	// it (it must see every gap, rule 9) and does not close it.
	NATS *nats.Conn
	// Catchup runs snapshots and resumes (required).
	Catchup *catchup.Catchup
	// Auth configures token verification (required: a secret or a JWKS).
	Auth auth.Config
	// MaxFrameBytes is the largest client frame accepted (default 1 MiB);
	// a larger one gets error too_large and the connection is closed with
	// code 1009.
	MaxFrameBytes int
	// OutboundQueue is how many frames may wait for one connection's
	// socket (default 1024). A connection whose live stream overflows it
	// gets error slow_client and is closed. The end of a catch-up (the live
	// commits buffered while the snapshot was read, bounded by
	// SnapshotBufferLimit) is queued in one piece beyond it.
	OutboundQueue int
	// SnapshotBufferLimit is how many live transaction parts one
	// subscription may buffer while its catch-up runs (default 10000); on
	// overflow the catch-up starts again.
	SnapshotBufferLimit int
	// BarrierTimeout is how long to wait for a barrier before asking again
	// (default 1s).
	BarrierTimeout time.Duration
	// HeartbeatTimeout is how long the gateway goes without an ingest
	// heartbeat before it resynchronises every subscription (default 3s).
	HeartbeatTimeout time.Duration
	// MutationTimeout bounds one mutation request to the writers (default
	// 5s); on timeout the client gets status rejected, code unavailable,
	// and sends the mutation again.
	MutationTimeout time.Duration
	// MaxMutationsInFlight bounds the mutations one connection has waiting
	// for a writer (default 64); the connection's reader waits beyond it.
	MaxMutationsInFlight int
	// AuthTimeout is how long a new connection may take to authenticate
	// (default 10s).
	AuthTimeout time.Duration
	// WriteTimeout bounds one socket write (default 10s).
	WriteTimeout time.Duration
	// CheckOrigin is passed to the WebSocket upgrader (default: accept any
	// origin; tokens, not cookies, authenticate).
	CheckOrigin func(r *http.Request) bool
	// Logger receives structured logs (default slog.Default()).
	Logger *slog.Logger
	// Registerer receives the gateway's metrics (default: none registered).
	Registerer prometheus.Registerer
}

func (c *Config) setDefaults() {
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.OutboundQueue == 0 {
		c.OutboundQueue = DefaultOutboundQueue
	}
	if c.SnapshotBufferLimit == 0 {
		c.SnapshotBufferLimit = DefaultSnapshotBufferLimit
	}
	if c.BarrierTimeout == 0 {
		c.BarrierTimeout = DefaultBarrierTimeout
	}
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	if c.MutationTimeout == 0 {
		c.MutationTimeout = DefaultMutationTimeout
	}
	if c.MaxMutationsInFlight == 0 {
		c.MaxMutationsInFlight = DefaultMaxMutationsInFlight
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = DefaultAuthTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

func (c *Config) validate() error {
	switch {
	case c.NATS == nil && c.NATSURL == "":
		return fmt.Errorf("%w: NATSURL or NATS is required", ErrBadConfig)
	case c.Catchup == nil:
		return fmt.Errorf("%w: Catchup is required", ErrBadConfig)
	case c.MaxFrameBytes < 1024:
		return fmt.Errorf("%w: MaxFrameBytes %d below 1024", ErrBadConfig, c.MaxFrameBytes)
	case c.OutboundQueue < 16:
		return fmt.Errorf("%w: OutboundQueue %d below 16", ErrBadConfig, c.OutboundQueue)
	case c.SnapshotBufferLimit < 1:
		return fmt.Errorf("%w: SnapshotBufferLimit must be positive", ErrBadConfig)
	case c.BarrierTimeout < 0 || c.HeartbeatTimeout < 0 || c.MutationTimeout < 0 || c.AuthTimeout < 0 || c.WriteTimeout < 0:
		return fmt.Errorf("%w: negative timeout", ErrBadConfig)
	case c.MaxMutationsInFlight < 1:
		return fmt.Errorf("%w: MaxMutationsInFlight must be positive", ErrBadConfig)
	}
	return nil
}

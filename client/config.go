package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// Config configures a Client. The zero value of every optional field selects
// the documented default.
type Config struct {
	// URL is the gateway's WebSocket endpoint, e.g. ws://127.0.0.1:8080/v1/ws.
	// Required.
	URL string
	// Token is the JWT sent in the auth frame. Ignored when TokenFunc is set.
	Token string
	// TokenFunc, when set, is called for a token before every connection
	// attempt, after a token_expired error, and shortly before the current
	// token expires (the fresh token is then sent on the live connection).
	// One of Token and TokenFunc is required.
	TokenFunc func(ctx context.Context) (string, error)
	// ClientID identifies this client's mutations (mutation ids are per
	// client id). Default: a random id, stable for the Client's life. Set it
	// (together with a persistent PendingStore) to keep pending mutations
	// across process restarts.
	ClientID string
	// ReconnectMin and ReconnectMax bound the exponential reconnect backoff
	// (with jitter). Defaults 100ms and 5s.
	ReconnectMin time.Duration
	ReconnectMax time.Duration
	// DialTimeout bounds the WebSocket handshake plus authentication.
	// Default 10s.
	DialTimeout time.Duration
	// PingInterval is how often the client pings the gateway; a connection
	// that delivers no frame for three intervals is considered dead and
	// replaced. Default 15s; negative disables pings.
	PingInterval time.Duration
	// MaxFrameSize is the largest server frame accepted. Default 64 MiB.
	MaxFrameSize int64
	// Logger receives the client's structured logs. Default slog.Default().
	Logger *slog.Logger
	// PendingStore keeps pending mutations and allocates mutation ids.
	// Default: a new in-memory store.
	PendingStore PendingStore
	// Background makes Dial return at once and connect in the background
	// (offline-first start). By default Dial returns once the first
	// connection is authenticated, or with the error that prevented it.
	Background bool
}

// ErrConfig is returned by Dial for an invalid Config.
var ErrConfig = errors.New("client: invalid config")

func (c *Config) setDefaults() {
	if c.ClientID == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		c.ClientID = "c-" + hex.EncodeToString(b[:])
	}
	if c.ReconnectMin <= 0 {
		c.ReconnectMin = 100 * time.Millisecond
	}
	if c.ReconnectMax <= 0 {
		c.ReconnectMax = 5 * time.Second
	}
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = c.ReconnectMin
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.PingInterval == 0 {
		c.PingInterval = 15 * time.Second
	}
	if c.MaxFrameSize <= 0 {
		c.MaxFrameSize = 64 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.PendingStore == nil {
		c.PendingStore = NewMemoryStore()
	}
}

func (c *Config) validate() error {
	if c.URL == "" {
		return fmt.Errorf("%w: URL is required", ErrConfig)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		return fmt.Errorf("%w: URL: %v", ErrConfig, err)
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("%w: URL scheme %q (want ws or wss)", ErrConfig, u.Scheme)
	}
	if c.Token == "" && c.TokenFunc == nil {
		return fmt.Errorf("%w: Token or TokenFunc is required", ErrConfig)
	}
	return nil
}

// SubOption configures a subscription.
type SubOption func(*subOptions)

type subOptions struct {
	columns  []string
	keyCols  []string
	onChange []func(Change)
}

// Columns restricts the subscription to the given columns (primary key
// columns are always included).
func Columns(cols ...string) SubOption {
	return func(o *subOptions) { o.columns = append([]string(nil), cols...) }
}

// KeyColumns names the table's primary key columns for a gateway that does not
// send them in snapshot_begin. Normally not needed.
func KeyColumns(cols ...string) SubOption {
	return func(o *subOptions) { o.keyCols = append([]string(nil), cols...) }
}

// OnChangeFunc registers fn before the subscription starts, so it also sees
// the initial rows (as inserts at the first ready). See
// Subscription.OnChange.
func OnChangeFunc(fn func(Change)) SubOption {
	return func(o *subOptions) { o.onChange = append(o.onChange, fn) }
}

// MutateOption configures one mutation.
type MutateOption func(*mutateOptions)

type mutateOptions struct {
	noOptimistic bool
}

// NoOptimistic sends the mutation without applying its optimistic function to
// the local view.
func NoOptimistic() MutateOption {
	return func(o *mutateOptions) { o.noOptimistic = true }
}

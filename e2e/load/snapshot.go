package load

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
)

// SnapshotConfig configures Snapshot.
type SnapshotConfig struct {
	// URL is the gateway's WebSocket URL (required).
	URL string
	// Token is the token presented (required).
	Token string
	// Table and Org name the subscription (Table default DefaultTable; Org
	// required).
	Table string
	Org   string
	// SourceAddr is the local IP address to connect from (default
	// 127.0.0.2).
	SourceAddr string
	// Decode makes the client decode every snapshot frame with
	// encoding/json (into its operations, each left as raw JSON). Without
	// it snapshot frames are only scanned to count their operations, which
	// matches the COPY side of the comparison (bytes to io.Discard).
	Decode bool
}

// SnapshotResult is what one snapshot delivered.
type SnapshotResult struct {
	// Rows is the number of snapshot operations received before ready.
	Rows int64 `json:"rows"`
	// Frames and Bytes count the snapshot frames and their bytes.
	Frames int64 `json:"frames"`
	Bytes  int64 `json:"bytes"`
	// Mode is the snapshot_begin mode.
	Mode string `json:"mode"`
	// Seconds is the time from sending subscribe to receiving ready.
	Seconds float64 `json:"seconds"`
	// RowsPerSecond is Rows / Seconds.
	RowsPerSecond float64 `json:"rows_per_second"`
	// ClientCPUSeconds is the CPU time the client process used in all
	// (set by ripple-load, not by Snapshot).
	ClientCPUSeconds float64 `json:"client_cpu_seconds,omitempty"`
}

// Snapshot opens one connection, subscribes to (Table, Org) without a cursor
// and reads the full snapshot until ready, counting its operations (see
// SnapshotConfig.Decode).
func Snapshot(ctx context.Context, cfg SnapshotConfig) (SnapshotResult, error) {
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.SourceAddr == "" {
		cfg.SourceAddr = "127.0.0.2"
	}
	if cfg.URL == "" || cfg.Token == "" || cfg.Org == "" {
		return SnapshotResult{}, fmt.Errorf("%w: URL, Token and Org are required", ErrBadConfig)
	}
	ip := net.ParseIP(cfg.SourceAddr)
	if ip == nil {
		return SnapshotResult{}, fmt.Errorf("%w: source address %q is not an IP", ErrBadConfig, cfg.SourceAddr)
	}
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	d := &websocket.Dialer{NetDialContext: nd.DialContext, Subprotocols: []string{Subprotocol}, HandshakeTimeout: time.Minute}
	ws, resp, err := d.DialContext(ctx, cfg.URL, http.Header{})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return SnapshotResult{}, fmt.Errorf("load: dial: %w", err)
	}
	defer ws.Close()
	stop := context.AfterFunc(ctx, func() { ws.Close() })
	defer stop()
	if err := writeJSON(ws, map[string]any{"type": "auth", "token": cfg.Token}); err != nil {
		return SnapshotResult{}, err
	}
	var res SnapshotResult
	var buf []byte
	authed := false
	var start time.Time
	for {
		buf, err = readMessage(ws, buf[:0])
		if err != nil {
			return res, fmt.Errorf("load: snapshot read: %w", err)
		}
		if !cfg.Decode && bytes.HasPrefix(buf, prefixSnapshot) {
			if n, ok := countOps(buf); ok {
				res.Rows += int64(n)
				res.Frames++
				res.Bytes += int64(len(buf))
				continue
			}
		}
		f, err := ParseFrame(buf)
		if err != nil {
			return res, err
		}
		switch f.Type {
		case "auth_ok":
			if authed {
				continue
			}
			authed = true
			start = time.Now()
			if err := writeJSON(ws, map[string]any{"type": "subscribe", "id": "snap", "table": cfg.Table, "org": cfg.Org}); err != nil {
				return res, err
			}
		case "snapshot_begin":
			res.Mode = f.Mode
		case "snapshot":
			res.Rows += int64(f.Ops)
			res.Frames++
			res.Bytes += int64(len(buf))
		case "ready":
			res.Seconds = time.Since(start).Seconds()
			if res.Seconds > 0 {
				res.RowsPerSecond = float64(res.Rows) / res.Seconds
			}
			return res, nil
		case "error":
			return res, fmt.Errorf("load: gateway error %s: %s", f.Code, f.Message)
		}
	}
}

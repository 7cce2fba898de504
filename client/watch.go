package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// WatchConfig configures Watch.
type WatchConfig struct {
	// URL is the gateway's WebSocket endpoint (ws://HOST:PORT/v1/ws).
	URL string
	// Token is the client token.
	Token string
	// Table and Org name what to watch.
	Table string
	Org   string
	// Logger receives the client's logs. Default slog.Default().
	Logger *slog.Logger
}

// WatchLine is one line Watch prints.
type WatchLine struct {
	Op    string `json:"op"`
	Table string `json:"table"`
	Org   string `json:"org"`
	Row   Row    `json:"row,omitempty"`
	Key   Row    `json:"key,omitempty"`
	LSN   string `json:"lsn"`
}

// Watch subscribes to cfg.Table of cfg.Org and writes to w, as one JSON object
// per line, first every row of the initial state (as inserts, in key order)
// and then every change, in commit order:
//
//	{"op":"insert"|"update","table":..,"org":..,"row":{...},"lsn":".."}
//	{"op":"delete","table":..,"org":..,"key":{...},"lsn":".."}
//
// It reconnects and resumes on its own and returns nil when ctx ends, or the
// error that ended the subscription (a *ServerError such as forbidden), the
// client (ErrUnauthorized) or a write to w.
func Watch(ctx context.Context, w io.Writer, cfg WatchConfig) error {
	if cfg.Table == "" || cfg.Org == "" {
		return fmt.Errorf("%w: Table and Org are required", ErrConfig)
	}
	c, err := Dial(ctx, Config{URL: cfg.URL, Token: cfg.Token, Logger: cfg.Logger})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer c.Close()
	var (
		mu     sync.Mutex
		werr   error
		failed = make(chan struct{})
	)
	enc := json.NewEncoder(w)
	print := func(ch Change) {
		mu.Lock()
		defer mu.Unlock()
		if werr != nil {
			return
		}
		line := WatchLine{Op: ch.Op, Table: ch.Table, Org: ch.Org, LSN: ch.LSN.String()}
		if ch.Row != nil {
			line.Row = ch.Row
		} else {
			line.Key = ch.Key
		}
		if werr = enc.Encode(line); werr != nil {
			close(failed)
		}
	}
	sub, err := c.Subscribe(ctx, cfg.Table, cfg.Org, OnChangeFunc(print))
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case <-failed:
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("client: watch: write: %w", werr)
	case <-c.Done():
		if err := c.Err(); err != nil && !errors.Is(err, ErrClosed) {
			return err
		}
		return nil
	case <-sub.ws.endCh:
		return sub.Err()
	}
}

package main

import (
	"context"
	"fmt"
	"net/url"

	"github.com/ripple-sync/ripple/client"
)

func runWatch(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "watch", "--gateway ws://HOST:PORT --token TOKEN --table T --org O")
	gw := fs.String("gateway", "ws://127.0.0.1:8080", "gateway URL")
	token := fs.String("token", "", "client token (see `ripple token`)")
	table := fs.String("table", "", "table to watch")
	org := fs.String("org", "", "organisation to watch")
	if _, err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if *token == "" || *table == "" || *org == "" {
		fs.Usage()
		return fmt.Errorf("%w: --token, --table and --org are required", errUsage)
	}
	u, err := url.Parse(*gw)
	if err != nil {
		return fmt.Errorf("%w: --gateway: %v", errUsage, err)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/ws"
	}
	return client.Watch(ctx, env.stdout, client.WatchConfig{URL: u.String(), Token: *token, Table: *table, Org: *org, Logger: env.logger})
}

package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestDeployNATSConfigs parses every NATS config in deploy/nats the way
// nats-server does.
func TestDeployNATSConfigs(t *testing.T) {
	for _, name := range []string{"region-a.conf", "region-b.conf"} {
		t.Run(name, func(t *testing.T) {
			setNATSPasswords(t)
			t.Setenv("RIPPLE_NATS_NAME", "a-1")
			opts, err := server.ProcessConfigFile(filepath.Join("..", "deploy", "nats", name))
			if err != nil {
				t.Fatalf("parse %s: %v", name, err)
			}
			if opts.Cluster.Name == "" || opts.Gateway.Name == "" || len(opts.Gateway.Gateways) != 2 {
				t.Fatalf("%s: want a cluster and two gateways, got cluster %q gateway %q (%d remotes)",
					name, opts.Cluster.Name, opts.Gateway.Name, len(opts.Gateway.Gateways))
			}
			if len(opts.Users) != 4 {
				t.Fatalf("%s: want 4 users (ingest, gateway, writer, sys), got %d", name, len(opts.Users))
			}
		})
	}
}

func setNATSPasswords(t *testing.T) {
	for _, u := range []string{"INGEST", "GATEWAY", "WRITER", "SYS"} {
		t.Setenv("RIPPLE_NATS_"+u+"_PASSWORD", "pw-"+u)
	}
}

// TestDeployNATSPermissions runs a server with the deployment's accounts and
// checks that only the ingest can publish data, gateways can subscribe and ask
// for barriers and mutations, and the writer can answer mutation requests.
func TestDeployNATSPermissions(t *testing.T) {
	setNATSPasswords(t)
	dir := t.TempDir()
	acc, err := os.ReadFile(filepath.Join("..", "deploy", "nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "accounts.conf"), acc, 0o644); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:-1\ninclude ./accounts.conf\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(s.Shutdown)

	connect := func(user string) (*nats.Conn, chan error) {
		errs := make(chan error, 16)
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, "pw-"+map[string]string{
			"ingest": "INGEST", "gateway": "GATEWAY", "writer": "WRITER"}[user]),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		if err != nil {
			t.Fatalf("connect %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		return nc, errs
	}
	ingest, _ := connect("ingest")
	gw, gwErrs := connect("gateway")
	wr, _ := connect("writer")

	// gateway subscribes to data; ingest publishes; it arrives.
	sub, err := gw.SubscribeSync("sync.acme.todos")
	if err != nil {
		t.Fatal(err)
	}
	if err := gw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := ingest.Publish("sync.acme.todos", []byte("data")); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("data from ingest did not reach the gateway: %v", err)
	}

	// gateway may not publish data: the server refuses with a permissions violation.
	if err := gw.Publish("sync.acme.todos", []byte("forged")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-gwErrs:
		if !errors.Is(err, nats.ErrPermissionViolation) && !isPermErr(err) {
			t.Fatalf("want permissions violation, got %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("gateway publishing on sync.> was not refused")
	}
	if _, err := sub.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatal("a message forged by a gateway was delivered")
	}

	// writer answers a mutation request from a gateway.
	if _, err := wr.QueueSubscribe("ripple.mutate", "ripple-writers", func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	if err := wr.Flush(); err != nil {
		t.Fatal(err)
	}
	reply, err := gw.Request("ripple.mutate", []byte("m"), 5*time.Second)
	if err != nil || string(reply.Data) != "ok" {
		t.Fatalf("mutation request: %v %q", err, replyData(reply))
	}
	// ingest answers a barrier request.
	if _, err := ingest.Subscribe("ripple.barrier", func(m *nats.Msg) { _ = m.Respond([]byte("d")) }); err != nil {
		t.Fatal(err)
	}
	if err := ingest.Flush(); err != nil {
		t.Fatal(err)
	}
	if reply, err := gw.Request("ripple.barrier", []byte("b"), 5*time.Second); err != nil || string(reply.Data) != "d" {
		t.Fatalf("barrier request: %v", err)
	}
}

func isPermErr(err error) bool {
	return err != nil && (errors.Is(err, nats.ErrPermissionViolation) ||
		strings.Contains(strings.ToLower(err.Error()), "permissions violation"))
}

func replyData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

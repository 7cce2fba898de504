package testenv

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// natsReadyTimeout bounds server start-up and route/gateway formation.
const natsReadyTimeout = 10 * time.Second

// NATS is an embedded nats-server (core NATS, no JetStream) listening on
// 127.0.0.1. Its methods are safe for concurrent use.
type NATS struct {
	mu   sync.Mutex
	opts *server.Options // template options with fixed ports
	srv  *server.Server
}

// StartNATS starts a standalone embedded nats-server on a random port and
// shuts it down when the test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	opts := baseNATSOptions("nats")
	n, err := startNATS(opts)
	if err != nil {
		t.Fatalf("testenv: start nats: %v", err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

func baseNATSOptions(name string) *server.Options {
	return &server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		NoLog:      true,
		NoSigs:     true,
		// Default max payload (1 MiB) left as is.
	}
}

func startNATS(opts *server.Options) (*NATS, error) {
	n := &NATS{opts: opts}
	if err := n.start(); err != nil {
		return nil, err
	}
	return n, nil
}

// start launches a server from n.opts and pins its client port so that a
// restart reuses it.
func (n *NATS) start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	opts := n.opts.Clone()
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("testenv: new nats server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(natsReadyTimeout) {
		s.Shutdown()
		return fmt.Errorf("testenv: nats server %s not ready within %v", opts.ServerName, natsReadyTimeout)
	}
	if addr, ok := s.Addr().(*net.TCPAddr); ok {
		n.opts.Port = addr.Port
	}
	n.srv = s
	return nil
}

// URL returns the client URL, nats://127.0.0.1:PORT. It stays the same
// across Restart.
func (n *NATS) URL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port)
}

// Port returns the client port on 127.0.0.1. It stays the same across Restart.
func (n *NATS) Port() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opts.Port
}

// Name returns the server name (e.g. "A-0" in a super-cluster).
func (n *NATS) Name() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opts.ServerName
}

// ClusterName returns the name of the cluster the server belongs to ("" when
// standalone).
func (n *NATS) ClusterName() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opts.Cluster.Name
}

// Server returns the running embedded server (nil after Shutdown).
func (n *NATS) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Shutdown stops the server and waits until it is down. It is idempotent.
func (n *NATS) Shutdown() {
	n.mu.Lock()
	s := n.srv
	n.srv = nil
	n.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// Restart shuts the server down and starts a new one with the same ports
// (client, cluster, gateway) and routes. In a cluster it waits until the
// restarted server has its routes back.
func (n *NATS) Restart(t testing.TB) {
	t.Helper()
	n.Shutdown()
	deadline := time.Now().Add(natsReadyTimeout)
	var err error
	for {
		// The port may be briefly unavailable right after shutdown.
		if err = n.start(); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("testenv: restart nats: %v", err)
	}
	n.mu.Lock()
	want := len(n.opts.Routes)
	n.mu.Unlock()
	if want > 0 {
		if err := waitFor(natsReadyTimeout, func() error { return routesReady(n, want) }); err != nil {
			t.Fatalf("testenv: restart nats: %v", err)
		}
	}
}

// Connect opens a client connection (closed when the test ends).
func (n *NATS) Connect(t testing.TB, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.URL(), opts...)
	if err != nil {
		t.Fatalf("testenv: connect to nats %s: %v", n.URL(), err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// StartNATSCluster starts n embedded servers forming one cluster (named "C")
// with full-mesh routes, and waits until every server sees the other n-1.
func StartNATSCluster(t testing.TB, n int) []*NATS {
	t.Helper()
	if n < 1 {
		t.Fatalf("testenv: StartNATSCluster: n=%d, want >= 1", n)
	}
	cl, err := startCluster("C", n, nil)
	t.Cleanup(func() { shutdownAll(cl) })
	if err != nil {
		t.Fatalf("testenv: start nats cluster: %v", err)
	}
	return cl
}

// StartSuperCluster starts two clusters "A" and "B" of n servers each, joined
// by gateways, and waits until routes and gateways are connected.
func StartSuperCluster(t testing.TB, n int) (a, b []*NATS) {
	t.Helper()
	if n < 1 {
		t.Fatalf("testenv: StartSuperCluster: n=%d, want >= 1", n)
	}
	gwA, err := freePorts(n)
	if err == nil {
		var gwB []int
		gwB, err = freePorts(n)
		if err == nil {
			gws := map[string][]int{"A": gwA, "B": gwB}
			a, err = startCluster("A", n, gws)
			t.Cleanup(func() { shutdownAll(a) })
			if err == nil {
				b, err = startCluster("B", n, gws)
				t.Cleanup(func() { shutdownAll(b) })
			}
		}
	}
	if err == nil {
		err = waitFor(natsReadyTimeout, func() error {
			for _, s := range append(append([]*NATS(nil), a...), b...) {
				srv := s.Server()
				if srv == nil {
					return errors.New("server down")
				}
				if got := srv.NumOutboundGateways(); got < 1 {
					return fmt.Errorf("%s has %d outbound gateways", s.Name(), got)
				}
			}
			return nil
		})
	}
	if err != nil {
		t.Fatalf("testenv: start super-cluster: %v", err)
	}
	return a, b
}

func shutdownAll(ns []*NATS) {
	for _, n := range ns {
		if n != nil {
			n.Shutdown()
		}
	}
}

func freePorts(n int) ([]int, error) {
	// Hold all listeners open at once so the ports are distinct.
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("testenv: pick free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func portURLs(scheme string, ports []int, skip int) []*url.URL {
	var us []string
	for i, p := range ports {
		if i != skip {
			us = append(us, fmt.Sprintf("%s://127.0.0.1:%d", scheme, p))
		}
	}
	if len(us) == 0 {
		return nil
	}
	return server.RoutesFromStr(strings.Join(us, ","))
}

// startCluster starts a cluster named name of n servers. gateways, when not
// nil, maps every cluster name of the super-cluster to its gateway ports.
// On error the servers started so far are returned too (to be shut down).
func startCluster(name string, n int, gateways map[string][]int) ([]*NATS, error) {
	var lastErr error
	for range 3 { // retry when a picked port got taken meanwhile
		cports, err := freePorts(n)
		if err != nil {
			return nil, err
		}
		var out []*NATS
		for i := range n {
			o := baseNATSOptions(fmt.Sprintf("%s-%d", name, i))
			if n > 1 || gateways != nil {
				o.Cluster = server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: cports[i]}
				o.Routes = portURLs("nats-route", cports, i)
			}
			if gateways != nil {
				o.Gateway = server.GatewayOpts{Name: name, Host: "127.0.0.1", Port: gateways[name][i]}
				for gn, gp := range gateways {
					if gn == name {
						continue
					}
					o.Gateway.Gateways = append(o.Gateway.Gateways,
						&server.RemoteGatewayOpts{Name: gn, URLs: portURLs("nats", gp, -1)})
				}
			}
			s, err := startNATS(o)
			if err != nil {
				lastErr = err
				break
			}
			out = append(out, s)
		}
		if len(out) < n {
			shutdownAll(out)
			continue
		}
		err = waitFor(natsReadyTimeout, func() error {
			for _, s := range out {
				if err := routesReady(s, n-1); err != nil {
					return err
				}
			}
			return nil
		})
		return out, err
	}
	return nil, lastErr
}

func routesReady(n *NATS, want int) error {
	srv := n.Server()
	if srv == nil {
		return fmt.Errorf("%s is down", n.Name())
	}
	if got := srv.NumRemotes(); got < want {
		return fmt.Errorf("%s has %d of %d routes", n.Name(), got, want)
	}
	return nil
}

// waitFor polls cond until it returns nil or d passes.
func waitFor(d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %v: %w", d, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

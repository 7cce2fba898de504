package load

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/schema"
	"github.com/ripple-sync/ripple/testenv"
)

// This file is the benchmark harness: it builds the binaries, starts the
// topology as processes and talks to the load generator process.

// benchSizes are the sizes of a benchmark run, from the environment.
type benchSizes struct {
	clients, orgs int
	phase         time.Duration
	snapshotRows  int
}

func sizes(b *testing.B) benchSizes {
	return benchSizes{
		clients:      envInt(b, "RIPPLE_LOAD_CLIENTS", 10000),
		orgs:         envInt(b, "RIPPLE_LOAD_ORGS", 100),
		phase:        time.Duration(envInt(b, "RIPPLE_LOAD_SECONDS", 20)) * time.Second,
		snapshotRows: envInt(b, "RIPPLE_SNAPSHOT_ROWS", 1_000_000),
	}
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return v
}

// binaries are the programs a benchmark runs as processes.
type binaries struct{ ripple, load, bare, pprof string }

var buildOnce struct {
	sync.Once
	bins binaries
	err  error
}

// buildBinaries builds ripple, ripple-load and bare-ws once per test binary.
func buildBinaries(b *testing.B) binaries {
	buildOnce.Do(func() {
		root, err := filepath.Abs("../..")
		if err != nil {
			buildOnce.err = err
			return
		}
		dir, err := os.MkdirTemp("", "ripple-bench-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(gobin); err != nil {
			gobin = "go"
		}
		cmd := exec.Command(gobin, "build", "-o", dir+string(filepath.Separator),
			"./cmd/ripple", "./e2e/cmd/ripple-load", "./e2e/cmd/bare-ws", "./e2e/cmd/gateway-pprof")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		buildOnce.bins = binaries{
			ripple: filepath.Join(dir, "ripple"),
			load:   filepath.Join(dir, "ripple-load"),
			bare:   filepath.Join(dir, "bare-ws"),
			pprof:  filepath.Join(dir, "gateway-pprof"),
		}
	})
	if buildOnce.err != nil {
		b.Fatal(buildOnce.err)
	}
	return buildOnce.bins
}

func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitHTTP polls url until it answers 200, or fails the benchmark.
func waitHTTP(b *testing.B, url string, p *testenv.Process, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if p.Exited() {
			b.Fatalf("%s exited: %s", p.Name(), tail(p.Output(), 2000))
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s not ready at %s after %v: %v", p.Name(), url, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// stack is Postgres, NATS, an ingest process and a gateway process.
type stack struct {
	pg      *testenv.Postgres
	dbURL   string
	nats    *testenv.NATS
	ingest  *testenv.Process
	gateway *testenv.Process
	wsURL   string
	secret  string
	metrics string // the gateway's Prometheus endpoint
	base    string // http://<gateway address>
	// tap records, for every last chunk of a part published by the ingest,
	// the time from commit to its arrival at a NATS subscriber in this
	// process: the share of the latency spent before the gateway.
	tap Histogram
}

// startStack starts Postgres, lets seed prepare the database, then starts
// NATS, `ripple ingest` and `ripple gateway` and waits until both are ready.
func startStack(b *testing.B, bins binaries, seed func(ctx context.Context, dbURL string) error) *stack {
	s := &stack{secret: "bench-secret-0123456789abcdef"}
	s.pg = testenv.StartPostgres(b, testenv.WithName("bench"), testenv.WithSetting("max_connections", "200"))
	s.dbURL = s.pg.CreateDatabase(b)
	if err := seed(context.Background(), s.dbURL); err != nil {
		b.Fatal(err)
	}
	s.nats = testenv.StartNATS(b)
	nc := s.nats.Connect(b)
	sub, err := nc.Subscribe(schema.SubjectPrefix+".>", func(m *nats.Msg) {
		now := time.Now()
		var p struct {
			K    schema.Kind `json:"k"`
			Last bool        `json:"last"`
			Time time.Time   `json:"time"`
		}
		if json.Unmarshal(m.Data, &p) == nil && p.K == schema.KindPart && p.Last && !p.Time.IsZero() {
			s.tap.Record(now.Sub(p.Time))
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	env := append(os.Environ(), "RIPPLE_LOG_LEVEL=warn")

	ingestAddr := freeAddr(b)
	cmd := exec.Command(bins.ripple, "ingest", "--database-url", s.dbURL, "--nats-url", s.nats.URL(),
		"--http-addr", ingestAddr, "--slot", "bench")
	cmd.Env = env
	s.ingest = testenv.StartProcess(b, "ingest", cmd)
	waitHTTP(b, "http://"+ingestAddr+"/readyz", s.ingest, time.Minute)

	gwAddr := freeAddr(b)
	cmd = exec.Command(bins.ripple, "gateway", "--nats-url", s.nats.URL(), "--database-url", s.dbURL,
		"--jwt-secret", s.secret, "--http-addr", gwAddr)
	if pprofDir() != "" {
		cmd = exec.Command(bins.pprof, "--nats-url", s.nats.URL(), "--database-url", s.dbURL,
			"--jwt-secret", s.secret, "--http-addr", gwAddr)
	}
	cmd.Env = env
	s.gateway = testenv.StartProcess(b, "gateway", cmd)
	waitHTTP(b, "http://"+gwAddr+"/readyz", s.gateway, time.Minute)
	s.wsURL = "ws://" + gwAddr + "/v1/ws"
	s.metrics = "http://" + gwAddr + "/metrics"
	s.base = "http://" + gwAddr
	return s
}

// loadProc is a running ripple-load process.
type loadProc struct {
	p      *testenv.Process
	stdin  io.WriteCloser
	events chan json.RawMessage
}

type loadEvent struct {
	Event   string         `json:"event"`
	Ready   int64          `json:"ready"`
	Seconds float64        `json:"seconds"`
	Stats   Stats          `json:"stats"`
	Result  SnapshotResult `json:"result"`
	Message string         `json:"message"`
}

// startLoad runs ripple-load with args and returns once it printed its
// first event (ready, or the snapshot result).
func startLoad(b *testing.B, bins binaries, name string, args ...string) (*loadProc, loadEvent) {
	cmd := exec.Command(bins.load, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	l := &loadProc{stdin: stdin, events: make(chan json.RawMessage, 16)}
	l.p = testenv.StartProcess(b, name, cmd)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			l.events <- append(json.RawMessage(nil), sc.Bytes()...)
		}
		close(l.events)
	}()
	go func() { <-l.p.Done(); pw.Close() }()
	return l, l.next(b, 30*time.Minute)
}

func (l *loadProc) next(b *testing.B, timeout time.Duration) loadEvent {
	select {
	case raw, ok := <-l.events:
		if !ok {
			b.Fatalf("%s ended: %s", l.p.Name(), tail(l.p.Output(), 3000))
		}
		var ev loadEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			b.Fatalf("%s printed %q: %v", l.p.Name(), tail(string(raw), 200), err)
		}
		if ev.Event == "error" {
			b.Fatalf("%s: %s", l.p.Name(), ev.Message)
		}
		return ev
	case <-time.After(timeout):
		b.Fatalf("%s: no event in %v: %s", l.p.Name(), timeout, tail(l.p.Output(), 3000))
	}
	return loadEvent{}
}

// stats asks the load process for its counters.
func (l *loadProc) stats(b *testing.B) Stats {
	if _, err := io.WriteString(l.stdin, "stats\n"); err != nil {
		b.Fatalf("%s: %v: %s", l.p.Name(), err, tail(l.p.Output(), 2000))
	}
	return l.next(b, time.Minute).Stats
}

// quit ends the load process and waits for it.
func (l *loadProc) quit(b *testing.B) {
	_, _ = io.WriteString(l.stdin, "quit\n")
	l.stdin.Close()
	select {
	case <-l.p.Done():
	case <-time.After(2 * time.Minute):
		b.Fatalf("%s did not quit", l.p.Name())
	}
}

// stableRSS polls the RSS of pid until three readings 500 ms apart are
// within 1% of each other (or 30 s passed) and returns the last.
func stableRSS(b *testing.B, pid int) int64 {
	deadline := time.Now().Add(30 * time.Second)
	var prev int64
	stable := 0
	for {
		rss, err := ProcRSS(pid)
		if err != nil {
			b.Fatal(err)
		}
		if prev > 0 && abs(rss-prev) <= prev/100 {
			stable++
		} else {
			stable = 0
		}
		prev = rss
		if stable >= 2 || time.Now().After(deadline) {
			return rss
		}
		time.Sleep(500 * time.Millisecond) // sampling interval of the measurement
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

func cpuOf(b *testing.B, pid int) time.Duration {
	d, err := ProcCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// clientsPerOrg returns how many of n connections subscribe to each org
// (connection i takes orgs[i % len(orgs)]).
func clientsPerOrg(orgs []string, n int) map[string]int64 {
	m := make(map[string]int64, len(orgs))
	for i := 0; i < n; i++ {
		m[orgs[i%len(orgs)]]++
	}
	return m
}

func srcArg(addrs []string) string { return strings.Join(addrs, ",") }

func ctxTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// scrape reads the named unlabelled metrics from a Prometheus text endpoint.
func scrape(b *testing.B, url string, names ...string) map[string]float64 {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && want[f[0]] {
			v, err := strconv.ParseFloat(f[1], 64)
			if err == nil {
				out[f[0]] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return out
}

// goMemNames are the Go runtime metrics logged next to RSS.
var goMemNames = []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes"}

// pprofDir is RIPPLE_BENCH_PPROF: when set, the gateway runs as
// e2e/cmd/gateway-pprof (the same gateway with /debug/pprof/) and profiles
// are saved in that directory.
func pprofDir() string { return os.Getenv("RIPPLE_BENCH_PPROF") }

// saveProfile fetches a profile from the gateway into pprofDir()/name.
func saveProfile(st *stack, path, name string) error {
	if pprofDir() == "" {
		return nil
	}
	resp, err := http.Get(st.base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(filepath.Join(pprofDir(), name))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

package ingest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
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

// buildIngestCmd builds internal/ingestcmd without the race detector, so
// memory and speed are those of a production build.
func buildIngestCmd(t testing.TB) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ingestcmd")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, "./internal/ingestcmd")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build ingestcmd: %v\n%s", err, b)
	}
	return out
}

// vmHWM returns a process's peak resident set size in bytes.
func vmHWM(t testing.TB, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestLargeTransaction: one transaction inserting rows of 100
// organisations streams out in ordered chunks, the last one marked, with
// the ingest process's peak RSS under 200 MiB. RIPPLE_LARGE_TX_ROWS sets
// the row count (default 1,000,000, the figure; about 10 s here).
func TestLargeTransaction(t *testing.T) {
	rows := 1_000_000
	if v := os.Getenv("RIPPLE_LARGE_TX_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatal(err)
		}
		rows = n
	}
	const orgs = 100
	e := newEnv(t)
	bin := buildIngestCmd(t)
	// A buffer budget well below 100 parts x 256 KiB, so the largest parts
	// also go out early.
	proc := testenv.StartProcess(t, "ingestcmd", exec.Command(bin, "-database-url", e.url, "-nats-url", e.nats.URL(),
		"-slot", e.slot, "-max-buffered-bytes", strconv.Itoa(8<<20), "-cpuprofile", os.Getenv("RIPPLE_BENCH_CPUPROFILE")))

	nc := e.nats.Connect(t)
	type chunkKey struct {
		subject string
		xid     schema.XID8
	}
	var mu sync.Mutex
	var (
		received int
		next     = map[chunkKey]int{} // next expected seq
		lasts    = map[string]schema.RawPart{}
		maxD     schema.LSN
		errs     []string
	)
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		var p schema.RawPart
		if err := json.Unmarshal(m.Data, &p); err != nil {
			return // not ours (requests, replies)
		}
		mu.Lock()
		defer mu.Unlock()
		switch p.K {
		case schema.KindHeartbeat:
			var h schema.Heartbeat
			_ = json.Unmarshal(m.Data, &h)
			maxD = max(maxD, h.D)
		case schema.KindPart:
			k := chunkKey{m.Subject, p.XID}
			if p.Seq != next[k] {
				errs = append(errs, fmt.Sprintf("%s: seq %d, want %d", m.Subject, p.Seq, next[k]))
			}
			next[k]++
			if len(m.Data) > 256<<10 {
				errs = append(errs, fmt.Sprintf("%s: message of %d bytes", m.Subject, len(m.Data)))
			}
			received += bytes.Count(p.Ops, []byte(`{"op":"insert"`))
			if p.Last {
				if _, dup := lasts[m.Subject]; dup {
					errs = append(errs, m.Subject+": two last chunks")
				}
				lasts[m.Subject] = p
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = sub.SetPendingLimits(-1, -1)
	waitFor(t, 20*time.Second, "the ingest streaming", func() bool { mu.Lock(); defer mu.Unlock(); return maxD > 0 })

	start := time.Now()
	end := e.txn(t, fmt.Sprintf(`INSERT INTO todos (org_id, id, title)
		SELECT 'org' || (g %% %d), g, 'a title for row ' || g FROM generate_series(1, %d) g`, orgs, rows))
	inserted := time.Since(start)
	waitFor(t, 5*time.Minute, "every row", func() bool { mu.Lock(); defer mu.Unlock(); return maxD >= end })
	streamed := time.Since(start)

	mu.Lock()
	defer mu.Unlock()
	for _, e := range errs {
		t.Error(e)
	}
	if received != rows {
		t.Fatalf("received %d rows, want %d", received, rows)
	}
	if len(lasts) != orgs {
		t.Fatalf("last chunks on %d subjects, want %d", len(lasts), orgs)
	}
	chunks := 0
	for k, n := range next {
		chunks += n
		p := lasts[k.subject]
		if p.LSN == 0 || p.LSN > end || len(p.Subjects) != 1 || p.Subjects[0] != k.subject {
			t.Errorf("%s: bad last chunk lsn %v subjects %v", k.subject, p.LSN, p.Subjects)
		}
	}
	hwm := vmHWM(t, proc.Pid())
	if err := proc.Stop(); err != nil {
		t.Log(err)
	}
	t.Logf("%d rows in %d chunks: insert %v, streamed %v after the insert began; ingest peak RSS %d MiB",
		rows, chunks, inserted, streamed, hwm>>20)
	if chunks <= orgs {
		t.Errorf("%d chunks for %d parts: nothing was chunked", chunks, orgs)
	}
	if hwm > 200<<20 {
		t.Errorf("ingest peak RSS %d MiB, want < 200 MiB", hwm>>20)
	}
}

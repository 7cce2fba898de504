package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ripple-sync/ripple/testenv"
)

// buildRipple builds ./cmd/ripple into dir and returns the binary's path.
func buildRipple(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "ripple")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join("..", "cmd", "ripple")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ripple: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var devDatabaseLine = regexp.MustCompile(`(?m)^\s*database\s+(postgres://\S+)`)

// TestRippleDev runs `ripple dev` as a real process, watches todo_items with
// `ripple watch` (another process, token from `ripple token`), inserts a
// row with pgx and waits for watch to print it; then SIGTERM ends dev with
// exit status 0.
func TestRippleDev(t *testing.T) {
	// The dev cluster runs as the postgres OS user: its directory must be
	// reachable by that user (t.TempDir() is not).
	dir, err := os.MkdirTemp(testenv.BaseDir(), "dev-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := buildRipple(t, dir)
	devDir := filepath.Join(dir, "state")
	addr := freeAddr(t)
	// --nats-port 0 must mean "any free port": hold NATS' default port so
	// that a dev that falls back to 4222 fails visibly.
	if l, err := net.Listen("tcp", "127.0.0.1:4222"); err == nil {
		t.Cleanup(func() { l.Close() })
	}
	dev := testenv.StartProcess(t, "ripple dev", exec.Command(bin, "dev", "--dev-dir", devDir, "--http-addr", addr, "--nats-port", "0", "--pg-port", "0"))
	waitFor(t, 60*time.Second, "ripple dev /readyz", func() bool {
		if dev.Exited() {
			t.Fatalf("ripple dev exited: %s", dev.Output())
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	m := devDatabaseLine.FindStringSubmatch(dev.Output())
	if m == nil {
		t.Fatalf("ripple dev printed no database URL:\n%s", dev.Output())
	}
	dbURL := m[1]

	out, err := exec.Command(bin, "token", "--dev-dir", devDir, "--org", "acme", "--write").Output()
	if err != nil {
		t.Fatalf("ripple token: %v", err)
	}
	token := strings.TrimSpace(string(out))
	watch := testenv.StartProcess(t, "ripple watch", exec.Command(bin, "watch", "--gateway", "ws://"+addr, "--token", token,
		"--table", "todo_items", "--org", "acme"))
	// The demo's initial rows come first.
	waitFor(t, 20*time.Second, "initial rows from watch", func() bool {
		if watch.Exited() {
			t.Fatalf("ripple watch exited: %s", watch.Output())
		}
		return strings.Contains(watch.Output(), `"op":"insert"`)
	})

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var id string
	if err := conn.QueryRow(ctx, `INSERT INTO todo_items (org_id, list_id, title)
		SELECT 'acme', id, 'e2e smoke row' FROM todo_lists WHERE org_id = 'acme' LIMIT 1 RETURNING id::text`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "watch prints the new row", func() bool {
		sc := bufio.NewScanner(strings.NewReader(watch.Output()))
		for sc.Scan() {
			var l struct {
				Op, Table, Org, LSN string
				Row                 map[string]any
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			if l.Op == "insert" && l.Table == "todo_items" && l.Org == "acme" && l.LSN != "" &&
				l.Row["id"] == id && l.Row["title"] == "e2e smoke row" {
				return true
			}
		}
		return false
	})
	_ = watch.Stop()
	t0 := time.Now()
	if err := dev.Stop(); err != nil {
		t.Fatalf("ripple dev after SIGTERM: %v (after %v)\n%s", err, time.Since(t0), dev.Output())
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("ripple dev took %v to exit after SIGTERM", d)
	}
}

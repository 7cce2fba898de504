package testenv_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/ripple-sync/ripple/testenv"
)

func TestMain(m *testing.M) {
	switch testenv.Role() {
	case "":
	case "echo":
		fmt.Println("hello from", os.Getenv("GREETING"))
		fmt.Fprintln(os.Stderr, "to stderr")
		os.Exit(3)
	case "block":
		fmt.Println("ready")
		select {}
	default:
		fmt.Fprintln(os.Stderr, "unknown role", testenv.Role())
		os.Exit(2)
	}
	os.Exit(testenv.Main(m))
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestSharedPostgresSettings(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	if again := testenv.SharedPostgres(t); again != pg {
		t.Fatalf("SharedPostgres returned a second server")
	}
	url := pg.CreateDatabase(t)
	conn := connect(t, url)
	tests := []struct{ setting, want string }{
		{"wal_level", "logical"},
		{"max_replication_slots", "64"},
		{"max_wal_senders", "64"},
		{"max_connections", "200"},
		{"hot_standby_feedback", "on"},
		{"fsync", "off"},
		{"synchronous_commit", "on"},
		{"listen_addresses", "127.0.0.1"},
		{"server_version_num", "15"},
	}
	for _, tc := range tests {
		t.Run(tc.setting, func(t *testing.T) {
			var got string
			if err := conn.QueryRow(ctx(t), "SELECT current_setting($1)", tc.setting).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if tc.setting == "server_version_num" {
				got = got[:2]
			}
			if got != tc.want {
				t.Fatalf("%s = %q, want %q", tc.setting, got, tc.want)
			}
		})
	}
}

func TestCreateDatabaseIsolated(t *testing.T) {
	pg := testenv.SharedPostgres(t)
	u1, u2 := pg.CreateDatabase(t), pg.CreateDatabase(t)
	if u1 == u2 {
		t.Fatalf("CreateDatabase returned the same URL twice: %s", u1)
	}
	want := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/", pg.Port())
	if !strings.HasPrefix(u1, want) || !strings.HasSuffix(u1, "?sslmode=disable") {
		t.Fatalf("URL %q, want prefix %q", u1, want)
	}
	c1, c2 := connect(t, u1), connect(t, u2)
	if _, err := c1.Exec(ctx(t), "CREATE TABLE items(id int primary key); INSERT INTO items VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c1.QueryRow(ctx(t), "SELECT count(*) FROM items").Scan(&n); err != nil || n != 1 {
		t.Fatalf("count = %d, %v; want 1", n, err)
	}
	var exists bool
	if err := c2.QueryRow(ctx(t), "SELECT to_regclass('items') IS NOT NULL").Scan(&exists); err != nil || exists {
		t.Fatalf("second database sees table of the first: %v, %v", exists, err)
	}
	// Logical replication works on a created database.
	if _, err := c1.Exec(ctx(t), "SELECT pg_create_logical_replication_slot('s1', 'pgoutput')"); err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, url, table string) int {
	t.Helper()
	var n int
	if err := connect(t, url).QueryRow(ctx(t), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestReplicaPauseResume(t *testing.T) {
	pg := testenv.StartPostgres(t)
	url := pg.CreateDatabase(t)
	db := url[strings.LastIndex(url, "/")+1 : strings.Index(url, "?")]
	pg.Exec(t, db, "CREATE TABLE items(id int primary key)")
	pg.Exec(t, db, "INSERT INTO items VALUES (1)")

	r := pg.StartReplica(t)
	if !r.IsReplica() || r.Primary() != pg || r.Port() == pg.Port() {
		t.Fatalf("replica: IsReplica=%v Primary=%p port %d (primary %d)", r.IsReplica(), r.Primary(), r.Port(), pg.Port())
	}
	var inRecovery bool
	if err := connect(t, r.URL(db)).QueryRow(ctx(t), "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || !inRecovery {
		t.Fatalf("pg_is_in_recovery = %v, %v", inRecovery, err)
	}
	if got := count(t, r.URL(db), "items"); got != 1 {
		t.Fatalf("replica sees %d rows after basebackup, want 1", got)
	}

	// A row committed on the primary shows up on the replica.
	pg.Exec(t, db, "INSERT INTO items VALUES (2)")
	r.WaitCaughtUp(t)
	if got := count(t, r.URL(db), "items"); got != 2 {
		t.Fatalf("replica sees %d rows, want 2", got)
	}

	// Paused replay: the WAL of row 3 arrives but is not applied.
	r.PauseReplay(t)
	pg.Exec(t, db, "INSERT INTO items VALUES (3)")
	lsn := pg.CurrentLSN(t)
	rc := connect(t, r.URL(db))
	deadline := time.Now().Add(30 * time.Second)
	for {
		var received bool
		if err := rc.QueryRow(ctx(t), "SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn", lsn).Scan(&received); err != nil {
			t.Fatal(err)
		}
		if received {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica did not receive WAL up to %s", lsn)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := count(t, r.URL(db), "items"); got != 2 {
		t.Fatalf("paused replica sees %d rows, want 2", got)
	}
	var behind bool
	if err := rc.QueryRow(ctx(t), "SELECT pg_last_wal_replay_lsn() < $1::pg_lsn", lsn).Scan(&behind); err != nil || !behind {
		t.Fatalf("paused replica replayed up to %s: behind=%v err=%v", lsn, behind, err)
	}

	r.ResumeReplay(t)
	r.WaitReplayed(t, lsn)
	if got := count(t, r.URL(db), "items"); got != 3 {
		t.Fatalf("resumed replica sees %d rows, want 3", got)
	}

	// The replica survives a crash of the primary and streams again.
	pg.Kill(t)
	pg.Start(t)
	pg.Exec(t, db, "INSERT INTO items VALUES (4)")
	r.WaitCaughtUp(t)
	if got := count(t, r.URL(db), "items"); got != 4 {
		t.Fatalf("replica sees %d rows after primary restart, want 4", got)
	}

	// A restarted replica comes back in recovery; a promoted one takes writes.
	r.Restart(t)
	r.WaitCaughtUp(t)
	r.Promote(t)
	r.Exec(t, db, "INSERT INTO items VALUES (5)")
	if got := count(t, r.URL(db), "items"); got != 5 {
		t.Fatalf("promoted replica sees %d rows, want 5", got)
	}
}

func TestKillRestartKeepsData(t *testing.T) {
	tests := []struct {
		name string
		down func(*testenv.Postgres, testing.TB)
	}{
		{"kill", (*testenv.Postgres).Kill},
		{"stop", (*testenv.Postgres).Stop},
	}
	pg := testenv.StartPostgres(t, testenv.WithName("restart"), testenv.WithSetting("work_mem", "8MB"))
	pg.Exec(t, "postgres", "CREATE TABLE items(id int primary key)")
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := pg.Port()
			pg.Exec(t, "postgres", "INSERT INTO items VALUES ($1)", i+1)
			tc.down(pg, t)
			if pg.Running() {
				t.Fatal("server still running")
			}
			c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if conn, err := pgx.Connect(c, pg.URL("postgres")); err == nil {
				conn.Close(c)
				t.Fatal("connected to a downed server")
			}
			pg.Start(t)
			if pg.Port() != port {
				t.Fatalf("port changed %d -> %d", port, pg.Port())
			}
			if got := count(t, pg.URL("postgres"), "items"); got != i+1 {
				t.Fatalf("after restart %d rows, want %d", got, i+1)
			}
			var wm string
			if err := connect(t, pg.URL("postgres")).QueryRow(ctx(t), "SHOW work_mem").Scan(&wm); err != nil || wm != "8MB" {
				t.Fatalf("work_mem = %q, %v; WithSetting lost", wm, err)
			}
		})
	}
}

// pingUntil publishes on pub until sub receives a message, as interest
// propagates asynchronously through routes and gateways.
func pingUntil(t *testing.T, pub *nats.Conn, sub *nats.Subscription, subject string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		want := fmt.Sprintf("msg-%d", i)
		if err := pub.Publish(subject, []byte(want)); err != nil {
			t.Fatal(err)
		}
		if err := pub.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err := sub.NextMsg(50 * time.Millisecond)
		if err == nil {
			if !strings.HasPrefix(string(msg.Data), "msg-") {
				t.Fatalf("got %q", msg.Data)
			}
			return
		}
		if !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message on %s within deadline", subject)
		}
	}
}

func TestNATSRestartKeepsURL(t *testing.T) {
	n := testenv.StartNATS(t)
	url := n.URL()
	nc := n.Connect(t, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	sub, err := nc.SubscribeSync("x")
	if err != nil {
		t.Fatal(err)
	}
	if got := nc.MaxPayload(); got != 1<<20 {
		t.Fatalf("max payload %d, want 1 MiB", got)
	}
	n.Restart(t)
	if n.URL() != url {
		t.Fatalf("URL changed %s -> %s", url, n.URL())
	}
	pingUntil(t, nc, sub, "x")
}

func TestNATSCluster(t *testing.T) {
	cl := testenv.StartNATSCluster(t, 3)
	if len(cl) != 3 {
		t.Fatalf("%d servers", len(cl))
	}
	for _, s := range cl {
		if got := s.Server().NumRemotes(); got != 2 {
			t.Fatalf("%s has %d remotes, want 2", s.Name(), got)
		}
	}
	sub, err := cl[2].Connect(t).SubscribeSync("c.>")
	if err != nil {
		t.Fatal(err)
	}
	pingUntil(t, cl[0].Connect(t), sub, "c.hello")

	// A restarted member rejoins the cluster.
	cl[1].Restart(t)
	sub1, err := cl[1].Connect(t).SubscribeSync("d")
	if err != nil {
		t.Fatal(err)
	}
	pingUntil(t, cl[0].Connect(t), sub1, "d")
}

func TestSuperCluster(t *testing.T) {
	a, b := testenv.StartSuperCluster(t, 2)
	if len(a) != 2 || len(b) != 2 || a[0].ClusterName() != "A" || b[0].ClusterName() != "B" {
		t.Fatalf("clusters %d %d", len(a), len(b))
	}
	sub, err := b[1].Connect(t).SubscribeSync("g.hello")
	if err != nil {
		t.Fatal(err)
	}
	pingUntil(t, a[0].Connect(t), sub, "g.hello")
}

func TestProcess(t *testing.T) {
	t.Run("exit code and output", func(t *testing.T) {
		p := testenv.StartProcess(t, "echo", testenv.SelfCommand("echo", "GREETING=tests"))
		err := p.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || p.ExitCode() != 3 || !p.Exited() {
			t.Fatalf("Wait = %v, exit code %d, want 3", err, p.ExitCode())
		}
		out := p.Output()
		if !strings.Contains(out, "hello from tests") || !strings.Contains(out, "to stderr") {
			t.Fatalf("output %q", out)
		}
	})
	for _, tc := range []struct {
		name string
		stop func(*testenv.Process) error
	}{
		{"kill", (*testenv.Process).Kill},
		{"stop", (*testenv.Process).Stop},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := testenv.SelfCommand("block")
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pr.Close(); pw.Close() })
			cmd.Stdout = pw // copied by StartProcess, which also captures it
			p := testenv.StartProcess(t, "block", cmd)
			line, err := bufio.NewReader(pr).ReadString('\n')
			if err != nil || line != "ready\n" {
				t.Fatalf("read %q, %v", line, err)
			}
			if p.Exited() {
				t.Fatal("exited early")
			}
			err = tc.stop(p)
			if !p.Exited() {
				t.Fatal("still running after stop")
			}
			if tc.name == "stop" && err == nil {
				t.Fatal("Stop of a SIGTERM-killed process returned nil")
			}
			if tc.name == "kill" && err != nil {
				t.Fatalf("Kill: %v", err)
			}
			if !strings.Contains(p.Output(), "ready") {
				t.Fatalf("output %q", p.Output())
			}
		})
	}
}

package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReadyTimeout bounds how long a server may take to accept connections.
const ReadyTimeout = 30 * time.Second

// stopTimeout bounds a graceful shutdown before it becomes a SIGKILL.
const stopTimeout = 30 * time.Second

// Signals understood by the postmaster.
const (
	sigFast      = syscall.SIGINT  // fast shutdown
	sigImmediate = syscall.SIGQUIT // immediate shutdown
	sigKill      = syscall.SIGKILL // crash
)

// baseSettings are written into every cluster's postgresql.conf.
var baseSettings = []string{
	"listen_addresses = '127.0.0.1'",
	"unix_socket_directories = ''",
	"wal_level = logical",
	"max_replication_slots = 64",
	"max_wal_senders = 64",
	"max_connections = 200",
	"hot_standby = on",
	"hot_standby_feedback = on",
	"fsync = off",
	"full_page_writes = off",
	"shared_buffers = 128MB",
	"wal_keep_size = 1GB",
	"max_wal_size = 4GB",
	"logging_collector = off",
	"log_min_messages = warning",
	"log_line_prefix = '%m [%p] %q%u@%d '",
	"wal_receiver_status_interval = 1s",
	"wal_retrieve_retry_interval = 100ms",
	"timezone = 'UTC'",
}

// PGOption configures StartPostgres.
type PGOption func(*pgConfig)

type pgConfig struct {
	name     string
	settings []string // "name=value", passed as -c flags
}

// WithSetting sets a server parameter (postgres -c name=value) on the new
// cluster, overriding the testenv defaults.
func WithSetting(name, value string) PGOption {
	return func(c *pgConfig) { c.settings = append(c.settings, name+"="+value) }
}

// WithName names the cluster (used in its directory name and logs).
func WithName(name string) PGOption {
	return func(c *pgConfig) { c.name = name }
}

// Postgres is a throwaway PostgreSQL 15 server: a primary started by
// StartPostgres or SharedPostgres, or a streaming replica started by
// StartReplica. Its methods are safe for concurrent use.
type Postgres struct {
	name      string
	dir       string // cluster dir: data/ and server.log
	dataDir   string
	logPath   string
	port      int
	settings  []string
	replicaOf *Postgres
	dbSeq     atomic.Int64

	life sync.Mutex // serialises start and stop

	mu       sync.Mutex // guards port, cmd, done and promoted
	cmd      *exec.Cmd
	done     chan struct{}
	promoted bool
}

var clusterSeq atomic.Int64

// StartPostgres starts a fresh PostgreSQL primary (wal_level=logical) for the
// test and stops it and removes its files when the test ends. When the test
// fails, the tail of the server log is logged.
func StartPostgres(t testing.TB, opts ...PGOption) *Postgres {
	t.Helper()
	cfg := pgConfig{name: "pg"}
	for _, o := range opts {
		o(&cfg)
	}
	p, err := startPrimary(cfg)
	if err != nil {
		t.Fatalf("testenv: start postgres: %v", err)
	}
	t.Cleanup(func() { p.cleanup(t) })
	return p
}

// SharedPostgres returns the primary shared by every test of the test binary,
// starting it on first use. Tests should not stop it; they should each use
// their own database from CreateDatabase. Main stops it at exit.
func SharedPostgres(t testing.TB) *Postgres {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	if env.shared == nil {
		p, err := startPrimary(pgConfig{name: "shared"})
		if err != nil {
			t.Fatalf("testenv: start shared postgres: %v", err)
		}
		env.shared = p
		dir := p.dir
		env.cleanups = append(env.cleanups, func() { _ = os.RemoveAll(dir) })
	}
	p := env.shared
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: tail of shared postgres log %s:\n%s", p.logPath, p.LogTail(40))
		}
	})
	return p
}

// newCluster allocates a cluster directory (owned by the postgres OS user).
func newCluster(name string, settings []string) (*Postgres, error) {
	rd, err := runDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(rd, fmt.Sprintf("%s-%d", sanitize(name, 20), clusterSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("testenv: %w", err)
	}
	if err := chownPG(dir); err != nil {
		return nil, fmt.Errorf("testenv: chown: %w", err)
	}
	return &Postgres{
		name:     name,
		dir:      dir,
		dataDir:  filepath.Join(dir, "data"),
		logPath:  filepath.Join(dir, "server.log"),
		settings: append([]string(nil), settings...),
	}, nil
}

func startPrimary(cfg pgConfig) (*Postgres, error) {
	tmpl, err := template()
	if err != nil {
		return nil, err
	}
	p, err := newCluster(cfg.name, cfg.settings)
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command("cp", "-a", tmpl, p.dataDir).CombinedOutput(); err != nil {
		_ = os.RemoveAll(p.dir)
		return nil, fmt.Errorf("testenv: copy template: %w: %s", err, out)
	}
	if err := p.startNewPort(func(ctx context.Context) error { return nil }); err != nil {
		_ = os.RemoveAll(p.dir)
		return nil, err
	}
	return p, nil
}

// template runs initdb once per test binary.
func template() (string, error) {
	env.tmplOnce.Do(func() {
		env.tmplDir, env.tmplErr = initTemplate()
	})
	return env.tmplDir, env.tmplErr
}

// initTemplate returns an initdb'd data directory to copy clusters from. It
// is cached under BaseDir across test binaries (keyed by the server binary
// and the settings), built once under a file lock.
func initTemplate() (string, error) {
	bin, err := pgBinDir()
	if err != nil {
		return "", err
	}
	rd, err := runDir() // creates the base directory
	if err != nil {
		return "", err
	}
	base := filepath.Dir(rd)
	h := sha256.New()
	fmt.Fprintf(h, "v1\n%s\n%s\n", bin, strings.Join(baseSettings, "\n"))
	if st, err := os.Stat(filepath.Join(bin, "postgres")); err == nil {
		fmt.Fprintf(h, "%d %d\n", st.Size(), st.ModTime().UnixNano())
	}
	dir := filepath.Join(base, fmt.Sprintf("template-%x", h.Sum(nil)[:8]))
	ok := filepath.Join(dir, "testenv.ok")
	if _, err := os.Stat(ok); err == nil {
		return dir, nil
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("testenv: template lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("testenv: template lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(ok); err == nil {
		return dir, nil // built by another test binary meanwhile
	}
	tmp := dir + ".tmp"
	_ = os.RemoveAll(tmp)
	_ = os.RemoveAll(dir)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	if err := chownPG(tmp); err != nil {
		return "", fmt.Errorf("testenv: chown: %w", err)
	}
	cmd := exec.Command(filepath.Join(bin, "initdb"), "-D", tmp, "-A", "trust", "-U", "postgres",
		"-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
	if err := pgCmd(cmd, base); err != nil {
		return "", err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("testenv: initdb: %w: %s", err, out)
	}
	conf := "\n# testenv\n" + strings.Join(baseSettings, "\n") + "\n"
	f, err := os.OpenFile(filepath.Join(tmp, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return "", fmt.Errorf("testenv: %w", err)
	}
	_, err = f.WriteString(conf)
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err == nil {
		// Marker last: a template without it is incomplete and rebuilt.
		err = os.WriteFile(filepath.Join(tmp, "testenv.ok"), nil, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return "", fmt.Errorf("testenv: build template: %w", err)
	}
	return dir, nil
}

// pgCmd prepares cmd to run as the postgres OS user (when root), in its own
// process group, killed when the test binary dies.
func pgCmd(cmd *exec.Cmd, dir string) error {
	cred, err := pgCredential()
	if err != nil {
		return err
	}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Env = append(os.Environ(), "PGTZ=UTC", "LC_ALL=C")
	if cred != nil {
		cmd.Env = append(cmd.Env, "HOME="+dir, "USER=postgres", "LOGNAME=postgres")
	}
	return nil
}

var errPortInUse = errors.New("testenv: port in use")

// startNewPort starts the server on a fresh free port, retrying when another
// process grabs the port first. ready is an extra readiness condition.
func (p *Postgres) startNewPort(ready func(context.Context) error) error {
	var err error
	for range 8 {
		var port int
		if port, err = freePort(); err != nil {
			return err
		}
		p.mu.Lock()
		p.port = port
		p.mu.Unlock()
		if err = p.start(ready); !errors.Is(err, errPortInUse) {
			return err
		}
	}
	return err
}

var retryableStart = regexp.MustCompile(`(?i)address already in use|could not bind|could not create any TCP/IP sockets|pre-existing shared memory block|is still in use`)

// start launches the postmaster on p.port and waits until it is ready.
func (p *Postgres) start(ready func(context.Context) error) error {
	p.life.Lock()
	defer p.life.Unlock()
	if p.Running() {
		return fmt.Errorf("testenv: %s is already running", p.name)
	}
	bin, err := pgBinDir()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("testenv: open server log: %w", err)
	}
	startOff, _ := logf.Seek(0, 2)
	args := []string{"-D", p.dataDir, "-p", strconv.Itoa(p.port)}
	for _, s := range p.settings {
		args = append(args, "-c", s)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	if err := pgCmd(cmd, p.dir); err != nil {
		logf.Close()
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("testenv: start postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	err = p.waitReady(ctx, done, ready)
	if err == nil {
		return nil
	}
	// Failed: make sure it is gone, then classify.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	tail := p.logSince(startOff)
	if retryableStart.MatchString(tail) {
		return fmt.Errorf("%w: %v: %s", errPortInUse, err, tail)
	}
	return fmt.Errorf("testenv: postgres %s on port %d not ready: %w\n%s", p.name, p.port, err, tail)
}

func (p *Postgres) waitReady(ctx context.Context, done chan struct{}, ready func(context.Context) error) error {
	var last error
	for {
		select {
		case <-done:
			return fmt.Errorf("postmaster exited (last connect error: %v)", last)
		default:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(cctx, p.URL("postgres"))
		if err == nil {
			err = ready(cctx)
			conn.Close(cctx)
		}
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-done:
			return fmt.Errorf("postmaster exited (last connect error: %v)", last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func isClosed(c chan struct{}) bool {
	if c == nil {
		return true
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// stop signals the postmaster and waits for it to exit (SIGKILL after
// stopTimeout). With SIGKILL the whole process group is killed.
func (p *Postgres) stop(sig syscall.Signal) error {
	p.life.Lock()
	defer p.life.Unlock()
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil || isClosed(done) {
		return nil
	}
	pid := cmd.Process.Pid
	if sig == syscall.SIGKILL {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	} else {
		_ = syscall.Kill(pid, sig)
	}
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-done
		return fmt.Errorf("testenv: %s did not stop within %v; killed", p.name, stopTimeout)
	}
	if sig == syscall.SIGKILL {
		waitGroupGone(pid, 5*time.Second)
	}
	return nil
}

// waitGroupGone polls until no live (non-zombie) process is left in the
// process group pgid, or the deadline passes.
func waitGroupGone(pgid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !groupAlive(pgid) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

func (p *Postgres) cleanup(t testing.TB) {
	if t.Failed() {
		t.Logf("testenv: tail of %s log %s:\n%s", p.name, p.logPath, p.LogTail(60))
	}
	if err := p.stop(sigImmediate); err != nil {
		t.Logf("testenv: %v", err)
	}
	_ = os.RemoveAll(p.dir)
}

// URL returns the connection URL of database db on this server:
// postgres://postgres@127.0.0.1:PORT/db?sslmode=disable.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.Port(), db)
}

// ReplicationURL returns the URL of database db with replication=database,
// for logical replication connections (pglogrepl).
func (p *Postgres) ReplicationURL(db string) string {
	return p.URL(db) + "&replication=database"
}

// Port returns the TCP port the server listens on (127.0.0.1).
func (p *Postgres) Port() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.port
}

// Name returns the cluster's name.
func (p *Postgres) Name() string { return p.name }

// DataDir returns the cluster's data directory.
func (p *Postgres) DataDir() string { return p.dataDir }

// LogPath returns the path of the server log.
func (p *Postgres) LogPath() string { return p.logPath }

// IsReplica reports whether the server is a streaming replica.
func (p *Postgres) IsReplica() bool { return p.replicaOf != nil }

// Primary returns the primary a replica streams from (nil for a primary).
func (p *Postgres) Primary() *Postgres { return p.replicaOf }

// Running reports whether the postmaster is running.
func (p *Postgres) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !isClosed(p.done)
}

// LogTail returns the last n lines of the server log.
func (p *Postgres) LogTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

func (p *Postgres) logSince(off int64) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

var nonIdent = regexp.MustCompile(`[^a-z0-9_]+`)

func sanitize(s string, max int) string {
	s = nonIdent.ReplaceAllString(strings.ToLower(s), "_")
	s = strings.Trim(s, "_")
	if len(s) > max {
		s = s[:max]
	}
	if s == "" {
		s = "x"
	}
	return s
}

// CreateDatabase creates a new, empty, uniquely named database and returns its
// URL. On a shared server the database is dropped when the test ends
// (with its replication slots); on a private server it goes with the server.
func (p *Postgres) CreateDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t_%s_%d", sanitize(t.Name(), 40), p.dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := p.exec(ctx, "postgres", "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("testenv: create database %s: %v", name, err)
	}
	env.mu.Lock()
	shared := env.shared == p
	env.mu.Unlock()
	if shared {
		t.Cleanup(func() { p.dropDatabase(t, name) })
	}
	return p.URL(name)
}

func (p *Postgres) dropDatabase(t testing.TB, name string) {
	if !p.Running() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		t.Logf("testenv: drop database %s: %v", name, err)
		return
	}
	defer conn.Close(ctx)
	// Slots must go first; a slot still in use goes once its backend is gone.
	_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
		WHERE database = $1 AND active_pid IS NOT NULL`, name)
	if err == nil {
		for i := 0; i < 200; i++ {
			var n int
			if err = conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = $1 AND active`, name).Scan(&n); err != nil || n == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err == nil {
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1`, name)
	}
	if err == nil {
		_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	if err != nil {
		t.Logf("testenv: drop database %s: %v", name, err)
	}
}

func (p *Postgres) exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, p.URL(db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// Exec runs one statement on database db and fails the test on error.
func (p *Postgres) Exec(t testing.TB, db, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := p.exec(ctx, db, sql, args...); err != nil {
		t.Fatalf("testenv: exec on %s/%s: %v", p.name, db, err)
	}
}

// Connect opens a pgx connection to database db, closed when the test ends.
func (p *Postgres) Connect(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL(db))
	if err != nil {
		t.Fatalf("testenv: connect to %s/%s: %v", p.name, db, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func (p *Postgres) queryString(ctx context.Context, sql string) (string, error) {
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var s string
	err = conn.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

// Stop shuts the server down (fast shutdown, SIGINT) and waits until it has
// exited. Start brings it back.
func (p *Postgres) Stop(t testing.TB) {
	t.Helper()
	if err := p.stop(sigFast); err != nil {
		t.Fatalf("testenv: stop %s: %v", p.name, err)
	}
}

// Kill crashes the server: SIGKILL to the postmaster and all its backends,
// then waits until they are gone. Start brings it back (crash recovery).
func (p *Postgres) Kill(t testing.TB) {
	t.Helper()
	if err := p.stop(sigKill); err != nil {
		t.Fatalf("testenv: kill %s: %v", p.name, err)
	}
}

// Start restarts a stopped or killed server on the same data directory and
// port and waits until it accepts connections (a replica: and is in recovery).
func (p *Postgres) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	var err error
	for {
		if err = p.start(p.readyCheck()); !errors.Is(err, errPortInUse) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: restart %s: %v", p.name, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		t.Fatalf("testenv: restart %s: %v", p.name, err)
	}
}

func (p *Postgres) readyCheck() func(context.Context) error {
	p.mu.Lock()
	promoted := p.promoted
	p.mu.Unlock()
	if p.replicaOf == nil || promoted {
		return func(context.Context) error { return nil }
	}
	return func(ctx context.Context) error {
		s, err := p.queryString(ctx, "SELECT pg_is_in_recovery()::text")
		if err != nil {
			return err
		}
		if s != "true" {
			return errors.New("replica is not in recovery")
		}
		return nil
	}
}

// StartReplica starts a streaming replica of p (pg_basebackup -R -X stream,
// hot_standby=on, hot_standby_feedback=on) on its own port, waits until it
// accepts connections in recovery, and removes it when the test ends.
func (p *Postgres) StartReplica(t testing.TB) *Postgres {
	t.Helper()
	r, err := p.startReplica()
	if err != nil {
		t.Fatalf("testenv: start replica of %s: %v", p.name, err)
	}
	t.Cleanup(func() { r.cleanup(t) })
	return r
}

func (p *Postgres) startReplica() (*Postgres, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	r, err := newCluster(p.name+"-replica", p.settings)
	if err != nil {
		return nil, err
	}
	r.replicaOf = p
	cmd := exec.Command(filepath.Join(bin, "pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(p.Port()),
		"-U", "postgres", "-D", r.dataDir, "-R", "-X", "stream", "--checkpoint=fast", "--no-sync")
	if err := pgCmd(cmd, r.dir); err != nil {
		return nil, err
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(r.dir)
		return nil, fmt.Errorf("pg_basebackup: %w: %s", err, out)
	}
	if err := r.startNewPort(r.readyCheck()); err != nil {
		_ = os.RemoveAll(r.dir)
		return nil, err
	}
	return r, nil
}

func (p *Postgres) mustReplica(t testing.TB, what string) {
	t.Helper()
	if p.replicaOf == nil {
		t.Fatalf("testenv: %s: %s is not a replica", what, p.name)
	}
}

// PauseReplay pauses WAL replay on a replica (pg_wal_replay_pause) and waits
// until replay is actually paused. WAL keeps streaming in but is not applied.
func (p *Postgres) PauseReplay(t testing.TB) {
	t.Helper()
	p.mustReplica(t, "PauseReplay")
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := p.exec(ctx, "postgres", "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatalf("testenv: pause replay on %s: %v", p.name, err)
	}
	var last string
	for {
		s, err := p.queryString(ctx, "SELECT pg_get_wal_replay_pause_state()")
		if err == nil && s == "paused" {
			return
		}
		if err != nil {
			last = err.Error()
		} else {
			last = s
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: replay on %s not paused: %s", p.name, last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ResumeReplay resumes WAL replay on a replica (pg_wal_replay_resume).
func (p *Postgres) ResumeReplay(t testing.TB) {
	t.Helper()
	p.mustReplica(t, "ResumeReplay")
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := p.exec(ctx, "postgres", "SELECT pg_wal_replay_resume()"); err != nil {
		t.Fatalf("testenv: resume replay on %s: %v", p.name, err)
	}
}

// CurrentLSN returns the primary's current WAL write position
// (pg_current_wal_lsn) as text, e.g. "0/16B3748".
func (p *Postgres) CurrentLSN(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	s, err := p.queryString(ctx, "SELECT pg_current_wal_lsn()::text")
	if err != nil {
		t.Fatalf("testenv: current LSN of %s: %v", p.name, err)
	}
	return s
}

// ReplayLSN returns the replica's last replayed LSN (pg_last_wal_replay_lsn).
func (p *Postgres) ReplayLSN(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	s, err := p.queryString(ctx, "SELECT coalesce(pg_last_wal_replay_lsn(), '0/0')::text")
	if err != nil {
		t.Fatalf("testenv: replay LSN of %s: %v", p.name, err)
	}
	return s
}

// WaitReplayed waits (up to ReadyTimeout) until the replica has replayed WAL
// up to lsn (text form "X/Y", as pg_lsn).
func (p *Postgres) WaitReplayed(t testing.TB, lsn string) {
	t.Helper()
	p.mustReplica(t, "WaitReplayed")
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		t.Fatalf("testenv: WaitReplayed: %v", err)
	}
	defer conn.Close(context.Background())
	var last string
	for {
		var ok bool
		err := conn.QueryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false), coalesce(pg_last_wal_replay_lsn(),'0/0')::text", lsn).Scan(&ok, &last)
		if err != nil {
			t.Fatalf("testenv: WaitReplayed(%s) on %s: %v", lsn, p.name, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: %s did not replay up to %s within %v (at %s)", p.name, lsn, ReadyTimeout, last)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// WaitCaughtUp waits until the replica has replayed everything its primary
// had written when WaitCaughtUp was called.
func (p *Postgres) WaitCaughtUp(t testing.TB) {
	t.Helper()
	p.mustReplica(t, "WaitCaughtUp")
	p.WaitReplayed(t, p.replicaOf.CurrentLSN(t))
}

// Restart stops the server (fast shutdown) and starts it again on the same
// data directory and port.
func (p *Postgres) Restart(t testing.TB) {
	t.Helper()
	p.Stop(t)
	p.Start(t)
}

// Promote promotes a replica to a primary (pg_promote) and waits until it
// has left recovery. The Postgres value stays marked as a replica of its
// former primary only for bookkeeping; it now accepts writes.
func (p *Postgres) Promote(t testing.TB) {
	t.Helper()
	p.mustReplica(t, "Promote")
	ctx, cancel := context.WithTimeout(context.Background(), ReadyTimeout)
	defer cancel()
	if err := p.exec(ctx, "postgres", "SELECT pg_promote(true, 30)"); err != nil {
		t.Fatalf("testenv: promote %s: %v", p.name, err)
	}
	if err := waitFor(ReadyTimeout, func() error {
		s, err := p.queryString(ctx, "SELECT pg_is_in_recovery()::text")
		if err == nil && s != "false" {
			err = errors.New("still in recovery")
		}
		return err
	}); err != nil {
		t.Fatalf("testenv: promote %s: %v", p.name, err)
	}
	p.mu.Lock()
	p.promoted = true
	p.mu.Unlock()
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// devPostgres is the throwaway PostgreSQL 15 cluster `ripple dev` runs under
// its state directory. It survives restarts of `ripple dev` (the data stays)
// and is stopped when dev stops.
type devPostgres struct {
	dir    string
	port   int
	cmd    *exec.Cmd
	done   chan error
	logger *slog.Logger
}

// pgBinary finds a PostgreSQL 15 program on PATH or in Debian's location.
func pgBinary(name string) (string, error) {
	deb := filepath.Join("/usr/lib/postgresql/15/bin", name)
	if _, err := os.Stat(deb); err == nil {
		return deb, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s (PostgreSQL 15) not found on PATH or in /usr/lib/postgresql/15/bin: run scripts/ensure-deps.sh", name)
}

// pgCredential returns the credential to run Postgres with: the postgres
// user when we are root (Postgres refuses to run as root), else nil.
func pgCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a `postgres` user to run PostgreSQL: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// chownTree gives dir and everything below to the credential's user.
func chownTree(dir string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cred.Uid), int(cred.Gid))
	})
}

// reachable reports whether every parent of dir can be traversed by others
// (the postgres user), which a directory under /root, for example, cannot.
func reachable(dir string) bool {
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" {
			return true
		}
	}
}

func freePort(preferred int) (int, error) {
	if preferred > 0 {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", preferred)); err == nil {
			ln.Close()
			return preferred, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startDevPostgres initialises (first time) and starts the dev cluster in
// stateDir/pg. It returns once the server accepts connections.
func startDevPostgres(ctx context.Context, logger *slog.Logger, stateDir string, preferredPort int) (*devPostgres, error) {
	cred, err := pgCredential()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(filepath.Join(stateDir, "pg"))
	if err != nil {
		return nil, err
	}
	if cred != nil && !reachable(dir) {
		// The postgres user cannot reach the project directory: keep the
		// cluster under /var/tmp instead, one per project directory.
		alt := filepath.Join("/var/tmp/ripple-dev", strings.ReplaceAll(strings.Trim(dir, "/"), "/", "_"))
		logger.Warn("postgres user cannot reach the state directory; using another", "wanted", dir, "using", alt)
		dir = alt
		if err := os.MkdirAll("/var/tmp/ripple-dev", 0o755); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err != nil {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, err
		}
		if err := chownTree(dir, cred); err != nil {
			return nil, err
		}
		initdb, err := pgBinary("initdb")
		if err != nil {
			return nil, err
		}
		logger.Info("initialising dev postgres cluster", "dir", data)
		cmd := exec.CommandContext(ctx, initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("initdb: %w\n%s", err, out)
		}
	}
	port, err := freePort(preferredPort)
	if err != nil {
		return nil, err
	}
	postgres, err := pgBinary("postgres")
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := []string{"-D", data, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + dir,
		"-c", "wal_level=logical", "-c", "max_replication_slots=20", "-c", "max_wal_senders=20",
		"-c", "max_connections=200", "-c", "shared_buffers=128MB"}
	cmd := exec.Command(postgres, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	p := &devPostgres{dir: dir, port: port, cmd: cmd, done: make(chan error, 1), logger: logger}
	go func() { p.done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := pgx.Connect(ctx, p.URL("postgres"))
		if err == nil {
			c.Close(ctx)
			break
		}
		select {
		case werr := <-p.done:
			return nil, fmt.Errorf("postgres exited during start-up (%v); see %s", werr, filepath.Join(dir, "postgres.log"))
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("postgres did not accept connections within 60s: %w", err)
		}
	}
	logger.Info("dev postgres running", "port", port, "dir", data)
	return p, nil
}

// URL returns the connection URL of database db.
func (p *devPostgres) URL(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, db)
}

// Stop shuts the cluster down (fast shutdown), waiting up to 30 seconds.
func (p *devPostgres) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// ensureDatabase creates database name if it does not exist.
func ensureDatabase(ctx context.Context, adminURL, name string) error {
	c, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	var exists bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr interface{ SQLState() string }
	if errors.As(err, &pgErr) && pgErr.SQLState() == "42P04" {
		return nil
	}
	return err
}

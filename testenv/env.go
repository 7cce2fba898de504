package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// DirEnv names an environment variable that overrides the base directory.
const DirEnv = "RIPPLE_TESTENV_DIR"

// BaseDir returns the directory under which every test binary keeps its
// clusters: $RIPPLE_TESTENV_DIR if set, else /dev/shm/ripple-testenv when
// /dev/shm is a tmpfs with at least 2 GiB free (copying a cluster there is
// several times faster than on disk), else /tmp/ripple-testenv. It is made
// world-readable (0755) so that the postgres OS user can reach it when the
// tests run as root; t.TempDir() lives under a 0700 directory it cannot.
func BaseDir() string {
	if d := os.Getenv(DirEnv); d != "" {
		return d
	}
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if syscall.Statfs("/dev/shm", &st) == nil && st.Type == tmpfsMagic &&
		uint64(st.Bavail)*uint64(st.Bsize) >= 2<<30 {
		return "/dev/shm/ripple-testenv"
	}
	return "/tmp/ripple-testenv"
}

// envState is the per-test-binary state: the run directory, the initdb
// template and the shared servers stopped by Main. It is the only
// package-level state: a test environment is per process by nature.
type envState struct {
	mu       sync.Mutex
	runDir   string
	runErr   error
	runOnce  sync.Once
	tmplOnce sync.Once
	tmplDir  string
	tmplErr  error
	binOnce  sync.Once
	binDir   string
	binErr   error
	userOnce sync.Once
	cred     *syscall.Credential
	credErr  error
	shared   *Postgres
	cleanups []func()
}

var env envState

// pgCredential returns the credential to run PostgreSQL programs with: the
// postgres OS user when running as root, nil otherwise.
func pgCredential() (*syscall.Credential, error) {
	env.userOnce.Do(func() {
		if os.Geteuid() != 0 {
			return
		}
		u, err := user.Lookup("postgres")
		if err != nil {
			env.credErr = fmt.Errorf("testenv: running as root needs a postgres OS user: %w", err)
			return
		}
		uid, err1 := strconv.Atoi(u.Uid)
		gid, err2 := strconv.Atoi(u.Gid)
		if err := errors.Join(err1, err2); err != nil {
			env.credErr = fmt.Errorf("testenv: postgres user ids: %w", err)
			return
		}
		env.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}
	})
	return env.cred, env.credErr
}

// chownPG gives path to the postgres OS user when running as root.
func chownPG(path string) error {
	cred, err := pgCredential()
	if err != nil || cred == nil {
		return err
	}
	return os.Chown(path, int(cred.Uid), int(cred.Gid))
}

// pgBinDir finds the directory holding the PostgreSQL 15 server programs.
func pgBinDir() (string, error) {
	env.binOnce.Do(func() {
		var cands []string
		if p, err := exec.LookPath("postgres"); err == nil {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				cands = append(cands, filepath.Dir(r))
			}
		}
		if p, err := exec.LookPath("pg_config"); err == nil {
			if out, err := exec.Command(p, "--bindir").Output(); err == nil {
				cands = append(cands, strings.TrimSpace(string(out)))
			}
		}
		cands = append(cands, "/usr/lib/postgresql/15/bin")
		for _, d := range cands {
			if isExec(filepath.Join(d, "postgres")) && isExec(filepath.Join(d, "initdb")) &&
				isExec(filepath.Join(d, "pg_basebackup")) {
				env.binDir = d
				return
			}
		}
		env.binErr = fmt.Errorf("testenv: no PostgreSQL bin dir with postgres, initdb and pg_basebackup (looked in %v)", cands)
	})
	return env.binDir, env.binErr
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// runDir returns this test binary's directory under BaseDir, creating it
// (and sweeping directories of test binaries that are gone) on first use.
func runDir() (string, error) {
	env.runOnce.Do(func() {
		base := BaseDir()
		if err := os.MkdirAll(base, 0o755); err != nil {
			env.runErr = fmt.Errorf("testenv: %w", err)
			return
		}
		_ = os.Chmod(base, 0o755)
		sweepStale(base)
		d, err := os.MkdirTemp(base, fmt.Sprintf("run-%d-", os.Getpid()))
		if err != nil {
			env.runErr = fmt.Errorf("testenv: %w", err)
			return
		}
		if err := os.Chmod(d, 0o755); err != nil {
			env.runErr = fmt.Errorf("testenv: %w", err)
			return
		}
		if err := chownPG(d); err != nil {
			env.runErr = fmt.Errorf("testenv: chown %s: %w", d, err)
			return
		}
		env.runDir = d
	})
	return env.runDir, env.runErr
}

// sweepStale removes run directories left by test binaries that no longer run.
func sweepStale(base string) {
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range ents {
		parts := strings.SplitN(e.Name(), "-", 3)
		if len(parts) != 3 || parts[0] != "run" {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if syscall.Kill(pid, 0) == nil || errors.Is(syscall.Kill(pid, 0), syscall.EPERM) {
			continue // still running
		}
		_ = os.RemoveAll(filepath.Join(base, e.Name()))
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("testenv: pick free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Main runs the tests of a package and then stops the shared servers and
// removes this test binary's directories. Call it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	Teardown()
	return code
}

// Teardown stops the servers shared by the test binary (SharedPostgres) and
// removes its directories. Main calls it; call it yourself only when not
// using Main. The environment can be used again afterwards.
func Teardown() {
	env.mu.Lock()
	shared := env.shared
	env.shared = nil
	cleanups := env.cleanups
	env.cleanups = nil
	env.mu.Unlock()
	if shared != nil {
		_ = shared.stop(sigImmediate)
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	if d := env.runDir; d != "" {
		_ = os.RemoveAll(d)
	}
	// Let a later user start over.
	env.runOnce = sync.Once{}
	env.tmplOnce = sync.Once{}
	env.runDir, env.runErr, env.tmplDir, env.tmplErr = "", nil, "", nil
}

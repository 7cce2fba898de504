package testenv

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RoleEnv is the environment variable that tells a re-executed test binary
// which component to run instead of its tests (see SelfCommand and Role).
const RoleEnv = "RIPPLE_TESTENV_ROLE"

// processStopTimeout bounds Stop's wait after SIGTERM before SIGKILL.
const processStopTimeout = 10 * time.Second

// Process is a child process started by StartProcess: in its own process
// group, killed if the test binary dies, with its combined output captured.
type Process struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // set before done is closed
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// StartProcess starts cmd as a child process named name (for logs). Its
// stdout and stderr are captured (and still copied to cmd.Stdout/cmd.Stderr
// if those were set) and logged if the test fails. The process gets its own
// process group and SIGKILL when the test binary dies; it is killed when the
// test ends.
func StartProcess(t testing.TB, name string, cmd *exec.Cmd) *Process {
	t.Helper()
	p := &Process{name: name, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	if cmd.Stdout != nil {
		cmd.Stdout = io.MultiWriter(cmd.Stdout, p.out)
	} else {
		cmd.Stdout = p.out
	}
	if cmd.Stderr != nil {
		cmd.Stderr = io.MultiWriter(cmd.Stderr, p.out)
	} else {
		cmd.Stderr = p.out
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if cmd.WaitDelay == 0 {
		// Do not hang on output pipes held open by grandchildren.
		cmd.WaitDelay = 2 * time.Second
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start process %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		status := "still running"
		if err := p.Kill(); err != nil {
			t.Logf("%v", err)
		} else if p.err != nil {
			status = p.err.Error()
		} else {
			status = "exit status 0"
		}
		if t.Failed() {
			t.Logf("testenv: output of process %s (pid %d, %s):\n%s", name, p.Pid(), status, p.Output())
		}
	})
	return p
}

// Name returns the name given to StartProcess.
func (p *Process) Name() string { return p.name }

// Pid returns the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output returns everything the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Done returns a channel closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its exit error as
// exec.Cmd.Wait does (nil for exit status 0).
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// ExitCode returns the exit code, or -1 if the process was killed by a
// signal or has not exited.
func (p *Process) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.cmd.ProcessState.ExitCode()
}

// Kill sends SIGKILL to the process's group and waits until it has exited.
// It returns an error only if the process did not exit; killing a process
// that already exited is a no-op.
func (p *Process) Kill() error {
	if !p.Exited() {
		_ = syscall.Kill(-p.Pid(), syscall.SIGKILL)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(processStopTimeout):
		return fmt.Errorf("testenv: process %s (pid %d) did not exit after SIGKILL", p.name, p.Pid())
	}
}

// Stop sends SIGTERM to the process, waits up to 10s for it to exit (then
// SIGKILLs its group), and returns the process's exit error as Wait does.
func (p *Process) Stop() error {
	if !p.Exited() {
		_ = syscall.Kill(p.Pid(), syscall.SIGTERM)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(processStopTimeout):
		if err := p.Kill(); err != nil {
			return err
		}
		return fmt.Errorf("testenv: process %s did not stop within %v after SIGTERM; killed", p.name, processStopTimeout)
	}
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// SelfCommand returns a command that re-executes the running test binary
// with RoleEnv=role in its environment (plus env, "K=V" entries), so that
// TestMain can run a component instead of the tests:
//
//	func TestMain(m *testing.M) {
//		if testenv.Role() == "ingest" { runIngest(); return }
//		os.Exit(testenv.Main(m))
//	}
//
// The child runs no tests (-test.run=^$) even if its role is not handled.
func SelfCommand(role string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), RoleEnv+"="+role), env...)
	return cmd
}

// Role returns the role a re-executed test binary was given by SelfCommand,
// or "" in a normal test run.
func Role() string { return os.Getenv(RoleEnv) }

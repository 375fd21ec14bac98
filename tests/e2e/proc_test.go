package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proc is one child process (etcd or kube-apiserver) with its output in a log file.
// It stays in the test's process group (so a harness that kills the group kills it
// too) and gets SIGKILL if the test binary dies first (Pdeathsig).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	logFile *os.File
	done    chan struct{}
	err     error // valid after done is closed
}

func startProc(t *testing.T, name, logPath, bin string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("%s: open log: %v", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.Stdin = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("%s: start %s: %v", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, logFile: f, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	// registered before any wait, so a failing test still ends the process
	t.Cleanup(func() { p.stop(t, 30*time.Second) })
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILL. Safe to call more than once.
func (p *proc) stop(t *testing.T, grace time.Duration) {
	t.Helper()
	if p.exited() {
		return
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		t.Logf("%s (pid %d) stopped on SIGTERM in %s (%v)", p.name, p.cmd.Process.Pid,
			time.Since(start).Round(time.Millisecond), exitDesc(p.err))
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Logf("%s (pid %d) did not stop within %s of SIGTERM: killed", p.name, p.cmd.Process.Pid, grace)
	}
}

func exitDesc(err error) string {
	if err == nil {
		return "exit 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.String()
	}
	return err.Error()
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.logPath, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// dumpOnFailure logs the tail of the process's output if the test failed.
func (p *proc) dumpOnFailure(t *testing.T, n int) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- last %d lines of %s (%s) ----\n%s\n---- end of %s ----", n, p.name, p.logPath, p.tail(n), p.name)
		}
	})
}

// grepLog counts lines in the log that contain substr.
func (p *proc) grepLog(substr string) int {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), substr)
}

// freePorts reserves n distinct loopback TCP ports by listening on :0 and closing them
// together (a tiny race with other processes remains; callers retry on bind failure).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("reserve a loopback port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

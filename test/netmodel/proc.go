package netmodel

import (
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
)

// Proc is a program running inside a network namespace for a test.
type Proc struct {
	Name string
	Cmd  *exec.Cmd
	// Out is its combined stdout and stderr.
	Out *testenv.SyncBuffer
	// Exited is closed when it has exited.
	Exited chan struct{}
}

// StartProc starts bin with args inside ns, in directory dir. It is killed
// at cleanup, and when the test failed the tail of its output is logged. (No
// Pdeathsig: the parent is the OS thread that started it, and Go may end that
// thread — e.g. after a namespace switch it could not undo — long before the
// test does.)
func StartProc(t testing.TB, ns *NS, dir, name, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Cmd: exec.Command(bin, args...), Out: &testenv.SyncBuffer{}, Exited: make(chan struct{})}
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	p.Cmd.Dir = dir
	if err := ns.Do(p.Cmd.Start); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.Cmd.Wait(); close(p.Exited) }()
	t.Cleanup(func() {
		p.Cmd.Process.Kill()
		<-p.Exited
		if t.Failed() {
			t.Logf("%s output (tail):\n%s", name, Tail(p.Out.String(), 4000))
		}
	})
	return p
}

// Tail returns the last n bytes of s, marked with "…" when cut.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Stop sends SIGTERM and waits up to timeout for the process to exit; it
// returns false (after killing it) when it did not.
func (p *Proc) Stop(timeout time.Duration) bool {
	p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.Exited:
		return true
	case <-time.After(timeout):
		p.Cmd.Process.Kill()
		<-p.Exited
		return false
	}
}

// WaitReady waits until url, fetched with hc, answers 200 OK and p's output
// holds logLine (empty: any output). During a handover the old process
// answers on the same address (SO_REUSEPORT): the line tells that this one
// is ready itself. It fails the test when p exits first or after timeout.
func (p *Proc) WaitReady(t testing.TB, hc *http.Client, url, logLine string, timeout time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		select {
		case <-p.Exited:
			t.Fatalf("%s exited: %v\n%s", p.Name, p.Cmd.ProcessState, p.Out.String())
		default:
		}
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(p.Out.String(), logLine) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %s:\n%s", p.Name, timeout, p.Out.String())
}

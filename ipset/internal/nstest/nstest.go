// Package nstest gives kernel tests of the set backends a network namespace of
// their own, so that nothing on the host is touched.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
	"github.com/vishvananda/netns"
)

// NS is a named network namespace that lives as long as the test.
type NS struct {
	Name   string
	Handle netns.NsHandle
}

// New creates a named namespace ("ip netns exec NAME" works) and deletes it when
// the test ends. It needs root.
func New(t testing.TB) *NS {
	t.Helper()
	testenv.RequireRoot(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "egressd-ipset-" + hex.EncodeToString(b)
	type res struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan res)
	go func() {
		// The thread switches namespaces; if restoring fails it must not be reused,
		// so it stays locked and dies with the goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer orig.Close()
		h, err := netns.NewNamed(name)
		if err != nil {
			ch <- res{err: err}
			return
		}
		if err := netns.Set(orig); err != nil {
			ch <- res{h: h, err: err}
			return
		}
		runtime.UnlockOSThread()
		ch <- res{h: h}
	}()
	r := <-ch
	if r.err != nil {
		if r.h.IsOpen() {
			r.h.Close()
			_ = netns.DeleteNamed(name)
		}
		t.Fatalf("create network namespace %s: %v", name, r.err)
	}
	ns := &NS{Name: name, Handle: r.h}
	t.Cleanup(func() {
		ns.Handle.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	return ns
}

// Run runs a command inside the namespace (ip netns exec) and returns its stdout.
func (ns *NS) Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := ns.Cmd(args...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("ip netns exec %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, msg)
	}
	return string(out)
}

// Cmd returns the command that runs args inside the namespace.
func (ns *NS) Cmd(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
}

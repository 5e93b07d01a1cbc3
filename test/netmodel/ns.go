package netmodel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetNSDir is where named network namespaces are bind-mounted (as by `ip netns add`),
// so that `ip netns exec NAME ...` and `ip netns list` see ours.
const NetNSDir = "/run/netns"

// PrefixBase starts the name of every namespace this package creates. The full prefix
// of a process is PrefixBase + "<pid>-" (see DefaultPrefix); CleanupStale uses the pid to
// find namespaces left behind by processes that are gone.
const PrefixBase = "egt-"

// DefaultPrefix is the namespace-name prefix of this process: "egt-<pid>-".
func DefaultPrefix() string { return PrefixBase + strconv.Itoa(os.Getpid()) + "-" }

var nodeSeq atomic.Uint32

// NS is one network namespace created by this package: the node, a pod or an external
// peer. It is named (bind-mounted under NetNSDir), so shell tools reach it with
// `ip netns exec NetNSName() ...`.
type NS struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

// NetNSName is the namespace's name under NetNSDir (for `ip netns exec`).
func (n *NS) NetNSName() string { return n.name }

// NetNSPath is the bind-mount path of the namespace, e.g. for nsenter --net=PATH.
func (n *NS) NetNSPath() string { return filepath.Join(NetNSDir, n.name) }

// NsHandle is an open file descriptor of the namespace. It stays valid until the owning
// Node is closed; do not close it. For google/nftables use
// nftables.New(nftables.WithNetNSFd(int(h))).
func (n *NS) NsHandle() netns.NsHandle { return n.h }

// Fd is NsHandle as an int (for nftables.WithNetNSFd, netlink.NsFd, setns).
func (n *NS) Fd() int { return int(n.h) }

// Netlink is a netlink handle whose sockets live in the namespace; it is shared, do not
// close it.
func (n *NS) Netlink() *netlink.Handle { return n.nl }

// Do runs fn on an OS thread that has entered the namespace. Sockets fn creates stay in
// the namespace after Do returns; goroutines fn starts do not run in it.
func (n *NS) Do(fn func() error) error { return Do(n.h, fn) }

// Exec runs a program inside the namespace (like `ip netns exec NAME prog args...`) and
// returns its combined output. stdin, when not empty, is fed to the program (handy for
// `nft -f -`).
func (n *NS) Exec(ctx context.Context, stdin string, prog string, args ...string) ([]byte, error) {
	return Exec(ctx, n.h, stdin, prog, args...)
}

// Do runs fn on an OS thread that has entered the network namespace ns, then moves the
// thread back. fn runs on a fresh goroutine locked to its thread; if the thread cannot be
// moved back it is discarded (the goroutine exits still locked, which ends the thread), so
// no other goroutine ever runs in a namespace by accident. A panic in fn is re-raised in
// the caller.
func Do(ns netns.NsHandle, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		pv       any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := netns.Get()
		if err != nil {
			done <- result{err: fmt.Errorf("netmodel: current netns: %w", err)}
			return // locked: thread discarded
		}
		defer origin.Close()
		if err := netns.Set(ns); err != nil {
			done <- result{err: fmt.Errorf("netmodel: enter netns: %w", err)}
			return
		}
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panicked, r.pv = true, p
				}
			}()
			r.err = fn()
		}()
		if err := netns.Set(origin); err == nil {
			runtime.UnlockOSThread()
		}
		done <- r
	}()
	r := <-done
	if r.panicked {
		panic(r.pv)
	}
	return r.err
}

// Exec runs prog in the network namespace ns (the child is forked from a thread inside
// it) and returns the combined output.
func Exec(ctx context.Context, ns netns.NsHandle, stdin string, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, prog, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := Do(ns, cmd.Start); err != nil {
		return nil, err
	}
	err := cmd.Wait()
	if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", prog, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return []byte(out.String()), err
}

// newNamedNS creates a network namespace bind-mounted at NetNSDir/name, runs setup on a
// thread inside it, and returns an open handle. The creating thread is never reused: its
// goroutine exits locked.
func newNamedNS(name string, setup func(h netns.NsHandle) error) (*NS, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread moves into the new namespace
		fail := func(err error) { done <- result{h: -1, err: err} }
		if err := os.MkdirAll(NetNSDir, 0o755); err != nil {
			fail(err)
			return
		}
		p := filepath.Join(NetNSDir, name)
		f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			fail(fmt.Errorf("netmodel: create %s: %w", p, err))
			return
		}
		f.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			os.Remove(p)
			fail(fmt.Errorf("netmodel: unshare netns: %w", err))
			return
		}
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, p, "none", unix.MS_BIND, ""); err != nil {
			os.Remove(p)
			fail(fmt.Errorf("netmodel: bind-mount netns %s: %w", p, err))
			return
		}
		h, err := netns.Get()
		if err != nil {
			removeNamedNS(name)
			fail(err)
			return
		}
		if setup != nil {
			if err := setup(h); err != nil {
				h.Close()
				removeNamedNS(name)
				fail(err)
				return
			}
		}
		done <- result{h: h}
	}()
	r := <-done
	if r.err != nil {
		return nil, r.err
	}
	nl, err := netlink.NewHandleAt(r.h)
	if err != nil {
		r.h.Close()
		removeNamedNS(name)
		return nil, fmt.Errorf("netmodel: netlink handle in %s: %w", name, err)
	}
	ns := &NS{name: name, h: r.h, nl: nl}
	lo, err := nl.LinkByName("lo")
	if err == nil {
		err = nl.LinkSetUp(lo)
	}
	if err != nil {
		ns.close()
		return nil, fmt.Errorf("netmodel: lo up in %s: %w", name, err)
	}
	return ns, nil
}

// close releases the handles and removes the name; the kernel frees the namespace (and
// the veth pairs in it) when its last socket is gone.
func (n *NS) close() error {
	if n == nil || n.name == "" {
		return nil
	}
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.h >= 0 {
		n.h.Close()
		n.h = -1
	}
	err := removeNamedNS(n.name)
	n.name = ""
	return err
}

func removeNamedNS(name string) error {
	p := filepath.Join(NetNSDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netmodel: unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// writeSysctl writes a /proc/sys/net value; it must run on a thread inside ns and checks
// that it does, so that a host value is never changed by mistake.
func writeSysctl(ns netns.NsHandle, key, value string) error {
	cur, err := netns.Get()
	if err != nil {
		return err
	}
	defer cur.Close()
	if !cur.Equal(ns) {
		return fmt.Errorf("netmodel: refusing to write sysctl %s outside the target netns", key)
	}
	p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("netmodel: sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// ListNamespaces returns the names under NetNSDir that start with prefix.
func ListNamespaces(prefix string) ([]string, error) {
	ents, err := os.ReadDir(NetNSDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Cleanup removes every named namespace whose name starts with prefix (it must not be
// empty). Namespaces still in use by a running process of this package are removed too:
// prefer CleanupStale unless prefix identifies a dead run.
func Cleanup(prefix string) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("netmodel: Cleanup needs a prefix")
	}
	names, err := ListNamespaces(prefix)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, n := range names {
		errs = append(errs, removeNamedNS(n))
	}
	return names, errors.Join(errs...)
}

// CleanupStale removes the namespaces named "egt-<pid>-..." whose process no longer
// exists (left behind by a crashed or killed test run). It is safe to call while other
// test processes use the package.
func CleanupStale() ([]string, error) {
	names, err := ListNamespaces(PrefixBase)
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, n := range names {
		rest := strings.TrimPrefix(n, PrefixBase)
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, perr := strconv.Atoi(pidStr)
		if !ok || perr != nil || pid <= 0 {
			continue
		}
		if pid == os.Getpid() || processAlive(pid) {
			continue
		}
		if err := removeNamedNS(n); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, n)
	}
	return removed, errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

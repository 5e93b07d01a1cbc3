package kernelipset_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/internal/nstest"
	"github.com/egressd/egressd/ipset/ipsettest"
	"github.com/egressd/egressd/ipset/kernelipset"
	"github.com/egressd/egressd/test/testenv"
)

func newManager(t testing.TB) (*kernelipset.Manager, *nstest.NS) {
	t.Helper()
	ns := nstest.New(t)
	m, err := kernelipset.New(kernelipset.WithNetNS(ns.Handle))
	if err != nil {
		if errors.Is(err, ipset.ErrUnsupported) {
			testenv.Unavailable(t, "%v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, ns
}

// pairsSupported reports whether the kernel has hash:net,net.
func pairsSupported(t *testing.T) bool {
	m, _ := newManager(t)
	err := m.Ensure(t.Context(), ipset.Spec{Name: "probe", Family: ipset.IPv4, Kind: ipset.KindAddrPair})
	if errors.Is(err, ipset.ErrUnsupported) {
		t.Logf("kernel without hash:net,net: %v", err)
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

func TestConformance(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "ipset")
	pairs := pairsSupported(t)
	ipsettest.Run(t, func(t *testing.T) *ipsettest.Env {
		m, ns := newManager(t)
		return &ipsettest.Env{
			Manager: m,
			Reopen: func(t *testing.T) ipset.Manager {
				m2, err := kernelipset.New(kernelipset.WithNetNS(ns.Handle))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(m2.Close)
				return m2
			},
			Granularity: time.Second,
			Kernel:      func(t *testing.T, set string) []ipset.Element { return ipsetSave(t, ns, set) },
			NoPairs:     !pairs,
		}
	})
}

// ipsetSave reads a set with `ipset save` inside the namespace.
func ipsetSave(t *testing.T, ns *nstest.NS, set string) []ipset.Element {
	t.Helper()
	var out []ipset.Element
	for _, line := range strings.Split(ns.Run(t, "ipset", "save", set), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "add" {
			continue
		}
		var e ipset.Element
		parts := strings.Split(f[2], ",")
		parse := func(s string) netip.Prefix {
			if strings.Contains(s, "/") {
				return netip.MustParsePrefix(s)
			}
			a := netip.MustParseAddr(s)
			return netip.PrefixFrom(a, a.BitLen())
		}
		e.Prefix = parse(parts[len(parts)-1])
		if len(parts) == 2 {
			e.Src = parse(parts[0]).Addr()
		}
		for i := 3; i+1 < len(f); i++ {
			if f[i] == "timeout" && f[i+1] != "0" {
				d, err := time.ParseDuration(f[i+1] + "s")
				if err != nil {
					t.Fatal(err)
				}
				e.Timeout = max(d, time.Millisecond)
			}
		}
		out = append(out, e)
	}
	return out
}

// TestKernelDefinition checks the set types and options as ipset shows them, and
// that a /0 is held as two /1 entries.
func TestKernelDefinition(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "ipset")
	m, ns := newManager(t)
	ctx := t.Context()
	if err := m.Ensure(ctx,
		ipset.Spec{Name: "a", Family: ipset.IPv4, Kind: ipset.KindAddr, Timeout: true},
		ipset.Spec{Name: "n", Family: ipset.IPv6, Kind: ipset.KindPrefix},
	); err != nil {
		t.Fatal(err)
	}
	save := ns.Run(t, "ipset", "save")
	for _, want := range []string{"create a hash:ip family inet", "timeout 0", "create n hash:net family inet6"} {
		if !strings.Contains(save, want) {
			t.Errorf("ipset save lacks %q:\n%s", want, save)
		}
	}
	if err := m.Apply(ctx, ipset.Op{Kind: ipset.OpAdd, Set: "n", Elements: []ipset.Element{{Prefix: netip.MustParsePrefix("::/0")}}}); err != nil {
		t.Fatal(err)
	}
	save = ns.Run(t, "ipset", "save", "n")
	if !strings.Contains(save, "add n ::/1") || !strings.Contains(save, "add n 8000::/1") {
		t.Errorf("::/0 not held as two /1:\n%s", save)
	}
	// An element of a timeout set whose timeout is refreshed by re-adding.
	addr := netip.MustParseAddr("10.0.0.1")
	if err := m.Apply(ctx, ipset.Op{Kind: ipset.OpAdd, Set: "a", Elements: []ipset.Element{ipset.Addr(addr, 10*time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx, ipset.Op{Kind: ipset.OpAdd, Set: "a", Elements: []ipset.Element{ipset.Addr(addr, 1000*time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if save := ns.Run(t, "ipset", "save", "a"); !strings.Contains(save, "add a 10.0.0.1 timeout 99") && !strings.Contains(save, "add a 10.0.0.1 timeout 1000") {
		t.Errorf("timeout not refreshed:\n%s", save)
	}
}

// TestPairsUnsupported: on a kernel without hash:net,net, Ensure of a pair set
// says so clearly; with it, the conformance suite covers pairs.
func TestPairsUnsupported(t *testing.T) {
	testenv.RequireRoot(t)
	m, _ := newManager(t)
	err := m.Ensure(t.Context(), ipset.Spec{Name: "pairs", Family: ipset.IPv4, Kind: ipset.KindAddrPair, Timeout: true})
	if err == nil {
		// This kernel has hash:net,net: the conformance suite covers pairs.
		t.Log("pair sets supported here")
		return
	}
	var ie *ipset.Error
	if !errors.As(err, &ie) || ie.Set != "pairs" || !errors.Is(err, ipset.ErrUnsupported) || !strings.Contains(err.Error(), "hash:net,net") {
		t.Fatalf("unclear error: %v", err)
	}
	t.Logf("as expected here: %v", err)
}

func TestNameTooLong(t *testing.T) {
	testenv.RequireRoot(t)
	m, _ := newManager(t)
	name := strings.Repeat("x", 32)
	err := m.Ensure(t.Context(), ipset.Spec{Name: name, Family: ipset.IPv4, Kind: ipset.KindAddr})
	if !errors.Is(err, ipset.ErrInvalid) || !strings.Contains(err.Error(), name) {
		t.Fatalf("Ensure with a 32-byte name: %v", err)
	}
}

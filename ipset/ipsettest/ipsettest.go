// Package ipsettest is the conformance suite every ipset.Manager runs: the nftables
// backend and the in-memory fake must behave the same, so that
// unit tests written against the fake hold for the kernel.
//
//	func TestConformance(t *testing.T) {
//		ipsettest.Run(t, func(t *testing.T) *ipsettest.Env {
//			return &ipsettest.Env{Manager: newManagerInFreshNamespace(t)}
//		})
//	}
package ipsettest

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/internal/iprange"
)

// Env is one fresh, empty backend for one subtest.
type Env struct {
	// Manager under test. Its sets must start empty (a fresh namespace).
	Manager ipset.Manager
	// Reopen, when set, returns a second Manager on the same backend (another
	// process after a restart): sets made by Manager must be adopted by it.
	Reopen func(t *testing.T) ipset.Manager
	// Wait lets d pass for the backend (the fake advances its clock). Default
	// time.Sleep.
	Wait func(d time.Duration)
	// Granularity is the backend's timeout resolution (ipset: 1s). Default 1ms.
	Granularity time.Duration
	// Kernel, when set, returns the content of the set as the kernel's own tool
	// shows it (nft -j, ipset save), for the check that the kernel agrees with List.
	// Timeout is the remaining time the tool shows (zero for none).
	Kernel func(t *testing.T, set string) []ipset.Element
	// NoPairs says that the backend cannot hold KindAddrPair sets here (ipset on a
	// kernel without hash:net,net): the pair parts of the suite are left out.
	NoPairs bool
}

// pairs reports whether pair sets are tested; with NoPairs it logs why not.
func (e *Env) pairs(t *testing.T) bool {
	t.Helper()
	if e.NoPairs {
		t.Log("pair sets left out: the backend cannot hold them here")
	}
	return !e.NoPairs
}

// only drops the pair specs when the backend cannot hold them.
func (e *Env) only(specs ...ipset.Spec) []ipset.Spec {
	if !e.NoPairs {
		return specs
	}
	return slices.DeleteFunc(specs, func(s ipset.Spec) bool { return s.Kind == ipset.KindAddrPair })
}

// Run runs the suite; newEnv is called once per subtest.
func Run(t *testing.T, newEnv func(t *testing.T) *Env) {
	tests := []struct {
		name string
		fn   func(t *testing.T, e *Env)
	}{
		{"EnsureAdopt", testEnsureAdopt},
		{"AddListDelete", testAddListDelete},
		{"Timeouts", testTimeouts},
		{"Expiry", testExpiry},
		{"Intervals", testIntervals},
		{"IntervalTimeouts", testIntervalTimeouts},
		{"IPv6", testIPv6},
		{"Pairs", testPairs},
		{"Replace", testReplace},
		{"Atomic", testAtomic},
		{"Errors", testErrors},
		{"Destroy", testDestroy},
		{"Concurrent", testConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			if e.Wait == nil {
				e.Wait = time.Sleep
			}
			if e.Granularity == 0 {
				e.Granularity = time.Millisecond
			}
			tc.fn(t, e)
		})
	}
}

var ctx = context.Background()

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }
func pfx(s string) netip.Prefix {
	if !strings.Contains(s, "/") {
		a := addr(s)
		return netip.PrefixFrom(a, a.BitLen())
	}
	return netip.MustParsePrefix(s)
}
func el(s string, to time.Duration) ipset.Element { return ipset.Element{Prefix: pfx(s), Timeout: to} }
func pair(src, dst string, to time.Duration) ipset.Element {
	return ipset.Pair(addr(src), addr(dst), to)
}
func add(set string, es ...ipset.Element) ipset.Op {
	return ipset.Op{Kind: ipset.OpAdd, Set: set, Elements: es}
}
func del(set string, es ...ipset.Element) ipset.Op {
	return ipset.Op{Kind: ipset.OpDelete, Set: set, Elements: es}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ensure(t *testing.T, e *Env, specs ...ipset.Spec) {
	t.Helper()
	must(t, e.Manager.Ensure(ctx, specs...))
}

func apply(t *testing.T, e *Env, ops ...ipset.Op) {
	t.Helper()
	must(t, e.Manager.Apply(ctx, ops...))
}

func list(t *testing.T, m ipset.Manager, set string) []ipset.Element {
	t.Helper()
	got, err := m.List(ctx, set)
	must(t, err)
	return got
}

// strs renders elements without timeouts, sorted.
func strs(es []ipset.Element) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.String()
	}
	slices.Sort(out)
	return out
}

// canon renders the elements of a prefix set as the fewest CIDRs of their union.
func canon(es []ipset.Element) []string {
	var s iprange.Set
	for _, e := range es {
		s.Add(e.Prefix, time.Time{})
	}
	var out []string
	for _, p := range s.Prefixes() {
		out = append(out, p.Prefix.String())
	}
	slices.Sort(out)
	return out
}

// expect checks List (and the kernel's view) against want, ignoring timeouts.
func expect(t *testing.T, e *Env, set string, want ...string) []ipset.Element {
	t.Helper()
	got := list(t, e.Manager, set)
	slices.Sort(want)
	if want == nil {
		want = []string{}
	}
	gs := strs(got)
	if !slices.Equal(gs, want) {
		t.Fatalf("List(%s) = %v, want %v", set, gs, want)
	}
	agree(t, e, set, got)
	return got
}

// agree checks that the kernel's own tool shows what List returned.
func agree(t *testing.T, e *Env, set string, got []ipset.Element) {
	t.Helper()
	if e.Kernel == nil {
		return
	}
	k := e.Kernel(t, set)
	prefixSet := slices.ContainsFunc(got, func(x ipset.Element) bool {
		return !x.Src.IsValid() && x.Prefix.Bits() != x.Prefix.Addr().BitLen()
	}) || slices.ContainsFunc(k, func(x ipset.Element) bool {
		return !x.Src.IsValid() && x.Prefix.Bits() != x.Prefix.Addr().BitLen()
	})
	if prefixSet {
		if a, b := canon(k), canon(got); !slices.Equal(a, b) {
			t.Fatalf("kernel shows %s = %v, List returned %v", set, a, b)
		}
		return
	}
	if a, b := strs(k), strs(got); !slices.Equal(a, b) {
		t.Fatalf("kernel shows %s = %v, List returned %v", set, a, b)
	}
	timed := map[string]bool{}
	for _, x := range k {
		timed[x.Key()] = x.Timeout > 0
	}
	for _, x := range got {
		if (x.Timeout > 0) != timed[x.Key()] {
			t.Fatalf("%s element %s: List timeout %v, kernel timed=%v", set, x, x.Timeout, timed[x.Key()])
		}
	}
}

func find(t *testing.T, es []ipset.Element, s string) ipset.Element {
	t.Helper()
	for _, e := range es {
		if e.String() == s {
			return e
		}
	}
	t.Fatalf("element %s not in %v", s, strs(es))
	return ipset.Element{}
}

// checkErr checks that err is an *ipset.Error that wraps target and names the set
// and (when not empty) the element.
func checkErr(t *testing.T, err, target error, set, elem string) {
	t.Helper()
	var ie *ipset.Error
	switch {
	case err == nil:
		t.Fatalf("no error, want %v", target)
	case !errors.As(err, &ie):
		t.Fatalf("error %v (%T) is not an *ipset.Error", err, err)
	case !errors.Is(err, target):
		t.Fatalf("error %v does not wrap %v", err, target)
	case !strings.Contains(ie.Set, set) || !strings.Contains(err.Error(), set):
		t.Fatalf("error %v does not name set %q", err, set)
	case elem != "" && (ie.Element != elem || !strings.Contains(err.Error(), elem)):
		t.Fatalf("error %v does not name element %q (Element=%q)", err, elem, ie.Element)
	}
}

var (
	addr4  = ipset.Spec{Name: "addr4", Family: ipset.IPv4, Kind: ipset.KindAddr}
	addr4t = ipset.Spec{Name: "addr4t", Family: ipset.IPv4, Kind: ipset.KindAddr, Timeout: true}
	addr6t = ipset.Spec{Name: "addr6t", Family: ipset.IPv6, Kind: ipset.KindAddr, Timeout: true}
	net4   = ipset.Spec{Name: "net4", Family: ipset.IPv4, Kind: ipset.KindPrefix}
	net4t  = ipset.Spec{Name: "net4t", Family: ipset.IPv4, Kind: ipset.KindPrefix, Timeout: true}
	net6   = ipset.Spec{Name: "net6", Family: ipset.IPv6, Kind: ipset.KindPrefix}
	pair4t = ipset.Spec{Name: "pair4t", Family: ipset.IPv4, Kind: ipset.KindAddrPair, Timeout: true}
	pair6  = ipset.Spec{Name: "pair6", Family: ipset.IPv6, Kind: ipset.KindAddrPair}
)

func testEnsureAdopt(t *testing.T, e *Env) {
	all := e.only(addr4, addr4t, addr6t, net4, net4t, net6, pair4t, pair6)
	ensure(t, e, all...)
	ensure(t, e, all...) // idempotent
	for _, s := range all {
		expect(t, e, s.Name)
	}
	apply(t, e, add("addr4", el("10.0.0.1", 0)), add("net4", el("10.0.0.0/8", 0)))
	ensure(t, e, addr4, net4) // adopts, keeps the elements
	expect(t, e, "addr4", "10.0.0.1")
	expect(t, e, "net4", "10.0.0.0/8")

	for _, bad := range []ipset.Spec{
		{Name: "addr4", Family: ipset.IPv6, Kind: ipset.KindAddr},
		{Name: "addr4", Family: ipset.IPv4, Kind: ipset.KindPrefix},
		{Name: "addr4", Family: ipset.IPv4, Kind: ipset.KindAddr, Timeout: true},
		{Name: "net6", Family: ipset.IPv6, Kind: ipset.KindAddr},
	} {
		checkErr(t, e.Manager.Ensure(ctx, bad), ipset.ErrMismatch, bad.Name, "")
	}
	checkErr(t, e.Manager.Ensure(ctx, ipset.Spec{Name: "x", Family: 5, Kind: ipset.KindAddr}), ipset.ErrInvalid, "x", "")
	checkErr(t, e.Manager.Ensure(ctx, ipset.Spec{Name: "y", Family: ipset.IPv4}), ipset.ErrInvalid, "y", "")

	if e.Reopen == nil {
		return
	}
	m2 := e.Reopen(t)
	// A second manager writes to sets it did not create, without Ensure.
	must(t, m2.Apply(ctx, add("addr4t", el("10.0.0.2", time.Hour)), add("net6", el("fd00::/8", 0))))
	if got := strs(list(t, m2, "addr4")); !slices.Equal(got, []string{"10.0.0.1"}) {
		t.Fatalf("adopted addr4 = %v", got)
	}
	expect(t, e, "addr4t", "10.0.0.2")
	expect(t, e, "net6", "fd00::/8")
	if e.pairs(t) {
		must(t, m2.Apply(ctx, add("pair6", pair("fd00::1", "2001:db8::1", 0))))
		expect(t, e, "pair6", "fd00::1 . 2001:db8::1")
	}
	must(t, m2.Ensure(ctx, all...))
	checkErr(t, m2.Ensure(ctx, ipset.Spec{Name: "net4", Family: ipset.IPv4, Kind: ipset.KindAddr}), ipset.ErrMismatch, "net4", "")
}

func testAddListDelete(t *testing.T, e *Env) {
	ensure(t, e, addr4)
	apply(t, e, add("addr4", el("10.0.0.3", 0), el("10.0.0.1", 0), el("192.168.1.1", 0), el("10.0.0.1", 0)))
	got := expect(t, e, "addr4", "10.0.0.1", "10.0.0.3", "192.168.1.1")
	for _, x := range got {
		if x.Timeout != 0 {
			t.Fatalf("element %s of a set without timeouts has timeout %v", x, x.Timeout)
		}
	}
	// Re-adding is not an error; deleting an absent element is not an error.
	apply(t, e, add("addr4", el("10.0.0.3", 0)), del("addr4", el("10.0.0.1", 0), el("10.9.9.9", 0)))
	expect(t, e, "addr4", "10.0.0.3", "192.168.1.1")
	// IPv4-mapped IPv6 addresses count as IPv4.
	apply(t, e, add("addr4", el("::ffff:10.0.0.4", 0)))
	expect(t, e, "addr4", "10.0.0.3", "10.0.0.4", "192.168.1.1")
	// Ops run in order: flush, then add.
	apply(t, e, ipset.Op{Kind: ipset.OpFlush, Set: "addr4"}, add("addr4", el("10.0.0.5", 0)))
	expect(t, e, "addr4", "10.0.0.5")
	// Add then delete of the same element in one batch leaves it absent.
	apply(t, e, add("addr4", el("10.0.0.6", 0)), del("addr4", el("10.0.0.6", 0)))
	expect(t, e, "addr4", "10.0.0.5")
	apply(t, e) // empty batch
}

func within(t *testing.T, x ipset.Element, lo, hi time.Duration) {
	t.Helper()
	if x.Timeout < lo || x.Timeout > hi {
		t.Fatalf("element %s: remaining timeout %v, want in [%v, %v]", x, x.Timeout, lo, hi)
	}
}

func testTimeouts(t *testing.T, e *Env) {
	pairs := e.pairs(t)
	ensure(t, e, e.only(addr4t, pair4t)...)
	g := e.Granularity
	apply(t, e, add("addr4t", el("10.0.0.1", 100*time.Second), el("10.0.0.2", 0), el("10.0.0.3", time.Hour)))
	if pairs {
		apply(t, e, add("pair4t", pair("10.1.0.1", "1.1.1.1", 100*time.Second)))
		within(t, find(t, expect(t, e, "pair4t", "10.1.0.1 . 1.1.1.1"), "10.1.0.1 . 1.1.1.1"), 95*time.Second, 100*time.Second)
	}
	got := expect(t, e, "addr4t", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	within(t, find(t, got, "10.0.0.1"), 95*time.Second, 100*time.Second)
	within(t, find(t, got, "10.0.0.2"), 0, 0)
	within(t, find(t, got, "10.0.0.3"), time.Hour-5*time.Second, time.Hour)

	e.Wait(2*g + 100*time.Millisecond)
	before := find(t, list(t, e.Manager, "addr4t"), "10.0.0.1").Timeout
	if before > 100*time.Second-2*g {
		t.Fatalf("remaining timeout %v did not run down after waiting %v", before, 2*g)
	}
	if pairs {
		pairBefore := find(t, list(t, e.Manager, "pair4t"), "10.1.0.1 . 1.1.1.1").Timeout
		apply(t, e, add("pair4t", pair("10.1.0.1", "1.1.1.1", 100*time.Second)))
		if p := find(t, list(t, e.Manager, "pair4t"), "10.1.0.1 . 1.1.1.1"); p.Timeout <= pairBefore {
			t.Fatalf("re-add did not refresh the pair's timeout: %v before, %v after", pairBefore, p.Timeout)
		}
	}
	// Re-adding refreshes: longer, shorter, from none to some and from some to none.
	apply(t, e, add("addr4t", el("10.0.0.1", 100*time.Second), el("10.0.0.2", 50*time.Second), el("10.0.0.3", 0)))
	got = expect(t, e, "addr4t", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	after := find(t, got, "10.0.0.1")
	if after.Timeout <= before {
		t.Fatalf("re-add did not refresh the timeout: %v before, %v after", before, after.Timeout)
	}
	within(t, after, 95*time.Second, 100*time.Second)
	within(t, find(t, got, "10.0.0.2"), 45*time.Second, 50*time.Second)
	within(t, find(t, got, "10.0.0.3"), 0, 0)
	apply(t, e, add("addr4t", el("10.0.0.1", time.Hour)))
	within(t, find(t, list(t, e.Manager, "addr4t"), "10.0.0.1"), time.Hour-5*time.Second, time.Hour)
	// Replace keeps per-element timeouts too.
	must(t, e.Manager.Replace(ctx, "addr4t", []ipset.Element{el("10.0.0.9", 30*time.Second)}))
	within(t, find(t, expect(t, e, "addr4t", "10.0.0.9"), "10.0.0.9"), 25*time.Second, 30*time.Second)
}

func testExpiry(t *testing.T, e *Env) {
	pairs := e.pairs(t)
	ensure(t, e, e.only(addr4t, pair4t, net4t)...)
	short := 300 * time.Millisecond
	if e.Granularity >= time.Second {
		short = e.Granularity
	}
	apply(t, e,
		add("addr4t", el("10.0.0.1", short), el("10.0.0.2", time.Hour), el("10.0.0.3", 0)),
		add("net4t", el("10.0.0.0/24", short), el("10.1.0.0/16", time.Hour)))
	if pairs {
		apply(t, e, add("pair4t", pair("10.0.0.1", "1.1.1.1", short), pair("10.0.0.1", "2.2.2.2", time.Hour)))
	}
	expect(t, e, "addr4t", "10.0.0.1", "10.0.0.2", "10.0.0.3")
	e.Wait(2*short + e.Granularity)
	expect(t, e, "addr4t", "10.0.0.2", "10.0.0.3")
	if pairs {
		expect(t, e, "pair4t", "10.0.0.1 . 2.2.2.2")
	}
	expect(t, e, "net4t", "10.1.0.0/16")
	// Adding an expired element again works.
	apply(t, e, add("addr4t", el("10.0.0.1", time.Hour)))
	expect(t, e, "addr4t", "10.0.0.1", "10.0.0.2", "10.0.0.3")
}

func testIntervals(t *testing.T, e *Env) {
	ensure(t, e, net4)
	// Overlapping and adjacent prefixes in one batch are merged.
	apply(t, e, add("net4", el("10.0.0.0/24", 0), el("10.0.1.0/24", 0), el("10.0.0.128/25", 0), el("10.0.0.7/32", 0)))
	expect(t, e, "net4", "10.0.0.0/23")
	// ... and across batches (a prefix inside, one overlapping the edge, one adjacent).
	apply(t, e, add("net4", el("10.0.1.5/32", 0)), add("net4", el("10.0.0.0/22", 0)), add("net4", el("10.0.4.0/24", 0)))
	expect(t, e, "net4", "10.0.0.0/22", "10.0.4.0/24")
	// Singletons.
	apply(t, e, add("net4", el("192.168.7.7/32", 0), el("172.16.0.1", 0)))
	expect(t, e, "net4", "10.0.0.0/22", "10.0.4.0/24", "192.168.7.7", "172.16.0.1")
	// Except-style: delete a prefix out of a larger one.
	apply(t, e, add("net4", el("192.168.0.0/16", 0)), del("net4", el("192.168.1.0/24", 0), el("192.168.7.7", 0)))
	expect(t, e, "net4", "10.0.0.0/22", "10.0.4.0/24", "172.16.0.1",
		"192.168.0.0/24", "192.168.2.0/23", "192.168.4.0/23", "192.168.6.0/24", "192.168.7.0/30",
		"192.168.7.4/31", "192.168.7.6", "192.168.7.8/29", "192.168.7.16/28", "192.168.7.32/27",
		"192.168.7.64/26", "192.168.7.128/25", "192.168.8.0/21", "192.168.16.0/20", "192.168.32.0/19",
		"192.168.64.0/18", "192.168.128.0/17")
	// Deleting what is not there is not an error.
	apply(t, e, del("net4", el("8.8.8.0/24", 0)))
	// The whole address space, and everything except one range.
	apply(t, e, add("net4", el("0.0.0.0/0", 0)))
	expect(t, e, "net4", "0.0.0.0/0")
	apply(t, e, del("net4", el("10.0.0.0/8", 0)))
	expect(t, e, "net4", "0.0.0.0/5", "8.0.0.0/7", "11.0.0.0/8", "12.0.0.0/6", "16.0.0.0/4", "32.0.0.0/3", "64.0.0.0/2", "128.0.0.0/1")
	apply(t, e, del("net4", el("255.255.255.255", 0)), add("net4", el("10.0.0.0/8", 0)))
	got := expect(t, e, "net4", "0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4", "240.0.0.0/5", "248.0.0.0/6",
		"252.0.0.0/7", "254.0.0.0/8", "255.0.0.0/9", "255.128.0.0/10", "255.192.0.0/11", "255.224.0.0/12",
		"255.240.0.0/13", "255.248.0.0/14", "255.252.0.0/15", "255.254.0.0/16", "255.255.0.0/17",
		"255.255.128.0/18", "255.255.192.0/19", "255.255.224.0/20", "255.255.240.0/21", "255.255.248.0/22",
		"255.255.252.0/23", "255.255.254.0/24", "255.255.255.0/25", "255.255.255.128/26", "255.255.255.192/27",
		"255.255.255.224/28", "255.255.255.240/29", "255.255.255.248/30", "255.255.255.252/31", "255.255.255.254")
	_ = got
	// Host bits of a prefix are ignored.
	apply(t, e, ipset.Op{Kind: ipset.OpFlush, Set: "net4"}, add("net4", el("10.1.2.3/16", 0)))
	expect(t, e, "net4", "10.1.0.0/16")
	must(t, e.Manager.Replace(ctx, "net4", []ipset.Element{el("0.0.0.0/0", 0)}))
	expect(t, e, "net4", "0.0.0.0/0")
}

func testIntervalTimeouts(t *testing.T, e *Env) {
	ensure(t, e, net4t)
	apply(t, e, add("net4t", el("10.0.0.0/24", 100*time.Second), el("10.0.1.0/24", time.Hour), el("10.2.0.0/16", 0)))
	got := expect(t, e, "net4t", "10.0.0.0/24", "10.0.1.0/24", "10.2.0.0/16")
	within(t, find(t, got, "10.0.0.0/24"), 95*time.Second, 100*time.Second)
	within(t, find(t, got, "10.0.1.0/24"), time.Hour-5*time.Second, time.Hour)
	within(t, find(t, got, "10.2.0.0/16"), 0, 0)
	e.Wait(2*e.Granularity + 100*time.Millisecond)
	before := find(t, list(t, e.Manager, "net4t"), "10.0.0.0/24").Timeout
	// Re-adding refreshes (the /24 and the part of a larger prefix it overlaps).
	apply(t, e, add("net4t", el("10.0.0.0/24", 100*time.Second)))
	after := find(t, expect(t, e, "net4t", "10.0.0.0/24", "10.0.1.0/24", "10.2.0.0/16"), "10.0.0.0/24").Timeout
	if after <= before {
		t.Fatalf("re-add did not refresh the range's timeout: %v before, %v after", before, after)
	}
	apply(t, e, add("net4t", el("10.2.3.0/24", time.Hour)))
	got = expect(t, e, "net4t", "10.0.0.0/24", "10.0.1.0/24", "10.2.0.0/23", "10.2.2.0/24", "10.2.3.0/24",
		"10.2.4.0/22", "10.2.8.0/21", "10.2.16.0/20", "10.2.32.0/19", "10.2.64.0/18", "10.2.128.0/17")
	within(t, find(t, got, "10.2.3.0/24"), time.Hour-5*time.Second, time.Hour)
	within(t, find(t, got, "10.2.2.0/24"), 0, 0)
}

func testIPv6(t *testing.T, e *Env) {
	pairs := e.pairs(t)
	ensure(t, e, e.only(addr6t, net6, pair6)...)
	apply(t, e,
		add("addr6t", el("2001:db8::1", time.Minute), el("2001:db8::2", 0)),
		add("net6", el("2001:db8::/48", 0), el("2001:db8:0:1::/64", 0), el("2001:db8:1::/48", 0), el("fd00::1/128", 0)))
	if pairs {
		apply(t, e, add("pair6", pair("fd00::1", "2001:db8::1", 0)))
		expect(t, e, "pair6", "fd00::1 . 2001:db8::1")
	}
	got := expect(t, e, "addr6t", "2001:db8::1", "2001:db8::2")
	within(t, find(t, got, "2001:db8::1"), 55*time.Second, time.Minute)
	expect(t, e, "net6", "2001:db8::/47", "fd00::1")
	apply(t, e, add("net6", el("::/0", 0)), del("net6", el("fe80::/10", 0)))
	expect(t, e, "net6", "::/1", "8000::/2", "c000::/3", "e000::/4", "f000::/5", "f800::/6", "fc00::/7", "fe00::/9", "fec0::/10", "ff00::/8")
	apply(t, e, del("addr6t", el("2001:db8::1", 0)))
	expect(t, e, "addr6t", "2001:db8::2")
	// The element's family must be the set's.
	checkErr(t, e.Manager.Apply(ctx, add("addr6t", el("10.0.0.1", 0))), ipset.ErrFamily, "addr6t", "10.0.0.1")
	checkErr(t, e.Manager.Apply(ctx, add("addr6t", el("::ffff:10.0.0.1", 0))), ipset.ErrFamily, "addr6t", "::ffff:10.0.0.1")
}

func testPairs(t *testing.T, e *Env) {
	if !e.pairs(t) {
		// The backend cannot hold pair sets on this kernel: Ensure must say so.
		err := e.Manager.Ensure(ctx, pair4t)
		if !errors.Is(err, ipset.ErrUnsupported) {
			t.Fatalf("backend without pair sets: Ensure(%s) = %v, want ErrUnsupported", pair4t.Name, err)
		}
		t.Logf("pair sets unsupported here, as reported: %v", err)
		return
	}
	ensure(t, e, pair4t)
	apply(t, e, add("pair4t",
		pair("10.0.0.1", "1.1.1.1", time.Minute), pair("10.0.0.1", "2.2.2.2", 0), pair("10.0.0.2", "1.1.1.1", time.Minute)))
	expect(t, e, "pair4t", "10.0.0.1 . 1.1.1.1", "10.0.0.1 . 2.2.2.2", "10.0.0.2 . 1.1.1.1")
	apply(t, e, del("pair4t", pair("10.0.0.1", "1.1.1.1", 0), pair("10.0.0.9", "1.1.1.1", 0)))
	got := expect(t, e, "pair4t", "10.0.0.1 . 2.2.2.2", "10.0.0.2 . 1.1.1.1")
	within(t, find(t, got, "10.0.0.2 . 1.1.1.1"), 55*time.Second, time.Minute)
	checkErr(t, e.Manager.Apply(ctx, add("pair4t", el("1.1.1.1", 0))), ipset.ErrInvalid, "pair4t", "1.1.1.1")
	checkErr(t, e.Manager.Apply(ctx, add("pair4t", pair("fd00::1", "1.1.1.1", 0))), ipset.ErrFamily, "pair4t", "fd00::1 . 1.1.1.1")
}

func testReplace(t *testing.T, e *Env) {
	pairs := e.pairs(t)
	ensure(t, e, e.only(addr4, net4, pair6)...)
	apply(t, e, add("addr4", el("10.0.0.1", 0), el("10.0.0.2", 0)), add("net4", el("10.0.0.0/8", 0)))
	must(t, e.Manager.Replace(ctx, "addr4", []ipset.Element{el("10.0.0.2", 0), el("10.0.0.3", 0), el("10.0.0.3", 0)}))
	expect(t, e, "addr4", "10.0.0.2", "10.0.0.3")
	must(t, e.Manager.Replace(ctx, "net4", []ipset.Element{el("10.0.0.0/9", 0), el("10.128.0.0/9", 0), el("192.168.0.0/24", 0)}))
	expect(t, e, "net4", "10.0.0.0/8", "192.168.0.0/24")
	if pairs {
		must(t, e.Manager.Replace(ctx, "pair6", []ipset.Element{pair("fd00::1", "2001:db8::1", 0)}))
		expect(t, e, "pair6", "fd00::1 . 2001:db8::1")
	}
	must(t, e.Manager.Replace(ctx, "addr4", nil))
	expect(t, e, "addr4")
	// A failing Replace changes nothing.
	checkErr(t, e.Manager.Replace(ctx, "net4", []ipset.Element{el("10.0.0.0/8", 0), el("fd00::/8", 0)}), ipset.ErrFamily, "net4", "fd00::/8")
	expect(t, e, "net4", "10.0.0.0/8", "192.168.0.0/24")
	checkErr(t, e.Manager.Replace(ctx, "nope", nil), ipset.ErrNotExist, "nope", "")

	// While Replace runs, readers see the old or the new content, never a mix.
	old := make([]ipset.Element, 200)
	nw := make([]ipset.Element, 200)
	for i := range old {
		old[i] = el(fmt.Sprintf("10.1.%d.%d", i/250, i%250+1), 0)
		nw[i] = el(fmt.Sprintf("10.2.%d.%d", i/250, i%250+1), 0)
	}
	must(t, e.Manager.Replace(ctx, "addr4", old))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var bad error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := e.Manager.List(ctx, "addr4")
			if err != nil {
				bad = err
				return
			}
			if len(got) != 200 {
				bad = fmt.Errorf("reader saw %d elements during Replace", len(got))
				return
			}
			n1 := got[0].Prefix.Addr().As4()[1]
			for _, x := range got {
				if x.Prefix.Addr().As4()[1] != n1 {
					bad = fmt.Errorf("reader saw a mix of old and new content")
					return
				}
			}
		}
	}()
	for i := 0; i < 10; i++ {
		if i%2 == 0 {
			must(t, e.Manager.Replace(ctx, "addr4", nw))
		} else {
			must(t, e.Manager.Replace(ctx, "addr4", old))
		}
	}
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
}

func testAtomic(t *testing.T, e *Env) {
	ensure(t, e, addr4, net4)
	apply(t, e, add("addr4", el("10.0.0.1", 0)))
	// A batch with one bad op changes nothing, in any set.
	err := e.Manager.Apply(ctx,
		add("addr4", el("10.0.0.2", 0)),
		del("addr4", el("10.0.0.1", 0)),
		add("net4", el("10.0.0.0/8", 0)),
		add("addr4", el("10.0.0.0/8", 0)))
	checkErr(t, err, ipset.ErrInvalid, "addr4", "10.0.0.0/8")
	expect(t, e, "addr4", "10.0.0.1")
	expect(t, e, "net4")
	err = e.Manager.Apply(ctx, add("addr4", el("10.0.0.2", 0)), add("missing", el("10.0.0.3", 0)))
	checkErr(t, err, ipset.ErrNotExist, "missing", "")
	expect(t, e, "addr4", "10.0.0.1")
}

func testErrors(t *testing.T, e *Env) {
	ensure(t, e, addr4, net4)
	checkErr(t, e.Manager.Apply(ctx, add("nope", el("10.0.0.1", 0))), ipset.ErrNotExist, "nope", "")
	_, err := e.Manager.List(ctx, "nope")
	checkErr(t, err, ipset.ErrNotExist, "nope", "")
	checkErr(t, e.Manager.Apply(ctx, add("addr4", el("2001:db8::1", 0))), ipset.ErrFamily, "addr4", "2001:db8::1")
	checkErr(t, e.Manager.Apply(ctx, add("net4", el("2001:db8::/32", 0))), ipset.ErrFamily, "net4", "2001:db8::/32")
	checkErr(t, e.Manager.Apply(ctx, del("addr4", el("10.0.0.0/24", 0))), ipset.ErrInvalid, "addr4", "10.0.0.0/24")
	checkErr(t, e.Manager.Apply(ctx, add("addr4", ipset.Element{})), ipset.ErrInvalid, "addr4", "")
	checkErr(t, e.Manager.Apply(ctx, add("addr4", el("10.0.0.1", -time.Second))), ipset.ErrInvalid, "addr4", "10.0.0.1")
	checkErr(t, e.Manager.Apply(ctx, add("addr4", pair("10.0.0.1", "10.0.0.2", 0))), ipset.ErrInvalid, "addr4", "10.0.0.1 . 10.0.0.2")
	checkErr(t, e.Manager.Apply(ctx, ipset.Op{Kind: 99, Set: "addr4"}), ipset.ErrInvalid, "addr4", "")
	expect(t, e, "addr4")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := e.Manager.Apply(cctx, add("addr4", el("10.0.0.1", 0))); !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply with a cancelled context: %v", err)
	}
}

func testDestroy(t *testing.T, e *Env) {
	ensure(t, e, addr4, net4, addr4t)
	apply(t, e, add("addr4", el("10.0.0.1", 0)))
	must(t, e.Manager.Destroy(ctx, "addr4", "absent", "net4"))
	_, err := e.Manager.List(ctx, "addr4")
	checkErr(t, err, ipset.ErrNotExist, "addr4", "")
	checkErr(t, e.Manager.Apply(ctx, add("net4", el("10.0.0.0/8", 0))), ipset.ErrNotExist, "net4", "")
	expect(t, e, "addr4t")
	must(t, e.Manager.Destroy(ctx, "addr4"))
	// Re-creating after destroy gives an empty set, also with another definition.
	ensure(t, e, addr4, ipset.Spec{Name: "net4", Family: ipset.IPv6, Kind: ipset.KindAddr})
	expect(t, e, "addr4")
	apply(t, e, add("net4", el("fd00::1", 0)))
	expect(t, e, "net4", "fd00::1")
}

func testConcurrent(t *testing.T, e *Env) {
	ensure(t, e, addr4t, net4)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	var want []string
	for g := 0; g < 4; g++ {
		for i := 0; i < 20; i++ {
			want = append(want, fmt.Sprintf("10.%d.0.%d", g, i+1))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if err := e.Manager.Apply(ctx,
					add("addr4t", el(fmt.Sprintf("10.%d.0.%d", g, i+1), time.Hour)),
					add("net4", el(fmt.Sprintf("10.%d.%d.0/24", g, i), 0))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	expect(t, e, "addr4t", want...)
	expect(t, e, "net4", "10.0.0.0/20", "10.0.16.0/22", "10.1.0.0/20", "10.1.16.0/22", "10.2.0.0/20", "10.2.16.0/22", "10.3.0.0/20", "10.3.16.0/22")
}

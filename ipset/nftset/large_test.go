package nftset_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/internal/nstest"
	"github.com/egressd/egressd/ipset/ipsettest"
	"github.com/egressd/egressd/ipset/nftset"
	"github.com/egressd/egressd/test/testenv"
)

// largePairs returns n distinct IPv6 pairs (the largest elements the resolver
// writes: 32 bytes of key each) with a timeout.
func largePairs(n int) []ipset.Element {
	src := netip.MustParseAddr("fd00::1")
	out := make([]ipset.Element, n)
	for i := range out {
		dst := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
		out[i] = ipset.Pair(src, dst, 10*time.Minute)
	}
	return out
}

// TestApplyLargerThanOneMessage applies more elements than one netlink batch
// can carry: first in one operation, then again as a restarted agent restores
// them, one operation per element (each a message of its own, with the table
// and set names, sent three times for the timeout refresh: about 50 MB for
// 150,000 IPv6 pairs, more than the socket buffer). As one batch the second
// fails with "sendmsg: message too long"; Apply splits it into several
// transactions below the limit. Counts reads the size without listing.
func TestApplyLargerThanOneMessage(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft")
	m, ns := newManager(t)
	ctx := context.Background()
	spec := ipset.Spec{Name: "big6", Family: ipset.IPv6, Kind: ipset.KindAddrPair, Timeout: true}
	if err := m.Ensure(ctx, spec); err != nil {
		t.Fatal(err)
	}
	const n = 150_000
	elems := largePairs(n)
	if err := m.Apply(ctx, ipset.Op{Kind: ipset.OpAdd, Set: spec.Name, Elements: elems}); err != nil {
		t.Fatalf("Apply of %d elements in one op: %v", n, err)
	}
	ops := make([]ipset.Op, n)
	for i, e := range elems {
		ops[i] = ipset.Op{Kind: ipset.OpAdd, Set: spec.Name, Elements: []ipset.Element{e}}
	}
	if err := m.Apply(ctx, ops...); err != nil {
		t.Fatalf("Apply of %d ops of one element: %v", n, err)
	}
	got, err := nftset.Counts(ctx, nftset.DefaultTable, 0, nftset.WithNetNS(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != spec.Name || got[0].Elements != n || got[0].Truncated {
		t.Fatalf("Counts = %+v, want %s with %d elements", got, spec.Name, n)
	}
	// The kernel's own tool agrees (a count, not a comparison of 150,000 lines).
	if out := ns.Run(t, "sh", "-c", "nft list set inet egressd big6 | grep -o 'fd00::1 \\. 2001:db8::' | wc -l"); out != "150000\n" {
		t.Fatalf("nft lists %q elements, want 150000", out)
	}
	// A bounded count stops early and says so.
	got, err = nftset.Counts(ctx, nftset.DefaultTable, 1000, nftset.WithNetNS(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Elements < 1000 || got[0].Elements >= n || !got[0].Truncated {
		t.Fatalf("Counts(limit 1000) = %+v, want a truncated count of at least 1000", got)
	}
}

// TestConformanceSplit runs the conformance suite with every chunk of every
// Apply in a transaction of its own: splitting keeps the order of the
// operations and each element with its timeout refresh.
func TestConformanceSplit(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft")
	ipsettest.Run(t, func(t *testing.T) *ipsettest.Env {
		ns := nstest.New(t)
		m, err := nftset.New(nftset.WithNetNS(int(ns.Handle)), nftset.WithMaxBatchBytes(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return &ipsettest.Env{
			Manager: m,
			Kernel:  func(t *testing.T, set string) []ipset.Element { return nftList(t, ns, "egressd", set) },
		}
	})
}

// TestCountsIntervalsAndMaps: Counts counts an interval once (not its two
// boundary elements), lists every named set of the table, and reports an
// empty set as 0.
func TestCountsIntervalsAndMaps(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft")
	m, ns := newManager(t)
	ctx := context.Background()
	nets := ipset.Spec{Name: "nets", Family: ipset.IPv4, Kind: ipset.KindPrefix}
	addrs := ipset.Spec{Name: "addrs", Family: ipset.IPv6, Kind: ipset.KindAddr, Timeout: true}
	empty := ipset.Spec{Name: "empty", Family: ipset.IPv4, Kind: ipset.KindAddrPair}
	if err := m.Ensure(ctx, nets, addrs, empty); err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	err := m.Apply(ctx,
		ipset.Op{Kind: ipset.OpAdd, Set: "nets", Elements: []ipset.Element{{Prefix: p("10.0.0.0/8")}, {Prefix: p("192.168.1.0/24")}, {Prefix: p("172.16.0.0/12")}}},
		ipset.Op{Kind: ipset.OpAdd, Set: "addrs", Elements: []ipset.Element{ipset.Addr(netip.MustParseAddr("2001:db8::1"), time.Minute)}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := nftset.Counts(ctx, nftset.DefaultTable, 0, nftset.WithNetNS(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	want := []nftset.SetCount{{Name: "addrs", Elements: 1}, {Name: "empty"}, {Name: "nets", Elements: 3}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Counts = %+v, want %+v", got, want)
	}
}

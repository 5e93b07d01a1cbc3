package nftset_test

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/internal/iprange"
	"github.com/egressd/egressd/ipset/internal/nstest"
	"github.com/egressd/egressd/ipset/ipsettest"
	"github.com/egressd/egressd/ipset/nftset"
	"github.com/egressd/egressd/test/testenv"
	"github.com/google/nftables"
)

// newManager returns a Manager in a fresh network namespace.
func newManager(t testing.TB) (*nftset.Manager, *nstest.NS) {
	t.Helper()
	ns := nstest.New(t)
	m, err := nftset.New(nftset.WithNetNS(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m, ns
}

func TestConformance(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft")
	ipsettest.Run(t, func(t *testing.T) *ipsettest.Env {
		m, ns := newManager(t)
		return &ipsettest.Env{
			Manager: m,
			Reopen: func(t *testing.T) ipset.Manager {
				m2, err := nftset.New(nftset.WithNetNS(int(ns.Handle)))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = m2.Close() })
				return m2
			},
			Kernel: func(t *testing.T, set string) []ipset.Element { return nftList(t, ns, "egressd", set) },
		}
	})
}

// nftList reads a set with `nft -j list set` inside the namespace.
func nftList(t *testing.T, ns *nstest.NS, table, set string) []ipset.Element {
	t.Helper()
	out := ns.Run(t, "nft", "-j", "list", "set", "inet", table, set)
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j: %v: %s", err, out)
	}
	var res []ipset.Element
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, raw := range o.Set.Elem {
			res = append(res, parseNFTElem(t, raw, 0)...)
		}
	}
	return res
}

func parseNFTElem(t *testing.T, raw json.RawMessage, to time.Duration) []ipset.Element {
	t.Helper()
	var s string
	if json.Unmarshal(raw, &s) == nil {
		a := netip.MustParseAddr(s)
		return []ipset.Element{ipset.Addr(a, to)}
	}
	var obj struct {
		Elem *struct {
			Val     json.RawMessage `json:"val"`
			Timeout *float64        `json:"timeout"`
			Expires *float64        `json:"expires"`
		} `json:"elem"`
		Prefix *struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
		Range  []string `json:"range"`
		Concat []string `json:"concat"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("nft element %s: %v", raw, err)
	}
	switch {
	case obj.Elem != nil:
		var d time.Duration
		switch {
		case obj.Elem.Expires != nil:
			// nft shows whole seconds: a timed element shows at least 1ms here.
			d = max(time.Duration(*obj.Elem.Expires*float64(time.Second)), time.Millisecond)
		case obj.Elem.Timeout != nil:
			d = max(time.Duration(*obj.Elem.Timeout*float64(time.Second)), time.Millisecond)
		}
		return parseNFTElem(t, obj.Elem.Val, d)
	case obj.Prefix != nil:
		return []ipset.Element{{Prefix: netip.PrefixFrom(netip.MustParseAddr(obj.Prefix.Addr), obj.Prefix.Len), Timeout: to}}
	case len(obj.Range) == 2:
		var out []ipset.Element
		for _, p := range iprange.Decompose(netip.MustParseAddr(obj.Range[0]), netip.MustParseAddr(obj.Range[1])) {
			out = append(out, ipset.Element{Prefix: p, Timeout: to})
		}
		return out
	case len(obj.Concat) == 2:
		return []ipset.Element{ipset.Pair(netip.MustParseAddr(obj.Concat[0]), netip.MustParseAddr(obj.Concat[1]), to)}
	}
	t.Fatalf("unknown nft element %s", raw)
	return nil
}

// TestKernelDefinition checks the set definitions as nft shows them.
func TestKernelDefinition(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft")
	m, ns := newManager(t)
	ctx := t.Context()
	specs := []ipset.Spec{
		{Name: "a", Family: ipset.IPv4, Kind: ipset.KindAddr, Timeout: true},
		{Name: "p", Family: ipset.IPv6, Kind: ipset.KindPrefix},
		{Name: "c", Family: ipset.IPv4, Kind: ipset.KindAddrPair, Timeout: true},
	}
	if err := m.Ensure(ctx, specs...); err != nil {
		t.Fatal(err)
	}
	type setJSON struct {
		Type  any      `json:"type"`
		Flags []string `json:"flags"`
	}
	for _, tc := range []struct {
		name, typ string
		flags     []string
	}{
		{"a", `"ipv4_addr"`, []string{"timeout"}},
		{"p", `"ipv6_addr"`, []string{"interval"}},
		{"c", `["ipv4_addr","ipv4_addr"]`, []string{"timeout"}},
	} {
		out := ns.Run(t, "nft", "-j", "list", "set", "inet", "egressd", tc.name)
		var doc struct {
			Nftables []struct {
				Set *setJSON `json:"set"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatal(err)
		}
		var got *setJSON
		for _, o := range doc.Nftables {
			if o.Set != nil {
				got = o.Set
			}
		}
		typ, _ := json.Marshal(got.Type)
		if string(typ) != tc.typ {
			t.Errorf("set %s type %s, want %s", tc.name, typ, tc.typ)
		}
		for _, f := range tc.flags {
			found := false
			for _, g := range got.Flags {
				found = found || g == f
			}
			if !found {
				t.Errorf("set %s flags %v, want %s", tc.name, got.Flags, f)
			}
		}
	}
	// Sets written by the nft tool (with auto-merge) are read back too.
	ns.Run(t, "nft", "add element inet egressd p { 2001:db8::/32, 2001:db9::-2001:db9::ff, ff00::/8 }")
	got, err := m.List(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"2001:db8::/32", "2001:db9::/120", "ff00::/8"}
	if len(got) != len(want) {
		t.Fatalf("List(p) = %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Fatalf("List(p) = %v, want %v", got, want)
		}
	}
}

// TestEnforcerTransaction builds sets with NFTSet/NFTElements in a transaction of
// its own, as the enforcer does, and the Manager adopts them.
func TestEnforcerTransaction(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nft")
	m, ns := newManager(t)
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns.Handle)))
	if err != nil {
		t.Fatal(err)
	}
	table := conn.AddTable(&nftables.Table{Name: "egressd", Family: nftables.TableFamilyINet})
	spec := ipset.Spec{Name: "cidrs", Family: ipset.IPv4, Kind: ipset.KindPrefix}
	elems, err := nftset.NFTElements(spec, []ipset.Element{
		{Prefix: netip.MustParsePrefix("0.0.0.0/0")},
		{Prefix: netip.MustParsePrefix("10.0.0.0/8")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.AddSet(nftset.NFTSet(table, spec), elems); err != nil {
		t.Fatal(err)
	}
	pspec := ipset.Spec{Name: "fqdn", Family: ipset.IPv6, Kind: ipset.KindAddrPair, Timeout: true}
	pelems, err := nftset.NFTElements(pspec, []ipset.Element{ipset.Pair(netip.MustParseAddr("fd00::1"), netip.MustParseAddr("2001:db8::1"), time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.AddSet(nftset.NFTSet(table, pspec), pelems); err != nil {
		t.Fatal(err)
	}
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := nftset.NFTElements(spec, []ipset.Element{{Prefix: netip.MustParsePrefix("fd00::/8")}}); err == nil {
		t.Fatal("NFTElements accepted an IPv6 prefix for an IPv4 set")
	}
	ctx := t.Context()
	if err := m.Ensure(ctx, spec, pspec); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ctx, ipset.Op{Kind: ipset.OpDelete, Set: "cidrs", Elements: []ipset.Element{{Prefix: netip.MustParsePrefix("128.0.0.0/1")}}}); err != nil {
		t.Fatal(err)
	}
	got, err := m.List(ctx, "cidrs")
	if err != nil || len(got) != 1 || got[0].String() != "0.0.0.0/1" {
		t.Fatalf("List(cidrs) = %v, %v", got, err)
	}
	got, err = m.List(ctx, "fqdn")
	if err != nil || len(got) != 1 || got[0].Timeout <= 50*time.Second {
		t.Fatalf("List(fqdn) = %v, %v", got, err)
	}
}

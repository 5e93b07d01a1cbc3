package nftset_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/test/testenv"
)

func benchElems(n int, pair bool) []ipset.Element {
	out := make([]ipset.Element, n)
	for i := range out {
		dst := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if pair {
			out[i] = ipset.Pair(netip.MustParseAddr("192.168.0.1"), dst, time.Minute)
		} else {
			out[i] = ipset.Addr(dst, time.Minute)
		}
	}
	return out
}

// BenchmarkApply measures one Apply (one netlink batch) of n elements. Every
// iteration adds the same elements again, so from the second on it is the
// timeout-refresh path (add + delete + add in the batch), the resolver's common case;
// "-notimeout" is a set without timeouts (a plain add).
func BenchmarkApply(b *testing.B) {
	testenv.RequireRoot(b)
	for _, c := range []struct {
		kind    ipset.Kind
		timeout bool
	}{{ipset.KindAddr, true}, {ipset.KindAddrPair, true}, {ipset.KindAddr, false}} {
		kind := c.kind
		for _, n := range []int{1, 100, 10000} {
			name := fmt.Sprintf("%v/%d", kind, n)
			if !c.timeout {
				name = fmt.Sprintf("%v-notimeout/%d", kind, n)
			}
			b.Run(name, func(b *testing.B) {
				m, _ := newManager(b)
				spec := ipset.Spec{Name: "bench", Family: ipset.IPv4, Kind: kind, Timeout: c.timeout}
				if err := m.Ensure(b.Context(), spec); err != nil {
					b.Fatal(err)
				}
				op := ipset.Op{Kind: ipset.OpAdd, Set: "bench", Elements: benchElems(n, kind == ipset.KindAddrPair)}
				b.ResetTimer()
				for b.Loop() {
					if err := m.Apply(b.Context(), op); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("prefix/%d", n), func(b *testing.B) {
			m, _ := newManager(b)
			if err := m.Ensure(b.Context(), ipset.Spec{Name: "bench", Family: ipset.IPv4, Kind: ipset.KindPrefix}); err != nil {
				b.Fatal(err)
			}
			elems := make([]ipset.Element, n)
			for i := range elems {
				elems[i] = ipset.Element{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 24)}
			}
			for b.Loop() {
				if err := m.Apply(b.Context(),
					ipset.Op{Kind: ipset.OpFlush, Set: "bench"},
					ipset.Op{Kind: ipset.OpAdd, Set: "bench", Elements: elems}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

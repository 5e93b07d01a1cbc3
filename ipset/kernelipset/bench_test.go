package kernelipset_test

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

// BenchmarkApply measures one Apply of n elements (one ipset request per element).
// Every iteration adds the same elements again (-exist timeout refresh).
func BenchmarkApply(b *testing.B) {
	testenv.RequireRoot(b)
	for _, kind := range []ipset.Kind{ipset.KindAddr} {
		for _, n := range []int{1, 100, 10000} {
			b.Run(fmt.Sprintf("%v/%d", kind, n), func(b *testing.B) {
				m, _ := newManager(b)
				spec := ipset.Spec{Name: "bench", Family: ipset.IPv4, Kind: kind, Timeout: true}
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
}

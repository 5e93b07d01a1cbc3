package l7

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/egressd/egressd/egress"
)

// BenchmarkL7TransparentVsDirect measures allowed HTTPS (new connection, TLS
// 1.3 handshake, one GET) from a pod through the transparent proxy vs direct,
// over IPv4 and IPv6:
//
//	go test -run X -bench L7 -benchtime 1x ./test/l7
func BenchmarkL7TransparentVsDirect(b *testing.B) {
	t := b
	e := setup(t)
	// A pod no policy selects (its direct traffic is allowed at L3).
	pods, err := e.node.AddPods("bench/b")
	if err != nil {
		t.Fatal(err)
	}
	bp := pods[0]
	// good.test resolves for this workload too: it is not in the store, so
	// the proxy decides with the default (not a workload → allowed) after
	// checking the SNI resolves to the destination.
	run := func(dst netip.AddrPort, d time.Duration) (float64, []time.Duration) {
		var lat []time.Duration
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			start := time.Now()
			var c net.Conn
			if err := bp.Do(func() (err error) { c, err = net.DialTimeout("tcp", dst.String(), 5*time.Second); return }); err != nil {
				t.Fatal(err)
			}
			tc := tls.Client(c, &tls.Config{ServerName: "good.test", RootCAs: e.caPool})
			fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: good.test\r\nConnection: close\r\n\r\n")
			if _, err := io.ReadAll(tc); err != nil {
				t.Fatal(err)
			}
			tc.Close()
			lat = append(lat, time.Since(start))
		}
		slices.Sort(lat)
		return float64(len(lat)) / d.Seconds(), lat
	}
	pct := func(l []time.Duration, p float64) time.Duration { return l[int(float64(len(l)-1)*p)] }
	for _, fam := range []string{"IPv4", "IPv6"} {
		dst := netip.AddrPortFrom(e.ext.IPv4, 443)
		if fam == "IPv6" {
			dst = netip.AddrPortFrom(e.ext.IPv6, 443)
		}
		for _, mode := range []string{"direct", "transparent", "direct", "transparent"} {
			src := []netip.Addr{e.client.IPv4, e.client.IPv6}
			if mode == "transparent" {
				src = append(src, bp.IPv4, bp.IPv6)
			}
			if err := egress.ApplyRedirect(egress.Redirect{NetNS: e.node.Fd(), To4: transparent, To6: transparent6, Sources: src}); err != nil {
				t.Fatal(err)
			}
			run(dst, 500*time.Millisecond) // warm up
			cps, lat := run(dst, 3*time.Second)
			t.Logf("%s %-12s %7.0f conn/s  p50 %v  p99 %v  (n=%d)", fam, mode, cps, pct(lat, 0.5).Round(time.Microsecond), pct(lat, 0.99).Round(time.Microsecond), len(lat))
		}
	}
}

package dnsproxy

import (
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/telemetry/event"
)

// BenchmarkFastPathHit is one UDP cache hit answered by the fast path
// (fastReader.serve: parse, cache lookup, the decision cached per store
// generation, patch, one sendto to a loopback socket), for a client that is
// no workload and for a workload whose FQDN rules match (its set entries
// still fresh: no write). Events go to event.Discard.
func BenchmarkFastPathHit(b *testing.B) {
	up := startFakeUpstream(b, answerA("192.0.2.1", 3600))
	h := start(b, []string{up.addr}, func(_ *Config, d *Deps) { d.Events = event.Discard })
	for _, tc := range []struct {
		name   string
		client netip.Addr
	}{{"no-policy", unknownIP}, {"policy", gatewayIP}} {
		b.Run(tc.name, func(b *testing.B) {
			conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close()
			cli, err := net.DialUDP("udp", &net.UDPAddr{IP: tc.client.AsSlice()}, conn.LocalAddr().(*net.UDPAddr))
			if err != nil {
				b.Fatal(err)
			}
			defer cli.Close()
			q := benchQuery("api.test.")
			h.srv.ServeDNS(&discard{wireWriter{remote: net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.client, 40000))}}, q) // fill the cache
			wire, err := q.Pack()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := cli.Write(wire); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 4096)
			n, sess, err := dns.ReadFromSessionUDP(conn, buf)
			if err != nil {
				b.Fatal(err)
			}
			r := h.srv.decorateReader(nil).(*fastReader)
			if !r.serve(conn, buf[:n], sess) {
				b.Fatal("not answered by the fast path")
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if !r.serve(conn, wire, sess) {
					b.Fatal("not answered by the fast path")
				}
			}
		})
	}
}

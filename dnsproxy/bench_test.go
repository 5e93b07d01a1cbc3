package dnsproxy

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// discard is a ResponseWriter that drops the reply.
type discard struct{ wireWriter }

func benchQuery(name string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	m.SetEdns0(1232, false)
	return m
}

// BenchmarkCacheHit is the handler cost of one cache hit (no network): an
// unknown client (no policy), and a workload whose FQDN rules match (policy
// decision plus one fake set write per query).
func BenchmarkCacheHit(b *testing.B) {
	up := startFakeUpstream(b, answerA("192.0.2.1", 3600))
	h := start(b, []string{up.addr}, nil)
	for _, tc := range []struct {
		name   string
		client netip.Addr
		qname  string
	}{
		{"no-policy", unknownIP, "api.test."},
		{"policy+set-write", gatewayIP, "api.test."},
		{"policy-blocked", runnerIP, "x.minepool.test."},
	} {
		b.Run(tc.name, func(b *testing.B) {
			w := &discard{wireWriter{remote: net.UDPAddrFromAddrPort(netip.AddrPortFrom(tc.client, 40000))}}
			q := benchQuery(tc.qname)
			h.srv.ServeDNS(w, q) // fill the cache
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				h.srv.ServeDNS(w, q)
			}
		})
	}
	b.Run("wire-no-policy", func(b *testing.B) {
		wire, _ := benchQuery("api.test.").Pack()
		from := netip.AddrPortFrom(unknownIP, 40000)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if h.srv.handleWire(wire, from, false) == nil {
				b.Fatal("no reply")
			}
		}
	})
}

// BenchmarkAllowedCacheMiss measures, over real UDP sockets, an allowed lookup
// that misses the cache and writes the fake sets, against the same query sent
// straight to the upstream: the difference is the latency the resolver adds.
// It reports p50/p99 of both and of the difference.
func BenchmarkAllowedCacheMiss(b *testing.B) {
	up := startFakeUpstream(b, answerA("192.0.2.1", 60))
	h := start(b, []string{up.addr}, func(c *Config, _ *Deps) { c.CacheSize = -1 })
	measure := func(addr string, n int) []time.Duration {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: gatewayIP.AsSlice()}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		co := &dns.Conn{Conn: c}
		q := benchQuery("api.test.")
		out := make([]time.Duration, 0, n)
		for i := 0; i < n; i++ {
			q.Id = uint16(i)
			t0 := time.Now()
			if err := co.WriteMsg(q); err != nil {
				b.Fatal(err)
			}
			r, err := co.ReadMsg()
			if err != nil || len(r.Answer) != 1 {
				b.Fatalf("%v %v", r, err)
			}
			out = append(out, time.Since(t0))
		}
		return out
	}
	measure(up.addr, 100) // warm up
	measure(h.addr, 100)
	b.ResetTimer()
	via := measure(h.addr, b.N)
	b.StopTimer()
	direct := measure(up.addr, b.N)
	reportAddedLatency(b, via, direct)
	if st := h.srv.Stats(); st.SetWrites == 0 {
		b.Fatal("no set writes")
	}
}

// reportAddedLatency reports p50 and p99 of the latencies through the resolver
// (via), straight to the upstream (direct), and their difference.
func reportAddedLatency(b *testing.B, via, direct []time.Duration) {
	pct := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}} {
		b.ReportMetric(float64(pct(via, p.q).Microseconds()), p.name+"-µs")
		b.ReportMetric(float64(pct(direct, p.q).Microseconds()), p.name+"-direct-µs")
		b.ReportMetric(float64((pct(via, p.q) - pct(direct, p.q)).Microseconds()), p.name+"-added-µs")
	}
}

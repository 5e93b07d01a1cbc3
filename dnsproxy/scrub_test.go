package dnsproxy

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
)

// TestAnswerAddressesOffTheChainAreDropped: an upstream answer that carries,
// besides the CNAME chain of the question (out of order) and its address,
// addresses of other names gets those removed before caching: they are
// neither written to the kernel sets nor sent to the client.
func TestAnswerAddressesOffTheChainAreDropped(t *testing.T) {
	up := startFakeUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		hdr := func(name string, t uint16) dns.RR_Header {
			return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
		}
		if q.Question[0].Qtype == dns.TypeA {
			r.Answer = []dns.RR{
				&dns.A{Hdr: hdr("edge.cdn.example.", dns.TypeA), A: net.ParseIP("192.0.2.10")},
				&dns.A{Hdr: hdr("other.example.", dns.TypeA), A: net.ParseIP("192.0.2.66")},
				&dns.CNAME{Hdr: hdr("mid.cdn.example.", dns.TypeCNAME), Target: "edge.cdn.example."},
				&dns.CNAME{Hdr: hdr(q.Question[0].Name, dns.TypeCNAME), Target: "MID.cdn.example."},
				&dns.AAAA{Hdr: hdr("evil.example.", dns.TypeAAAA), AAAA: net.ParseIP("2001:db8::66")},
			}
		}
		w.WriteMsg(r)
	})
	h := start(t, []string{up.addr}, nil)
	for i := 0; i < 2; i++ { // miss, then fast-path hit
		r := h.query(t, gatewayIP, "udp", "api.test", dns.TypeA, true)
		var got []string
		for _, rr := range r.Answer {
			got = append(got, rr.Header().Name+" "+dns.TypeToString[rr.Header().Rrtype])
		}
		if strings.Join(got, ",") != "edge.cdn.example. A,mid.cdn.example. CNAME,api.test. CNAME" {
			t.Fatalf("query %d: answer %v", i, got)
		}
	}
	for _, f := range []ipset.Family{ipset.IPv4, ipset.IPv6} {
		for p := range pairs(t, h.sets, setName(ruleApis, f)) {
			if strings.Contains(p, "192.0.2.66") || strings.Contains(p, "2001:db8::66") {
				t.Errorf("off-chain address written: %s", p)
			}
		}
	}
	ok := false
	for p := range pairs(t, h.sets, setName(ruleApis, ipset.IPv4)) {
		ok = ok || strings.Contains(p, "192.0.2.10")
	}
	if !ok {
		t.Error("the chain's address 192.0.2.10 was not written")
	}
	if st := h.srv.Stats(); st.Scrubbed != 2 || st.UpstreamQueries != 1 {
		t.Errorf("stats %+v", st)
	}
}

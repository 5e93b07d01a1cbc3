package dnsproxy

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
)

// TestRotatingNameKeepsEveryAddressAllowed: a name whose every answer is a new
// address (S3-like) stays usable: every address handed out is in the kernel
// set for its TTL plus grace, while the tracked state keeps only
// MaxIPsPerName per (workload, name) and counts the evictions.
func TestRotatingNameKeepsEveryAddressAllowed(t *testing.T) {
	var n atomic.Int32
	up := startFakeUpstream(t, func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			i := n.Add(1)
			r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.ParseIP(fmt.Sprintf("198.51.100.%d", i))}}
		}
		w.WriteMsg(r)
	})
	h := start(t, []string{up.addr}, func(c *Config, _ *Deps) { c.CacheSize, c.MaxIPsPerName = -1, 4 })
	const answers = 10
	for i := 0; i < answers; i++ {
		if r := h.query(t, gatewayIP, "udp", "s3.test", dns.TypeA, true); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			t.Fatalf("query %d: %v", i, r)
		}
	}
	set := pairs(t, h.sets, setName(ruleApis, ipset.IPv4))
	for i := 1; i <= answers; i++ {
		found := false
		for p, timeout := range set {
			if strings.HasSuffix(p, fmt.Sprintf(" 198.51.100.%d", i)) && timeout >= 60e9 {
				found = true
			}
		}
		if !found {
			t.Errorf("198.51.100.%d (answer %d) not in the set with its TTL + grace: %v", i, i, set)
		}
	}
	var tracked []string
	for _, e := range h.srv.Tracked() {
		if e.Name == "s3.test." {
			tracked = append(tracked, e.IP.String())
		}
	}
	if len(tracked) != 4 {
		t.Errorf("tracked %v, want the 4 most recent", tracked)
	}
	if st := h.srv.Stats(); st.IPEvictions != answers-4 {
		t.Errorf("evictions %d, want %d", st.IPEvictions, answers-4)
	}
}

package dnsproxy

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
)

// TestRotatingNameCappedPerName: a name whose every answer is a new address
// (here with the cache off, so every query reaches the upstream) puts at most
// MaxIPsPerName addresses of one (workload, name) into the kernel set. Every
// address handed out is in the set for its TTL plus grace; beyond the cap the
// new address is neither written nor handed out (SERVFAIL naming the bound,
// counted, reported), nothing written is evicted, and once the entries expire
// the name resolves again.
func TestRotatingNameCappedPerName(t *testing.T) {
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
	for i := 1; i <= answers; i++ {
		r := h.query(t, gatewayIP, "udp", "s3.test", dns.TypeA, true)
		switch {
		case i <= 4 && (r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1):
			t.Fatalf("query %d: %v", i, r)
		case i > 4 && (r.Rcode != dns.RcodeServerFailure || len(r.Answer) != 0 || ede(r) == nil || !strings.Contains(ede(r).ExtraText, "max-ips-per-name")):
			t.Fatalf("query %d beyond the cap: want SERVFAIL with EDE naming max-ips-per-name, got %v", i, r)
		}
	}
	set := pairs(t, h.sets, setName(ruleApis, ipset.IPv4))
	if len(set) != 4 {
		t.Errorf("set holds %d pairs, want the 4 of the cap: %v", len(set), set)
	}
	for i := 1; i <= 4; i++ {
		if to, ok := set[fmt.Sprintf("127.0.0.2 . 198.51.100.%d", i)]; !ok || to < 60e9 {
			t.Errorf("198.51.100.%d (answer %d) not in the set with its TTL + grace: %v", i, i, set)
		}
	}
	if st := h.srv.Stats(); st.IPsOverNameCap != answers-4 || st.IPsOverWorkloadCap != 0 {
		t.Errorf("over name cap %d, over workload cap %d; want %d, 0", st.IPsOverNameCap, st.IPsOverWorkloadCap, answers-4)
	}
	evs := h.rep.find(event.AnswerCapped)
	if len(evs) != answers-4 || evs[0].Reason != ReasonMaxIPsPerName || dropped(evs[0]) != 1 || evs[0].Workload != "payments/gateway-0" || evs[0].Response != "SERVFAIL" {
		t.Errorf("capped events %+v, want %d naming max-ips-per-name", evs, answers-4)
	}
	// TTL 60 + grace later the entries have expired: the name resolves again.
	h.clock.Advance(2 * time.Minute)
	if r := h.query(t, gatewayIP, "udp", "s3.test", dns.TypeA, true); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("after expiry: %v", r)
	}
}

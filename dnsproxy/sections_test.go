package dnsproxy

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// referralUpstream answers like an authoritative server that fills every
// section: positive answers with the zone's NS records in the authority
// section and their glue (and another address) in the additional section;
// NXDOMAIN and NODATA with SOA, NS and glue; DNSSEC records with DO.
func referralUpstream(w dns.ResponseWriter, q *dns.Msg) {
	r := new(dns.Msg)
	r.SetReply(q)
	qn := q.Question[0].Name
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
	}
	ns := &dns.NS{Hdr: hdr("example.", dns.TypeNS), Ns: "ns.attacker.example."}
	glue := &dns.A{Hdr: hdr("ns.attacker.example.", dns.TypeA), A: net.ParseIP("203.0.113.53")}
	soa := &dns.SOA{Hdr: hdr("example.", dns.TypeSOA), Ns: "ns.example.", Mbox: "admin.example.", Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 30}
	nsec := &dns.NSEC{Hdr: hdr("example.", dns.TypeNSEC), NextDomain: "z.example.", TypeBitMap: []uint16{dns.TypeA}}
	sig := &dns.RRSIG{Hdr: hdr("example.", dns.TypeRRSIG), TypeCovered: dns.TypeNSEC, Algorithm: 13, SignerName: "example.", Signature: "AAAA"}
	switch qn {
	case "nx.example.":
		r.Rcode = dns.RcodeNameError
	case "nodata.example.":
	default:
		r.Answer = []dns.RR{&dns.A{Hdr: hdr(qn, dns.TypeA), A: net.ParseIP("192.0.2.1")}}
	}
	if r.Rcode == dns.RcodeNameError || len(r.Answer) == 0 {
		r.Ns = append(r.Ns, soa)
	}
	r.Ns = append(r.Ns, ns)
	if o := q.IsEdns0(); o != nil && o.Do() {
		r.Ns = append(r.Ns, nsec, sig)
	}
	r.Extra = []dns.RR{glue, &dns.AAAA{Hdr: hdr("ns.attacker.example.", dns.TypeAAAA), AAAA: net.ParseIP("2001:db8::53")}}
	r.SetEdns0(1232, q.IsEdns0() != nil && q.IsEdns0().Do())
	w.WriteMsg(r)
}

func types(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		out = append(out, dns.TypeToString[rr.Header().Rrtype])
	}
	return out
}

func TestAuthorityAndAdditionalStripped(t *testing.T) {
	f := startFakeUpstream(t, referralUpstream)
	h := start(t, []string{f.addr}, nil)
	for _, tc := range []struct {
		name   string
		do     bool
		rcode  int
		wantNs []string
	}{
		{"www.example.", false, dns.RcodeSuccess, nil},
		{"nx.example.", false, dns.RcodeNameError, []string{"SOA"}},
		{"nodata.example.", false, dns.RcodeSuccess, []string{"SOA"}},
		{"www.example.", true, dns.RcodeSuccess, []string{"NSEC", "RRSIG"}},
		{"nx.example.", true, dns.RcodeNameError, []string{"SOA", "NSEC", "RRSIG"}},
	} {
		hits := h.srv.fast.hits.Load()
		// From the upstream, then from the cache through the UDP fast path,
		// from a workload and from the node (no policy).
		for i, from := range []string{"upstream", "fast path", "workload (slow path)"} {
			src := unknownIP
			if i == 2 {
				src = runnerIP
			}
			m := new(dns.Msg)
			m.SetQuestion(tc.name, dns.TypeA)
			m.SetEdns0(1232, tc.do)
			r, err := exchangeFrom(src, "udp", h.addr, m)
			if err != nil {
				t.Fatal(err)
			}
			if r.Rcode != tc.rcode {
				t.Fatalf("%s DO=%v from %s: %s", tc.name, tc.do, from, dns.RcodeToString[r.Rcode])
			}
			if got := types(r.Ns); !slices.Equal(got, tc.wantNs) {
				t.Errorf("%s DO=%v from %s: authority %v, want %v", tc.name, tc.do, from, got, tc.wantNs)
			}
			if got := types(r.Extra); len(got) != 1 || got[0] != "OPT" {
				t.Errorf("%s DO=%v from %s: additional %v, want only OPT", tc.name, tc.do, from, got)
			}
		}
		if h.srv.fast.hits.Load() == hits {
			t.Errorf("%s DO=%v: the fast path served none", tc.name, tc.do)
		}
	}
	// The negative answers are cached with the SOA's negative TTL.
	if f.count("nx.example.") != 2 { // once without DO, once with
		t.Errorf("nx.example. forwarded %d times, want 2 (cached)", f.count("nx.example."))
	}
}

// TestRestoredAnswersAreMinimized: a checkpoint written by an older release
// holds answers with the upstream's NS records and glue; they are served
// minimized once restored.
func TestRestoredAnswersAreMinimized(t *testing.T) {
	h := start(t, []string{blackhole(t)}, nil)
	m := new(dns.Msg)
	m.SetQuestion("www.example.", dns.TypeA)
	r := new(dns.Msg)
	r.SetReply(m)
	referralUpstream(&capture{out: r}, m) // fills every section
	if len(r.Ns) == 0 || len(r.Extra) < 2 {
		t.Fatalf("the stored answer lacks NS or glue: %v", r)
	}
	packed, err := r.Pack()
	if err != nil {
		t.Fatal(err)
	}
	now := h.clock.Now()
	n := h.srv.RestoreCache(Checkpoint{Cache: []CachedAnswer{{Msg: packed, Flags: 1, Stored: now, Expires: now.Add(time.Minute)}}})
	if n != 1 {
		t.Fatalf("restored %d answers", n)
	}
	for _, from := range []string{"udp", "tcp"} { // the fast path and the slow path
		got := h.query(t, unknownIP, from, "www.example", dns.TypeA, true)
		if len(got.Answer) != 1 || len(got.Ns) != 0 || !slices.Equal(types(got.Extra), []string{"OPT"}) {
			t.Fatalf("over %s: answer %v authority %v additional %v, want the address only", from, got.Answer, types(got.Ns), types(got.Extra))
		}
	}
}

// capture is a dns.ResponseWriter that keeps the message written.
type capture struct {
	dns.ResponseWriter
	out *dns.Msg
}

func (c *capture) WriteMsg(m *dns.Msg) error { *c.out = *m; return nil }

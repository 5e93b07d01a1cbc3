package dnsproxy

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/ipset"
)

// chainUpstream answers the alias chains of the chain tests (A queries; the
// deny-mining Admin policy of testdata denies *.minepool.test, the staged
// Audit policy txt.test, and payments/gateway-* may resolve *.test):
//
//	alias.test        CNAME pool.minepool.test                  A 203.0.113.7
//	mid.test          CNAME mid2.test CNAME c.minepool.test      A 203.0.113.9
//	www.dalias.test   DNAME dalias.test → minepool.test (+ synthesized CNAME)  A 203.0.113.8
//	www.bare.test     DNAME bare.test → minepool.test, no synthesized CNAME    A 203.0.113.10
//	cdn.test          CNAME edge.cdn.test (no Allow rule matches it) A 198.51.100.1
//	staged.test       CNAME txt.test                             A 198.51.100.2
//	db.default.svc.cluster.local   CNAME db.minepool.test (ExternalName)  A 203.0.113.11
//	ext.default.svc.cluster.local  CNAME edge.cdn.test (ExternalName)     A 198.51.100.3
func chainUpstream(w dns.ResponseWriter, q *dns.Msg) {
	r := new(dns.Msg)
	r.SetReply(q)
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 60}
	}
	cname := func(from, to string) dns.RR { return &dns.CNAME{Hdr: hdr(from, dns.TypeCNAME), Target: to} }
	dname := func(from, to string) dns.RR { return &dns.DNAME{Hdr: hdr(from, dns.TypeDNAME), Target: to} }
	a := func(name, ip string) dns.RR { return &dns.A{Hdr: hdr(name, dns.TypeA), A: net.ParseIP(ip)} }
	qn := q.Question[0].Name
	if q.Question[0].Qtype == dns.TypeA {
		switch strings.ToLower(qn) {
		case "alias.test.":
			r.Answer = []dns.RR{cname(qn, "pool.minepool.test."), a("pool.minepool.test.", "203.0.113.7")}
		case "mid.test.":
			r.Answer = []dns.RR{cname(qn, "mid2.test."), cname("mid2.test.", "c.minepool.test."), a("c.minepool.test.", "203.0.113.9")}
		case "www.dalias.test.":
			r.Answer = []dns.RR{dname("dalias.test.", "minepool.test."), cname(qn, "www.minepool.test."), a("www.minepool.test.", "203.0.113.8")}
		case "www.bare.test.":
			r.Answer = []dns.RR{dname("bare.test.", "minepool.test."), a("www.minepool.test.", "203.0.113.10")}
		case "cdn.test.":
			r.Answer = []dns.RR{cname(qn, "edge.cdn.test."), a("edge.cdn.test.", "198.51.100.1")}
		case "db.default.svc.cluster.local.":
			r.Answer = []dns.RR{cname(qn, "db.minepool.test."), a("db.minepool.test.", "203.0.113.11")}
		case "ext.default.svc.cluster.local.":
			r.Answer = []dns.RR{cname(qn, "edge.cdn.test."), a("edge.cdn.test.", "198.51.100.3")}
		case "staged.test.":
			r.Answer = []dns.RR{cname(qn, "txt.test."), a("txt.test.", "198.51.100.2")}
		}
	}
	w.WriteMsg(r)
}

// setIPs returns the answer addresses of a pair set.
func setIPs(t testing.TB, h *harness, set string) []string {
	t.Helper()
	var out []string
	for p := range pairs(t, h.sets, set) {
		out = append(out, p)
	}
	return out
}

// TestChainIntoDeniedNameBlocked: a CNAME or DNAME from an allowed name into
// a name the Admin deny matches is answered as blocked (NXDOMAIN, EDE naming
// the chain link), nothing is written to the allow set, and the blocked event
// names the link in its cname field — on the slow path, on a fast-path cache
// hit (answer cached by a client without policy first) and for a chain
// through an allowed middle link.
func TestChainIntoDeniedNameBlocked(t *testing.T) {
	up := startFakeUpstream(t, chainUpstream)
	h := start(t, []string{up.addr}, nil)
	cases := []struct {
		from      netip.Addr
		name, via string
	}{
		{gatewayIP, "alias.test", "pool.minepool.test"},
		{gatewayIP, "mid.test", "c.minepool.test"},
		{runnerIP, "www.dalias.test", "www.minepool.test"},
		{runnerIP, "www.bare.test", "www.minepool.test"},
		{gatewayIP, "db.default.svc.cluster.local", "db.minepool.test"}, // an ExternalName Service into the pool
	}
	for _, c := range cases {
		for _, warm := range []bool{false, true} {
			if warm {
				// An answer cached for a client without policy: the workload's
				// query is a fast-path cache hit.
				if r := h.query(t, unknownIP, "udp", c.name, dns.TypeA, false); len(r.Answer) == 0 {
					t.Fatalf("%s: no answer for a client without policy", c.name)
				}
			}
			fastBefore := h.srv.fast.hits.Load()
			r := h.query(t, c.from, "udp", c.name, dns.TypeA, true)
			if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
				t.Fatalf("%s (cached %v): want NXDOMAIN without answer, got %s %v", c.name, warm, dns.RcodeToString[r.Rcode], r.Answer)
			}
			if h.srv.fast.hits.Load() != fastBefore {
				t.Errorf("%s: the fast path answered a blocked chain", c.name)
			}
			e := ede(r)
			want := "egressd: blocked by ClusterFirewallPolicy/deny-mining#mining-pools (via " + c.via + ")"
			if e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || e.ExtraText != want {
				t.Errorf("%s: EDE %v, want %q", c.name, e, want)
			}
		}
		for _, ev := range h.rep.find(event.LookupBlocked) {
			if strings.EqualFold(ev.QName, c.name+".") && (ev.CNAME != c.via || ev.Policy != "ClusterFirewallPolicy/deny-mining" || ev.Rule != "mining-pools") {
				t.Errorf("%s: blocked event %+v", c.name, ev)
			}
		}
	}
	if n := len(h.rep.find(event.LookupBlocked)); n != 2*len(cases) {
		t.Errorf("%d blocked events, want %d", n, 2*len(cases))
	}
	if got := setIPs(t, h, setName(ruleApis, ipset.IPv4)); len(got) != 0 {
		t.Errorf("allow set holds %v after blocked chains", got)
	}
	for _, tr := range h.srv.Tracked() {
		t.Errorf("tracked %+v after blocked chains", tr)
	}
}

// TestChainAllowedWritesQuestionRules: a chain through names no Deny rule
// matches is answered, its addresses written to the rules of the question
// name (only), and tracked with the chain links for the checkpoint.
func TestChainAllowedWritesQuestionRules(t *testing.T) {
	up := startFakeUpstream(t, chainUpstream)
	h := start(t, []string{up.addr}, nil)
	r := h.query(t, gatewayIP, "udp", "cdn.test", dns.TypeA, false)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("want the chain answered, got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
	got := pairs(t, h.sets, setName(ruleApis, ipset.IPv4))
	if _, ok := got["127.0.0.2 . 198.51.100.1"]; !ok || len(got) != 1 {
		t.Errorf("apis set %v", got)
	}
	tr := h.srv.Tracked()
	if len(tr) != 1 || tr[0].Name != "cdn.test." || len(tr[0].Via) != 1 || tr[0].Via[0] != "edge.cdn.test." {
		t.Errorf("tracked %+v", tr)
	}
	if cp := h.srv.Checkpoint(); len(cp.Entries) != 1 || len(cp.Entries[0].Via) != 1 {
		t.Errorf("checkpoint entries %+v", cp.Entries)
	}
}

// TestChainClusterNameToAllowedExternalName: a cluster-domain name (an
// ExternalName Service) aliasing an external name no Deny rule matches is
// answered.
func TestChainClusterNameToAllowedExternalName(t *testing.T) {
	up := startFakeUpstream(t, chainUpstream)
	h := start(t, []string{up.addr}, nil)
	r := h.query(t, gatewayIP, "udp", "ext.default.svc.cluster.local", dns.TypeA, false)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
		t.Fatalf("want the chain answered, got %s %v", dns.RcodeToString[r.Rcode], r.Answer)
	}
}

// TestChainAuditLinkReported: a chain link that only an Audit-mode policy
// denies is answered and programmed, and reported as dns.lookup.audit naming
// the link — on the slow path and on the fast path.
func TestChainAuditLinkReported(t *testing.T) {
	up := startFakeUpstream(t, chainUpstream)
	h := start(t, []string{up.addr}, nil)
	for i := 0; i < 2; i++ { // miss, then fast-path hit
		r := h.query(t, gatewayIP, "udp", "staged.test", dns.TypeA, false)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 2 {
			t.Fatalf("query %d: want the chain answered, got %s %v", i, dns.RcodeToString[r.Rcode], r.Answer)
		}
	}
	if h.srv.fast.hits.Load() == 0 {
		t.Error("second query did not take the fast path")
	}
	evs := h.rep.find(event.LookupAudit)
	if len(evs) != 2 {
		t.Fatalf("%d audit events, want 2: %+v", len(evs), evs)
	}
	for _, ev := range evs {
		if ev.CNAME != "txt.test" || ev.Policy != "ClusterFirewallPolicy/staged" || ev.Rule != "no-txt" {
			t.Errorf("audit event %+v", ev)
		}
	}
	if len(h.rep.find(event.LookupBlocked)) != 0 {
		t.Error("audit-only link blocked")
	}
	if got := pairs(t, h.sets, setName(ruleApis, ipset.IPv4)); len(got) != 1 {
		t.Errorf("apis set %v", got)
	}
}

// TestRestoreDropsEntriesReachedThroughDeniedNames: a checkpoint entry whose
// alias chain reaches a name a Deny rule matches is neither tracked nor
// written back; one whose chain is allowed is.
func TestRestoreDropsEntriesReachedThroughDeniedNames(t *testing.T) {
	up := startFakeUpstream(t, chainUpstream)
	h := start(t, []string{up.addr}, nil)
	exp := h.clock.Now().Add(time.Minute)
	cp := Checkpoint{Version: CheckpointVersion, Format: CheckpointFormat, Entries: []CheckpointEntry{
		{Workload: "payments/gateway-0", Name: "alias.test.", IP: netip.MustParseAddr("203.0.113.7"), Expires: exp, Via: []string{"pool.minepool.test."}},
		{Workload: "payments/gateway-0", Name: "cdn.test.", IP: netip.MustParseAddr("198.51.100.1"), Expires: exp, Via: []string{"edge.cdn.test."}},
	}}
	n, err := h.srv.Restore(context.Background(), cp)
	if err != nil || n != 1 {
		t.Fatalf("restored %d (%v), want 1", n, err)
	}
	got := pairs(t, h.sets, setName(ruleApis, ipset.IPv4))
	if _, ok := got["127.0.0.2 . 198.51.100.1"]; !ok || len(got) != 1 {
		t.Errorf("apis set after restore %v", got)
	}
	if tr := h.srv.Tracked(); len(tr) != 1 || tr[0].IP.String() != "198.51.100.1" {
		t.Errorf("tracked %+v", tr)
	}
}

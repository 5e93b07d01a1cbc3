package l7

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// chainPolicy: the pod may reach www.alias.test and cdn.alias.test; an Admin
// policy denies *.minepool.test, and an Audit-mode one *.tracker.test.
const chainPolicy = `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-mining}
spec: {tier: Admin, priority: 10, subject: {namespaceSelector: {}}, egress: [{name: pools, action: Deny, to: [{fqdn: {matchPattern: "*.minepool.test"}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: staged}
spec: {tier: Admin, priority: 20, mode: Audit, subject: {namespaceSelector: {}}, egress: [{name: trackers, action: Deny, to: [{fqdn: {matchPattern: "*.tracker.test"}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: apps}
spec: {podSelector: {}, egress: [{name: alias, action: Allow, to: [{fqdn: {matchPattern: "*.alias.test"}}]}]}
`

// startChainDNS serves, on loopback UDP and TCP:
//
//	www.alias.test    CNAME pool.minepool.test    A 127.0.0.5
//	dn.alias.test     DNAME-substituted into dn.minepool.test (no CNAME)  A 127.0.0.6
//	cdn.alias.test    CNAME edge.cdn.test         A 127.0.0.7
//	ads.alias.test    CNAME x.tracker.test        A 127.0.0.8
func startChainDNS(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		hdr := func(n string, ty uint16) dns.RR_Header {
			return dns.RR_Header{Name: n, Rrtype: ty, Class: dns.ClassINET, Ttl: 60}
		}
		qn := strings.ToLower(q.Question[0].Name)
		cname := func(to, ip string) {
			r.Answer = []dns.RR{&dns.CNAME{Hdr: hdr(qn, dns.TypeCNAME), Target: to}}
			if q.Question[0].Qtype == dns.TypeA {
				r.Answer = append(r.Answer, &dns.A{Hdr: hdr(to, dns.TypeA), A: net.ParseIP(ip)})
			}
		}
		switch qn {
		case "www.alias.test.":
			cname("pool.minepool.test.", "127.0.0.5")
		case "cdn.alias.test.":
			cname("edge.cdn.test.", "127.0.0.7")
		case "ads.alias.test.":
			cname("x.tracker.test.", "127.0.0.8")
		case "dn.alias.test.":
			r.Answer = []dns.RR{&dns.DNAME{Hdr: hdr("alias.test.", dns.TypeDNAME), Target: "minepool.test."}}
			if q.Question[0].Qtype == dns.TypeA {
				r.Answer = append(r.Answer, &dns.A{Hdr: hdr("dn.minepool.test.", dns.TypeA), A: net.ParseIP("127.0.0.6")})
			}
		default:
			r.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(r)
	})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: h}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestCheckChainIntoDeniedName: a Host/SNI whose resolution goes through a
// CNAME or DNAME into a name a Deny rule matches is denied (chain-denied,
// naming the link) in explicit and transparent mode, and its addresses are
// not recorded for the workload; an allowed chain passes; an Audit-mode deny
// on a link is an Audit verdict naming the link.
func TestCheckChainIntoDeniedName(t *testing.T) {
	store := policy.NewStore()
	cl := netip.MustParseAddr("127.0.0.1")
	if err := store.LoadWorkloads(&policy.Workloads{
		Namespaces: []policy.Namespace{{Name: "apps"}},
		Pods:       []policy.Workload{{Namespace: "apps", Name: "client", IPs: []netip.Addr{cl}}},
	}); err != nil {
		t.Fatal(err)
	}
	objs, err := manifest.Decode("test", strings.NewReader(chainPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for i := range objs {
		if err := objs[i].Apply(store); err != nil {
			t.Fatal(err)
		}
	}
	c := &Checker{Engine: policy.NewEngine(store, policy.Options{}), ResolveChain: DNSResolver(startChainDNS(t), 2*time.Second)}
	for _, tc := range []struct {
		host, dst string
		allow     bool
		via       string
		auditVia  string
	}{
		{host: "www.alias.test", via: "pool.minepool.test"},
		{host: "www.alias.test", dst: "127.0.0.5", via: "pool.minepool.test"},
		{host: "dn.alias.test", dst: "127.0.0.6", via: "dn.minepool.test"},
		{host: "cdn.alias.test", dst: "127.0.0.7", allow: true},
		{host: "ads.alias.test", allow: true, auditVia: "x.tracker.test"},
	} {
		var dst netip.Addr
		if tc.dst != "" {
			dst = netip.MustParseAddr(tc.dst)
		}
		v := c.Check(context.Background(), Request{Client: cl, Host: tc.host, Port: 443, Dst: dst})
		if v.Allowed != tc.allow {
			t.Errorf("%s → %v: %+v, want allowed=%v", tc.host, dst, v, tc.allow)
			continue
		}
		if !tc.allow && (v.Reason != ReasonChainDenied || v.CNAME != tc.via || v.Policy != "ClusterFirewallPolicy/deny-mining" || v.Rule != "pools") {
			t.Errorf("%s: verdict %+v, want chain-denied via %s", tc.host, v, tc.via)
		}
		if !tc.allow && !strings.Contains(v.Describe(), "via "+tc.via) {
			t.Errorf("%s: description %q does not name the link", tc.host, v.Describe())
		}
		if tc.auditVia != "" && (v.Audit == nil || v.Audit.CNAME != tc.auditVia || v.Audit.Reason != ReasonChainDenied) {
			t.Errorf("%s: audit %+v, want chain-denied via %s", tc.host, v.Audit, tc.auditVia)
		}
		if tc.auditVia == "" && v.Audit != nil {
			t.Errorf("%s: unexpected audit %+v", tc.host, v.Audit)
		}
	}
	// Only the two allowed chains' addresses are in the policy model.
	if n := store.LookupRecords(); n != 2 {
		t.Errorf("%d lookup records, want 2 (the allowed chains)", n)
	}
}

package attack

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// chainZone: chains that reach the pool only after a middle link the pod's
// policy allows by name (mid.allowed.test), a DNAME chain two levels deep,
// and an allowed chain through a CDN name no rule mentions.
const chainZone = `www.mid.test. 60 IN CNAME mid.allowed.test.
mid.allowed.test. 60 IN CNAME pool2.minepool.test.
pool2.minepool.test. 60 IN A 192.0.2.67
deep.test. 60 IN DNAME hop.dname2.test.
hop.dname2.test. 60 IN DNAME minepool.test.
x.minepool.test. 60 IN A 192.0.2.68
www.cdn.test. 60 IN CNAME edge.cdn-provider.test.
edge.cdn-provider.test. 60 IN A 192.0.2.70
`

// chainPolicies: the Admin Deny of the pool, and an allow rule for the pods
// of builds naming the first link of every chain and the middle one.
const chainPolicies = denyMiningPolicies + `---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-chains, namespace: builds}
spec:
  podSelector: {}
  lookups: Enforce
  egress:
  - name: chains
    action: Allow
    to:
    - fqdn: {matchName: www.mid.test}
    - fqdn: {matchName: mid.allowed.test}
    - fqdn: {matchPattern: "*.deep.test"}
    - fqdn: {matchName: www.cdn.test}
    ports: [{port: 443, protocol: TCP}]
`

// TestChainMiddleLinkAndDNAME replays issue 17 item 1 beyond
// TestCNAMEIntoDeniedName: a chain whose middle link the policy allows by
// name before it reaches the denied pool (www.mid.test → mid.allowed.test →
// pool2.minepool.test), and a DNAME chain two DNAMEs deep (x.deep.test →
// x.hop.dname2.test → x.minepool.test). Each is blocked on every query —
// the second and third UDP queries are answered from the cache, where the UDP
// fast path decides — with an EDE and an audit event naming the denied link,
// and no address of the chain in any set. An allowed chain through a CDN
// name that no rule matches (with lookups: Enforce) is answered and its
// address written into the allow rule's set.
func TestChainMiddleLinkAndDNAME(t *testing.T) {
	w := New(t, Config{Zone: chainZone, Policies: chainPolicies})
	a := w.StartAgent(AgentOptions{})
	pod := w.Pods[0]
	for _, c := range []struct {
		qname, link string
		addr        netip.Addr
	}{
		{"www.mid.test", "pool2.minepool.test", netip.MustParseAddr("192.0.2.67")},
		{"x.deep.test", "x.minepool.test", netip.MustParseAddr("192.0.2.68")},
	} {
		for i, network := range []string{"udp", "udp", "udp", "tcp"} {
			r := w.Ask(pod, network, c.qname, dns.TypeA)
			var ede string
			if e := EDE(r); e != nil {
				ede = fmt.Sprintf("%d %q", e.InfoCode, e.ExtraText)
			}
			t.Logf("%s #%d over %s: %s answer %v EDE %s", c.qname, i, network, Rcode(r), AnswerAddrs(r), ede)
			if r.Rcode != dns.RcodeNameError || len(AnswerAddrs(r)) != 0 {
				t.Errorf("%s #%d over %s: %s %v, want NXDOMAIN without addresses", c.qname, i, network, Rcode(r), AnswerAddrs(r))
			}
			if e := EDE(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.Contains(e.ExtraText, "via "+c.link) {
				t.Errorf("%s #%d over %s: EDE %s, want Blocked via %s", c.qname, i, network, ede, c.link)
			}
		}
		line := a.WaitAudit(AuditEvent("dns.lookup.blocked", c.qname))
		if line == nil || fmt.Sprint(line["cname"]) != c.link || fmt.Sprint(line["policy"]) != "ClusterFirewallPolicy/deny-mining" {
			t.Errorf("%s: audit event %v, want cname %s by the Admin Deny", c.qname, line, c.link)
		}
		if sets := w.FQDNSetsWith(c.addr); len(sets) != 0 {
			t.Errorf("%s: %v in FQDN sets %v", c.qname, c.addr, sets)
		}
	}
	if n := w.FQDNElements(); n != 0 {
		t.Errorf("%d FQDN set elements after blocked chains", n)
	}

	cdn := netip.MustParseAddr("192.0.2.70")
	r := w.Ask(pod, "udp", "www.cdn.test", dns.TypeA)
	if r.Rcode != dns.RcodeSuccess || !slices.Contains(AnswerAddrs(r), cdn) {
		t.Fatalf("www.cdn.test: %s %v, want the CDN address", Rcode(r), AnswerAddrs(r))
	}
	if sets := w.FQDNSetsWith(cdn); len(sets) != 1 {
		t.Errorf("www.cdn.test: %v in FQDN sets %v, want the allow rule's set", cdn, sets)
	}
}

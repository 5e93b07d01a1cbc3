package attack

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// rebindZone: names under the attacker's evil.test that point at what a pod
// must not be opened to: the metadata service, loopback, the node's own
// address (192.0.2.1 on its link to the external peer), IPv6 link-local and
// loopback; mixed.evil.test also carries a legitimate address.
const rebindZone = `meta.evil.test. 60 IN A 169.254.169.254
loop.evil.test. 60 IN A 127.0.0.1
node.evil.test. 60 IN A 192.0.2.1
ll6.evil.test. 60 IN AAAA fe80::1
loop6.evil.test. 60 IN AAAA ::1
mixed.evil.test. 60 IN A 169.254.169.254
mixed.evil.test. 60 IN A 192.0.2.10
`

const rebindPolicies = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-evil, namespace: builds}
spec:
  podSelector: {}
  egress:
  - name: evil
    action: Allow
    to:
    - fqdn: {matchPattern: "*.evil.test"}
    ports: [{port: 80, protocol: TCP}]
`

// TestReplayRebinding replays issue 17 item 4: an allowed name resolving to
// link-local (169.254.169.254, fe80::/10), loopback or the node's own address.
// Those addresses must be dropped from the answer and from every FQDN set,
// with a dns.rebinding.blocked audit event; a legitimate address in the same
// answer is kept. Before the fix (main 8ff4d7d) every one of them was answered
// and written into the allow rule's set.
func TestReplayRebinding(t *testing.T) {
	w := New(t, Config{Zone: rebindZone, Policies: rebindPolicies})
	a := w.StartAgent(AgentOptions{})
	pod := w.Pods[0]
	legit := netip.MustParseAddr("192.0.2.10")
	for _, c := range []struct {
		qname string
		qtype uint16
		bad   string
	}{
		{"meta.evil.test", dns.TypeA, "169.254.169.254"},
		{"loop.evil.test", dns.TypeA, "127.0.0.1"},
		{"node.evil.test", dns.TypeA, "192.0.2.1"},
		{"ll6.evil.test", dns.TypeAAAA, "fe80::1"},
		{"loop6.evil.test", dns.TypeAAAA, "::1"},
		{"mixed.evil.test", dns.TypeA, "169.254.169.254"},
	} {
		bad := netip.MustParseAddr(c.bad)
		r := w.Ask(pod, "udp", c.qname, c.qtype)
		sets := w.FQDNSetsWith(bad)
		t.Logf("%s %s: %s answer %v; %v in FQDN sets %v", c.qname, dns.TypeToString[c.qtype], Rcode(r), AnswerAddrs(r), bad, sets)
		if slices.Contains(AnswerAddrs(r), bad) {
			t.Errorf("%s: answer carries %v", c.qname, bad)
		}
		if len(sets) != 0 {
			t.Errorf("%s: %v written into FQDN sets %v", c.qname, bad, sets)
		}
	}
	r := w.Ask(pod, "udp", "mixed.evil.test", dns.TypeA)
	if !slices.Contains(AnswerAddrs(r), legit) || len(w.FQDNSetsWith(legit)) != 1 {
		t.Errorf("mixed.evil.test: the legitimate %v lost: answer %v, sets %v", legit, AnswerAddrs(r), w.FQDNSetsWith(legit))
	}
	if a.WaitAudit(AuditEvent("dns.rebinding.blocked", "meta.evil.test")) == nil {
		t.Errorf("no dns.rebinding.blocked audit event for meta.evil.test")
	}
}

package attack

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// cnpAllowlist is the allow-list a platform team writes with upstream's
// ClusterNetworkPolicy: domainNames Accept (upstream: Accept rules only),
// then a Deny of every address.
const cnpAllowlist = `apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: egress-allowlist}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  egress:
  - name: allowed-domains
    action: Accept
    to: [{domainNames: ["*.allowed.test"]}]
  - name: default-deny
    action: Deny
    to: [{networks: [0.0.0.0/0, "::/0"]}]
`

// TestClusterNetworkPolicyDomainNames: a ClusterNetworkPolicy's domainNames
// are enforced at the resolver and in the kernel with upstream's wildcard
// semantics: "*.allowed.test" matches names one or more labels below, never
// the apex; the connection to the same address is dropped until the pod
// resolved a matching name through egressd (the answer is written into the
// rule's kernel set before the reply), and a name no rule allows is not
// answered on a node that enforces lookups.
func TestClusterNetworkPolicyDomainNames(t *testing.T) {
	w := New(t, Config{
		Zone: `www.allowed.test. 60 IN A 192.0.2.10
a.b.allowed.test. 60 IN A 192.0.2.10
allowed.test. 60 IN A 192.0.2.10
other.test. 60 IN A 192.0.2.10
`,
		Policies: cnpAllowlist,
	})
	// Default-deny with lookups enforced: the lookup of a name the
	// allow-list does not name is refused too.
	a := w.StartAgent(AgentOptions{Extra: []string{"--default-verdict=Deny", "--lookups=Enforce"}})
	pod := w.Pods[0]
	ext := netip.MustParseAddr("192.0.2.10")

	if w.Connect(pod, ext, 80) {
		t.Fatalf("connection to %v before any lookup went through (default-deny rule)", ext)
	}
	// The apex is not "*.allowed.test": answered or not, it opens nothing.
	for _, name := range []string{"allowed.test", "other.test"} {
		r := w.Ask(pod, "udp", name, dns.TypeA)
		if r.Rcode != dns.RcodeNameError || len(AnswerAddrs(r)) != 0 {
			t.Errorf("%s: %s %v, want NXDOMAIN (no Accept domainNames matches; lookups enforced)", name, Rcode(r), AnswerAddrs(r))
		}
		if line := a.WaitAudit(AuditEvent("dns.lookup.blocked", name)); line == nil {
			t.Errorf("%s: no dns.lookup.blocked event", name)
		}
	}
	if got := w.FQDNSetsWith(ext); len(got) != 0 {
		t.Fatalf("address in FQDN sets %v after lookups no rule allows", got)
	}
	if w.Connect(pod, ext, 80) {
		t.Fatalf("connection to %v went through without an allowed lookup", ext)
	}
	// One and two labels below the domain match.
	for _, name := range []string{"www.allowed.test", "a.b.allowed.test"} {
		r := w.Ask(pod, "udp", name, dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || !slices.Equal(AnswerAddrs(r), []netip.Addr{ext}) {
			t.Fatalf("%s: %s %v, want %v", name, Rcode(r), AnswerAddrs(r), ext)
		}
	}
	if got := w.FQDNSetsWith(ext); len(got) != 1 {
		t.Fatalf("allowed answer in FQDN sets %v, want the allowed-domains rule's", got)
	}
	if !w.Connect(pod, ext, 80) {
		t.Fatalf("connection to %v after the allowed lookup was dropped", ext)
	}
}

package attack

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
)

// denyMiningPolicies: an Admin Deny on *.minepool.test for every pod.
const denyMiningPolicies = `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-mining}
spec:
  tier: Admin
  priority: 10
  subject:
    namespaceSelector: {}
  egress:
  - name: mining-pools
    action: Deny
    to:
    - fqdn: {matchPattern: "*.minepool.test"}
`

const unknownZone = `pool.minepool.test. 60 IN A 192.0.2.66
ok.world.test. 60 IN A 192.0.2.10
`

// TestReplayUnknownClient replays issue 17 item 2: clients that are not known
// workloads — a host off the node that routes 169.254.20.10 to it (the
// external namespace, 192.0.2.10) and a pod missing from the workloads file —
// ask for a name an Admin Deny covers. They must be refused (REFUSED, EDE
// "egressd: unknown client"); the node's own processes (hostNetwork) are still
// served. Before the fix (main 8ff4d7d) both got the pool's address: no policy
// at all, Admin tier included.
func TestReplayUnknownClient(t *testing.T) {
	w := New(t, Config{
		Zone:     unknownZone,
		Policies: denyMiningPolicies,
		Pods:     []netmodel.PodSpec{{Name: DefaultPod}, {Name: "builds/ghost-0"}},
		Unlisted: []string{"builds/ghost-0"},
	})
	w.StartAgent(AgentOptions{})
	// The known pod: the deny applies.
	if r := w.Ask(w.Pods[0], "udp", "pool.minepool.test", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("known pod: pool.minepool.test %s, want NXDOMAIN", Rcode(r))
	}
	for _, c := range []struct {
		who string
		ns  *netmodel.NS
	}{
		{"off-node host 192.0.2.10", w.External.NS},
		{"unlisted pod " + w.Pods[1].IPv4.String(), w.Pods[1].NS},
	} {
		for _, network := range []string{"udp", "tcp"} {
			r, err := Query(c.ns, ResolverAddr, network, "pool.minepool.test", dns.TypeA)
			if err != nil {
				t.Fatalf("%s over %s: %v", c.who, network, err)
			}
			var ede string
			if e := EDE(r); e != nil {
				ede = fmt.Sprintf("%d %q", e.InfoCode, e.ExtraText)
			}
			t.Logf("%s over %s: pool.minepool.test %s answer %v EDE %s", c.who, network, Rcode(r), AnswerAddrs(r), ede)
			if r.Rcode != dns.RcodeRefused || len(r.Answer) != 0 {
				t.Errorf("%s over %s: %s %v, want REFUSED without answer", c.who, network, Rcode(r), AnswerAddrs(r))
			}
			if e := EDE(r); e == nil || !strings.Contains(e.ExtraText, "unknown client") {
				t.Errorf("%s over %s: EDE %s, want one naming the unknown client", c.who, network, ede)
			}
		}
	}
	// A process on the node (hostNetwork) is still served.
	r, err := Query(w.Node.NS, ResolverAddr, "udp", "ok.world.test", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(AnswerAddrs(r)) != 1 || AnswerAddrs(r)[0] != netip.MustParseAddr("192.0.2.10") {
		t.Fatalf("node process: ok.world.test %v %v, want NOERROR 192.0.2.10", r, err)
	}
}

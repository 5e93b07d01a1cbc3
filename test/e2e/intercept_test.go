package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
)

// clusterDNS is the cluster DNS Service address pods are configured with; no
// process listens on it: egressd's interception rules redirect it to the resolver.
const clusterDNS = "10.96.0.10:53"

// TestInterceptClusterDNS: with --intercept-dns the pod's lookups sent to the
// cluster DNS Service IP are answered by egressd (UDP and TCP), with policy: an
// allowed name is programmed and reachable, a blocked one gets NXDOMAIN; when the
// agent stops, intercepted lookups fail instead of bypassing policy.
func TestInterceptClusterDNS(t *testing.T) {
	w := newWorld(t)
	a := w.startAgent(agentOpts{extra: []string{"--intercept-dns", clusterDNS}})
	for _, network := range []string{"udp", "tcp"} {
		r, err := w.exchange(w.pod.NS, clusterDNS, network, "api.example.com", dns.TypeA, 5*time.Second)
		if err != nil {
			t.Fatalf("%s query to the cluster DNS address: %v", network, err)
		}
		wantRcode(t, r, dns.RcodeSuccess, "api.example.com via the cluster DNS address over "+network)
		ips := netmodel.AnswerAddrs(r)
		if len(ips) == 0 || !w.connect(ips[0]) {
			t.Fatalf("%s: answer %v not reachable after an intercepted lookup", network, ips)
		}
		r, err = w.exchange(w.pod.NS, clusterDNS, network, "pool.minepool.com", dns.TypeA, 5*time.Second)
		if err != nil {
			t.Fatalf("%s blocked query: %v", network, err)
		}
		wantRcode(t, r, dns.RcodeNameError, "pool.minepool.com via the cluster DNS address over "+network)
	}
	rules, err := w.node.Exec(t.Context(), "", "nft", "list", "chain", "inet", "egressd", "l7_dns_intercept")
	if err != nil || !strings.Contains(string(rules), "10.96.0.10") {
		t.Fatalf("interception chain: %v\n%s", err, rules)
	}
	a.stop()
	if _, err := w.exchange(w.pod.NS, clusterDNS, "udp", "api.example.com", dns.TypeA, time.Second); err == nil {
		t.Fatal("with the agent stopped, an intercepted lookup was answered: it must fail closed")
	}
}

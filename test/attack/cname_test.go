package attack

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// poolAddr is the mining pool's address: the final A of every chain below.
var poolAddr = netip.MustParseAddr("192.0.2.66")

const cnameZone = `www.alias.test. 60 IN CNAME pool.minepool.test.
pool.minepool.test. 60 IN A 192.0.2.66
dname.test. 60 IN DNAME minepool.test.
`

// cnamePolicies: an Admin Deny on *.minepool.test for every pod, and an allow
// rule for builds/* that matches the first name of each chain (www.alias.test,
// *.dname.test) and not the pool.
const cnamePolicies = denyMiningPolicies + `---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-alias, namespace: builds}
spec:
  podSelector: {}
  egress:
  - name: alias
    action: Allow
    to:
    - fqdn: {matchName: www.alias.test}
    - fqdn: {matchPattern: "*.dname.test"}
    ports: [{port: 443, protocol: TCP}]
`

// TestCNAMEIntoDeniedName replays issue 17 item 1: a name the pod may resolve
// (www.alias.test, pool.dname.test) whose CNAME or DNAME chain reaches a name
// an Admin Deny covers (pool.minepool.test). The lookup must be blocked as the
// block mode says (NXDOMAIN, REFUSED), with an EDE and an audit event naming
// the denied chain link, no address in the answer, and the pool's address in
// no FQDN set. Before the fix (main 8ff4d7d) the pod got the pool's address
// and it was written into the allow rule's set.
func TestCNAMEIntoDeniedName(t *testing.T) {
	for _, mode := range []struct {
		flag  string
		rcode int
	}{{"nxdomain", dns.RcodeNameError}, {"refused", dns.RcodeRefused}} {
		t.Run(mode.flag, func(t *testing.T) {
			w := New(t, Config{Zone: cnameZone, Policies: cnamePolicies})
			a := w.StartAgent(AgentOptions{BlockedResponse: mode.flag})
			pod := w.Pods[0]
			// The direct lookup of the pool is blocked today already: the
			// reference for what the chain must look like.
			direct := w.Ask(pod, "udp", "pool.minepool.test", dns.TypeA)
			if direct.Rcode != mode.rcode {
				t.Fatalf("direct lookup of the pool: %s, want %s", Rcode(direct), dns.RcodeToString[mode.rcode])
			}
			for _, c := range []struct{ qname, network string }{
				{"www.alias.test", "udp"},
				{"www.alias.test", "tcp"},
				{"pool.dname.test", "udp"},
			} {
				r := w.Ask(pod, c.network, c.qname, dns.TypeA)
				var ede string
				if e := EDE(r); e != nil {
					ede = fmt.Sprintf("%d %q", e.InfoCode, e.ExtraText)
				}
				t.Logf("%s over %s: %s answer %v EDE %s; pool address in FQDN sets %v",
					c.qname, c.network, Rcode(r), AnswerAddrs(r), ede, w.FQDNSetsWith(poolAddr))
				if r.Rcode != mode.rcode {
					t.Errorf("%s over %s: rcode %s, want %s", c.qname, c.network, Rcode(r), dns.RcodeToString[mode.rcode])
				}
				if slices.Contains(AnswerAddrs(r), poolAddr) {
					t.Errorf("%s over %s: the pod got the pool's address %v", c.qname, c.network, poolAddr)
				}
				if e := EDE(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.Contains(e.ExtraText, "minepool.test") {
					t.Errorf("%s over %s: EDE %s, want Blocked naming the chain link (minepool.test)", c.qname, c.network, ede)
				}
				line := a.WaitAudit(AuditEvent("dns.lookup.blocked", c.qname))
				if line == nil {
					t.Errorf("%s: no dns.lookup.blocked audit event", c.qname)
				} else if cn := fmt.Sprint(line["cname"]); !strings.Contains(cn, "minepool.test") {
					t.Errorf("%s: audit event's cname %q does not name the chain link: %v", c.qname, cn, line)
				}
			}
			if sets := w.FQDNSetsWith(poolAddr); len(sets) != 0 {
				t.Errorf("the pool's address %v is in FQDN sets %v", poolAddr, sets)
			}
		})
	}
}

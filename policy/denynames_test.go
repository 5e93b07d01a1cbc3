package policy_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

const denyNamesPolicies = `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-exact}
spec:
  tier: Admin
  priority: 10
  subject: {namespaceSelector: {}}
  egress:
  - action: Deny
    to: [{fqdn: {matchName: Pool.Minepool.Test.}}, {fqdn: {matchPattern: "*.wild.test"}}, {fqdn: {matchPattern: "plain.test"}}]
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: allow-exact}
spec:
  tier: Admin
  priority: 20
  subject: {namespaceSelector: {}}
  egress:
  - action: Allow
    to: [{fqdn: {matchName: api.allowed.test}}]
`

func denyNamesStore(t *testing.T) (*policy.Store, *policy.Plan) {
	t.Helper()
	objs, err := manifest.Decode("test", strings.NewReader(denyNamesPolicies))
	if err != nil {
		t.Fatal(err)
	}
	ws := &policy.Workloads{Namespaces: []policy.Namespace{{Name: "x"}},
		Pods: []policy.Workload{{Namespace: "x", Name: "a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}}}}
	st, err := manifest.LoadStore(objs, ws)
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := policy.NewCompiler(st, policy.Options{}).Compile()
	return st, plan
}

// TestDenyNames: only the exact names of egress Deny rules are pre-resolvable
// (canonical: lower case, no trailing dot); wildcards and Allow rules are not.
func TestDenyNames(t *testing.T) {
	_, plan := denyNamesStore(t)
	got := map[string][]string{}
	for ref, pp := range plan.Policies {
		for _, r := range pp.Egress {
			if n := r.DenyNames(); n != nil {
				got[ref.Name] = n
			}
		}
	}
	if len(got) != 1 || !slices.Equal(got["deny-exact"], []string{"pool.minepool.test", "plain.test"}) {
		t.Errorf("DenyNames: %v, want deny-exact: [pool.minepool.test plain.test]", got)
	}
}

// TestDecideDenyResolved: the engine (the kernel's reference) drops a
// connection to a pre-resolved address of a Deny rule's exact name from a
// workload that never looked the name up, until the record expires; the
// same address recorded for an Allow rule's name or a wildcard's name does
// nothing.
func TestDecideDenyResolved(t *testing.T) {
	st, _ := denyNamesStore(t)
	e := policy.NewEngine(st, policy.Options{})
	c := policy.Connection{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.66"), Port: 443, Protocol: policy.ProtocolTCP}
	verdict := func() (policy.Verdict, string) {
		d := e.Decide(c)
		return d.Verdict, d.Deciding().Policy.String()
	}
	if v, _ := verdict(); v != policy.Allow {
		t.Fatalf("before any record: %v, want Allow", v)
	}
	st.RecordDenyResolved("api.allowed.test", time.Now().Add(time.Minute), c.Dst)
	st.RecordDenyResolved("x.wild.test", time.Now().Add(time.Minute), c.Dst)
	if v, _ := verdict(); v != policy.Allow {
		t.Errorf("recorded for an Allow name and a wildcard's name: %v, want Allow", v)
	}
	st.RecordDenyResolved("POOL.minepool.test.", time.Now().Add(time.Minute), c.Dst)
	if v, p := verdict(); v != policy.Deny || p != "ClusterFirewallPolicy/deny-exact" {
		t.Errorf("pre-resolved deny name: %v by %q, want Deny by ClusterFirewallPolicy/deny-exact", v, p)
	}
	if got := st.DenyResolved("pool.minepool.test"); len(got) != 1 || got[0] != c.Dst {
		t.Errorf("DenyResolved: %v", got)
	}
	st.ForgetDenyResolved("pool.minepool.test")
	if v, _ := verdict(); v != policy.Allow {
		t.Errorf("forgotten: %v, want Allow", v)
	}
	st.RecordDenyResolved("pool.minepool.test", time.Now().Add(-time.Second), c.Dst)
	if v, _ := verdict(); v != policy.Allow {
		t.Errorf("expired record: %v, want Allow", v)
	}
}

package policy_test

import (
	"testing"

	"github.com/egressd/egressd/policy"
)

// TestDecideChain: every link of an answer's alias chain is decided like a
// question name; a Deny rule on a link blocks the lookup whatever allowed the
// question (Admin Allow at a higher priority included), a link no rule
// matches does not block (lookups: Enforce applies to the question only),
// cluster-domain links are never blocked, and an Audit-mode deny on a link is
// carried as Audit with AuditVia.
func TestDecideChain(t *testing.T) {
	e := loadEngine(t, `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: allow-alias}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{name: alias, action: Allow, to: [{fqdn: {matchName: www.alias.example}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-mining}
spec: {tier: Admin, priority: 10, subject: {namespaceSelector: {}}, egress: [{name: pools, action: Deny, to: [{fqdn: {matchPattern: "*.minepool.example"}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: staged}
spec: {tier: Admin, priority: 20, mode: Audit, subject: {namespaceSelector: {}}, egress: [{name: trackers, action: Deny, to: [{fqdn: {matchPattern: "*.tracker.example"}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: apis, namespace: x}
spec: {podSelector: {}, lookups: Enforce, egress: [{name: api, action: Allow, to: [{fqdn: {matchName: api.good.example}}]}]}`, policy.Options{}, nil)
	w := policy.WorkloadKey{Namespace: "x", Name: "a"}
	cases := []struct {
		q        string
		links    []string
		blocked  bool
		via      string
		auditVia string
	}{
		{q: "www.alias.example", links: []string{"pool.minepool.example."}, blocked: true, via: "pool.minepool.example"},
		{q: "api.good.example", links: []string{"edge.cdn.example.", "b.minepool.example"}, blocked: true, via: "b.minepool.example"},
		{q: "api.good.example", links: []string{"edge.cdn.example."}}, // lookups: Enforce does not apply to links
		{q: "api.good.example", links: []string{"x.minepool.example.svc.cluster.local."}},
		{q: "api.good.example", links: []string{"a.tracker.example."}, auditVia: "a.tracker.example"},
		{q: "api.good.example", links: []string{"a..b"}, blocked: true, via: "a..b"},
		{q: "pool.minepool.example", links: nil, blocked: true}, // the question itself
		{q: "api.good.example", links: nil},
	}
	for _, c := range cases {
		d := e.DecideChain(e.DecideLookup(w, c.q), c.links)
		if d.Blocked() != c.blocked || d.Via != c.via || d.AuditVia != c.auditVia {
			t.Errorf("%s via %v: blocked %v via %q auditVia %q, want %v %q %q (%+v)", c.q, c.links, d.Blocked(), d.Via, d.AuditVia, c.blocked, c.via, c.auditVia, d.Outcome)
		}
		if c.via != "" && c.via != "a..b" && (d.Policy.Name != "deny-mining" || d.Rule != "pools" || d.Tier != policy.TierAdmin) {
			t.Errorf("%s: deciding outcome %+v", c.q, d.Outcome)
		}
		if c.auditVia != "" && (d.Audit == nil || d.Audit.Policy.Name != "staged" || d.Audit.Verdict != policy.Deny) {
			t.Errorf("%s: audit %+v", c.q, d.Audit)
		}
	}
}

// BenchmarkDecideChain measures what a CNAME adds to a lookup: DecideChain of
// a three-link chain (allowed service → zone name → name no rule matches, or
// → a denied pool) for a workload that 10,000 Admin policies with 10,000
// FQDN patterns select (the setup of BenchmarkLookupManyAdminPolicies).
func BenchmarkDecideChain(b *testing.B) {
	e := manyAdminEngine(b, 10000)
	w := policy.WorkloadKey{Namespace: benchNS(5), Name: benchPod(5)}
	q := e.DecideLookup(w, "svc7.example.com.")
	allowed := []string{"x.zone9.example.org.", "edge.cdn.example.", "unknown.example.com."}
	denied := []string{"x.zone9.example.org.", "edge.cdn.example.", "a.pool4242.example."}
	if d := e.DecideChain(q, allowed); d.Blocked() {
		b.Fatalf("allowed chain blocked: %+v", d)
	}
	if d := e.DecideChain(q, denied); !d.Blocked() || d.Via != "a.pool4242.example" {
		b.Fatalf("denied chain: %+v", d)
	}
	for name, links := range map[string][]string{"allowed": allowed, "denied": denied} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				e.DecideChain(q, links)
			}
		})
	}
}

package policy_test

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/test/scenarios"
)

// forCheck is one DecideFor expectation: x/a connects to dst:port asking for
// name. decide, when set, is what Decide says for the same connection (to
// show where the two differ).
type forCheck struct {
	name   string
	dst    netip.Addr
	port   int32
	want   policy.Verdict
	policy string // deciding egress policy, checked when set
	rule   string // deciding egress rule, checked when set
	reason string // checked when set
	audit  policy.Verdict
	decide policy.Verdict
}

var (
	sharedV4 = scenarios.DefaultExternal.IPv4
	sharedV6 = scenarios.DefaultExternal.IPv6
)

// shared: x/a resolved every listed name to the one external address (v4 and v6).
func shared(names ...string) []scenarios.Lookup {
	var out []scenarios.Lookup
	for _, n := range names {
		out = append(out, scenarios.Lookup{Workload: "x/a", Name: n, IPs: []netip.Addr{sharedV4, sharedV6}})
	}
	return out
}

func TestDecideFor(t *testing.T) {
	cases := []struct {
		name    string
		yaml    string
		lookups []scenarios.Lookup
		checks  []forCheck
	}{
		{
			name: "namespaced: two policies allow two names of one address; each name by its own policy",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: a-api, namespace: x}
spec: {podSelector: {}, egress: [{action: Allow, to: [{fqdn: {matchName: api.good.com}}], ports: [{port: 443}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: b-other, namespace: x}
spec: {podSelector: {}, egress: [{action: Allow, to: [{fqdn: {matchName: other.good.com}}], ports: [{port: 443}]}]}`,
			lookups: shared("api.good.com", "other.good.com", "evil.good.com"),
			checks: []forCheck{
				{name: "api.good.com", dst: sharedV4, port: 443, want: policy.Allow, policy: "FirewallPolicy/x/a-api", decide: policy.Allow},
				// Decide reports a-api's rule (first policy); DecideFor the name's own.
				{name: "other.good.com", dst: sharedV4, port: 443, want: policy.Allow, policy: "FirewallPolicy/x/b-other", rule: "egress[0]"},
				{name: "Other.Good.com.", dst: sharedV6, port: 443, want: policy.Allow, policy: "FirewallPolicy/x/b-other"},
				{name: "evil.good.com", dst: sharedV4, port: 443, want: policy.Deny, reason: policy.ReasonIsolated, decide: policy.Allow},
				{name: "other.good.com", dst: sharedV4, port: 80, want: policy.Deny, decide: policy.Deny},
				{name: "", dst: sharedV4, port: 443, want: policy.Deny, reason: policy.ReasonIsolated, decide: policy.Allow},
			},
		},
		{
			name: "namespaced: two rules of one policy",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {}
  egress:
  - {action: Allow, to: [{fqdn: {matchName: api.good.com}}]}
  - {action: Allow, to: [{fqdn: {matchPattern: "*.cdn.com"}}]}`,
			lookups: shared("api.good.com", "img.cdn.com"),
			checks: []forCheck{
				{name: "img.cdn.com", dst: sharedV4, port: 443, want: policy.Allow, rule: "egress[1]"},
				{name: "api.good.com", dst: sharedV4, port: 443, want: policy.Allow, rule: "egress[0]"},
				{name: "a.b.cdn.com", dst: sharedV4, port: 443, want: policy.Deny},
			},
		},
		{
			name: "an FQDN rule and a CIDR rule: the CIDR rule allows every name, on its ports",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {}
  egress:
  - {action: Allow, to: [{fqdn: {matchName: api.good.com}}]}
  - {action: Allow, to: [{cidr: 192.0.2.0/24}, {cidr: "2001:db8::/64"}], ports: [{port: 443}]}`,
			lookups: shared("api.good.com"),
			checks: []forCheck{
				{name: "evil.com", dst: sharedV4, port: 443, want: policy.Allow, rule: "egress[1]"},
				{name: "evil.com", dst: sharedV6, port: 443, want: policy.Allow, rule: "egress[1]"},
				{name: "", dst: sharedV4, port: 443, want: policy.Allow, rule: "egress[1]"},
				{name: "api.good.com", dst: sharedV4, port: 80, want: policy.Allow, rule: "egress[0]"},
				{name: "evil.com", dst: sharedV4, port: 80, want: policy.Deny, decide: policy.Allow},
			},
		},
		{
			name: "namespaced Deny FQDN rule matching only the other name does not deny this name",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {}
  egress:
  - {action: Allow, to: [{fqdn: {matchName: api.good.com}}]}
  - {action: Deny, to: [{fqdn: {matchPattern: "*.evil.com"}}]}`,
			lookups: shared("api.good.com", "x.evil.com"),
			checks: []forCheck{
				{name: "api.good.com", dst: sharedV4, port: 443, want: policy.Allow, rule: "egress[0]", decide: policy.Deny},
				{name: "x.evil.com", dst: sharedV4, port: 443, want: policy.Deny, rule: "egress[1]", reason: policy.ReasonRule},
			},
		},
		{
			name: "Admin Deny FQDN rule for the other name; namespaced Allow for this one",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-evil}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{fqdn: {matchPattern: "**.evil.com"}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: x}
spec: {podSelector: {}, egress: [{action: Allow, to: [{fqdn: {matchName: api.good.com}}]}]}`,
			lookups: shared("api.good.com", "a.b.evil.com"),
			checks: []forCheck{
				{name: "api.good.com", dst: sharedV4, port: 443, want: policy.Allow, policy: "FirewallPolicy/x/web", decide: policy.Deny},
				{name: "a.b.evil.com", dst: sharedV4, port: 443, want: policy.Deny, policy: "ClusterFirewallPolicy/deny-evil"},
			},
		},
		{
			name: "Admin Pass for one name hands it to Baseline; the other name hits the Admin CIDR deny",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: pass-good}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Pass, to: [{fqdn: {matchName: api.good.com}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-net}
spec: {tier: Admin, priority: 2, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{cidr: 192.0.2.0/24}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: baseline-allow}
spec: {tier: Baseline, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Allow}]}`,
			lookups: shared("api.good.com", "other.com"),
			checks: []forCheck{
				{name: "api.good.com", dst: sharedV4, port: 443, want: policy.Allow, policy: "ClusterFirewallPolicy/baseline-allow", decide: policy.Allow},
				{name: "other.com", dst: sharedV4, port: 443, want: policy.Deny, policy: "ClusterFirewallPolicy/deny-net"},
				{name: "other.com", dst: sharedV6, port: 443, want: policy.Allow, policy: "ClusterFirewallPolicy/baseline-allow"},
			},
		},
		{
			name: "Baseline: first match per name",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: allow-good}
spec: {tier: Baseline, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Allow, to: [{fqdn: {matchName: api.good.com}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-rest}
spec: {tier: Baseline, priority: 2, subject: {namespaceSelector: {}}, egress: [{action: Deny}]}`,
			lookups: shared("api.good.com", "evil.com"),
			checks: []forCheck{
				{name: "api.good.com", dst: sharedV4, port: 443, want: policy.Allow, policy: "ClusterFirewallPolicy/allow-good"},
				{name: "evil.com", dst: sharedV4, port: 443, want: policy.Deny, policy: "ClusterFirewallPolicy/deny-rest", decide: policy.Allow},
			},
		},
		{
			name: "Audit mode: an Audit policy reports what it would do per name",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: x}
spec: {podSelector: {}, egress: [{action: Allow, to: [{fqdn: {matchPattern: "*.good.com"}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: staged, namespace: x}
spec: {podSelector: {}, mode: Audit, egress: [{action: Deny, to: [{fqdn: {matchName: evil.good.com}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: staged-admin}
spec: {tier: Admin, priority: 1, mode: Audit, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{fqdn: {matchName: tracker.good.com}}]}]}`,
			lookups: shared("api.good.com", "evil.good.com", "tracker.good.com"),
			checks: []forCheck{
				{name: "api.good.com", dst: sharedV4, port: 443, want: policy.Allow},
				{name: "evil.good.com", dst: sharedV4, port: 443, want: policy.Allow, audit: policy.Deny},
				{name: "tracker.good.com", dst: sharedV4, port: 443, want: policy.Allow, audit: policy.Deny},
			},
		},
		{
			name: "invalid name",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: x}
spec: {podSelector: {}, egress: [{action: Allow}]}`,
			checks: []forCheck{
				{name: "bad..name", dst: sharedV4, port: 443, want: policy.Deny, reason: policy.ReasonInvalidName},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := loadEngine(t, tc.yaml, policy.Options{}, tc.lookups)
			src := scenarios.PodIPv4("x", "a")
			for _, c := range tc.checks {
				if c.dst.Is6() {
					src = scenarios.PodIPv6("x", "a")
				}
				conn := policy.Connection{Src: src, Dst: c.dst, Port: c.port}
				d := e.DecideFor(conn, c.name)
				what := c.name + " -> " + netip.AddrPortFrom(c.dst, uint16(c.port)).String()
				eg := d.Egress
				if d.Verdict != c.want || eg.Verdict != c.want {
					t.Errorf("%s: %s (egress %+v), want %s", what, d.Verdict, eg, c.want)
					continue
				}
				if c.policy != "" && eg.Policy.String() != c.policy {
					t.Errorf("%s: decided by %q (%+v), want %q", what, eg.Policy, eg, c.policy)
				}
				if c.rule != "" && eg.Rule != c.rule {
					t.Errorf("%s: rule %q, want %q", what, eg.Rule, c.rule)
				}
				if c.reason != "" && eg.Reason != c.reason {
					t.Errorf("%s: reason %q, want %q", what, eg.Reason, c.reason)
				}
				switch {
				case c.audit == "" && eg.Audit != nil:
					t.Errorf("%s: unexpected audit outcome %+v", what, *eg.Audit)
				case c.audit != "" && (eg.Audit == nil || eg.Audit.Verdict != c.audit):
					t.Errorf("%s: audit outcome %+v, want %s", what, eg.Audit, c.audit)
				}
				if c.decide != "" {
					if got := e.Decide(conn).Verdict; got != c.decide {
						t.Errorf("%s: Decide says %s, want %s", what, got, c.decide)
					}
				}
			}
		})
	}
}

// TestDecideForAgreesWithDecideOnOneName: when the workload resolved only
// name to the address, DecideFor and Decide agree on every connection.
func TestDecideForAgreesWithDecideOnOneName(t *testing.T) {
	yaml := `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-evil}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{fqdn: {matchPattern: "*.evil.com"}}], ports: [{port: 443}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {}
  egress:
  - {action: Allow, to: [{fqdn: {matchPattern: "**.good.com"}}], ports: [{port: 443}]}
  - {action: Allow, to: [{pods: {podSelector: {}}}]}
  - {action: Deny, to: [{fqdn: {matchName: bad.good.com}}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: base}
spec: {tier: Baseline, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Allow, to: [{fqdn: {matchName: x.evil.com}}]}]}`
	names := []string{"api.good.com", "a.b.good.com", "bad.good.com", "x.evil.com", "other.org"}
	dsts := []netip.Addr{sharedV4, scenarios.PodIPv4("y", "a")}
	srcs := []string{"x/a", "y/a"}
	for _, name := range names {
		for _, from := range srcs {
			for _, dst := range dsts {
				lookups := []scenarios.Lookup{{Workload: from, Name: name, IPs: []netip.Addr{dst}}}
				e := loadEngine(t, yaml, policy.Options{}, lookups)
				for _, port := range []int32{80, 443} {
					c := policy.Connection{Src: addr(from, false), Dst: dst, Port: port}
					want, got := e.Decide(c), e.DecideFor(c, name)
					if want.Verdict != got.Verdict || want.Egress.Outcome != got.Egress.Outcome {
						t.Errorf("%s %s -> %v:%d: Decide %+v, DecideFor %+v", from, name, dst, port, want.Egress, got.Egress)
					}
				}
			}
		}
	}
}

package policy_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/scenarios"
)

// check is one expectation: a connection from → to (pods of the x/y/z model as
// "x/a", or an address) on port/proto, or — with name set — a lookup by from.
type check struct {
	from, to string
	port     int32
	proto    policy.Protocol
	name     string // lookup of this name instead of a connection
	want     policy.Verdict
	tier     policy.Tier // checked when set
	reason   string      // checked when set
	audit    policy.Verdict
	// dir selects the direction whose outcome is checked (default: the deciding one).
	dir policy.Direction
}

type semanticsCase struct {
	name    string
	yaml    string
	opts    policy.Options
	lookups []scenarios.Lookup
	checks  []check
	family6 bool
}

func addr(s string, v6 bool) netip.Addr {
	if ns, pod, ok := strings.Cut(s, "/"); ok {
		if v6 {
			return scenarios.PodIPv6(ns, pod)
		}
		return scenarios.PodIPv4(ns, pod)
	}
	return netip.MustParseAddr(s)
}

func loadEngine(t *testing.T, yaml string, opts policy.Options, lookups []scenarios.Lookup) *policy.Engine {
	t.Helper()
	objs, err := manifest.Decode("test", strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := manifest.LoadStore(objs, scenarios.Workloads())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lookups {
		k, err := policy.ParseWorkloadKey(l.Workload)
		if err != nil {
			t.Fatal(err)
		}
		s.RecordLookup(k, l.Name, l.IPs...)
	}
	return policy.NewEngine(s, opts)
}

func runChecks(t *testing.T, e *policy.Engine, checks []check, v6 bool) {
	t.Helper()
	for _, c := range checks {
		proto := c.proto
		if proto == "" {
			proto = policy.ProtocolTCP
		}
		var out policy.Outcome
		var audit *policy.Outcome
		var what string
		if c.name != "" {
			k, _ := policy.ParseWorkloadKey(c.from)
			d := e.DecideLookup(k, c.name)
			out, audit, what = d.Outcome, d.Audit, "lookup "+c.from+" "+c.name
		} else {
			d := e.Decide(policy.Connection{Src: addr(c.from, v6), Dst: addr(c.to, v6), Port: c.port, Protocol: proto})
			dd := d.Deciding()
			switch c.dir {
			case policy.Egress:
				dd = d.Egress
			case policy.Ingress:
				dd = d.Ingress
			}
			out, audit = dd.Outcome, dd.Audit
			out.Verdict = d.Verdict
			what = c.from + " -> " + c.to + " " + string(proto) + "/" + itoa(c.port)
		}
		if out.Verdict != c.want {
			t.Errorf("%s: %s (%+v), want %s", what, out.Verdict, out, c.want)
			continue
		}
		if c.tier != "" && out.Tier != c.tier {
			t.Errorf("%s: decided by tier %s (%+v), want %s", what, out.Tier, out, c.tier)
		}
		if c.reason != "" && out.Reason != c.reason {
			t.Errorf("%s: reason %q (%+v), want %q", what, out.Reason, out, c.reason)
		}
		switch {
		case c.audit == "" && audit != nil:
			t.Errorf("%s: unexpected audit outcome %+v", what, *audit)
		case c.audit != "" && (audit == nil || audit.Verdict != c.audit):
			t.Errorf("%s: audit outcome %+v, want %s", what, audit, c.audit)
		}
	}
}

func itoa(n int32) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

const (
	allow = policy.Allow
	deny  = policy.Deny
)

// TestSemantics has one case per clause of docs/design.md §3 (and of Kubernetes
// NetworkPolicy semantics); each case's name states the behaviour.
func TestSemantics(t *testing.T) {
	cases := []semanticsCase{
		{
			name: "admin tier is evaluated before the namespaced tier",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec: {podSelector: {}, ingress: [{}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, ingress: [{action: Deny, from: [{namespaces: {matchLabels: {ns: z}}}]}]}`,
			checks: []check{
				{from: "z/a", to: "x/a", port: 80, want: deny, tier: policy.TierAdmin, reason: policy.ReasonRule},
				{from: "y/a", to: "x/a", port: 80, want: allow, tier: policy.TierNamespaced},
			},
		},
		{
			name: "first matching rule of a policy wins",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: ordered}
spec:
  tier: Admin
  priority: 1
  subject: {namespaceSelector: {}}
  egress:
  - {action: Allow, ports: [{port: 80}]}
  - {action: Deny}`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: allow, tier: policy.TierAdmin, dir: policy.Egress},
				{from: "x/a", to: "y/a", port: 81, want: deny, tier: policy.TierAdmin},
			},
		},
		{
			name: "lower priority number is evaluated first",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: late-allow}
spec: {tier: Admin, priority: 900, subject: {namespaceSelector: {}}, egress: [{action: Allow}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: early-deny}
spec: {tier: Admin, priority: 5, subject: {namespaceSelector: {}}, egress: [{action: Deny, ports: [{port: 81}]}]}`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 81, want: deny},
				{from: "x/a", to: "y/a", port: 80, want: allow},
			},
		},
		{
			name: "equal priority: Deny beats Allow whatever the names",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: a-allow}
spec: {tier: Admin, priority: 5, subject: {namespaceSelector: {}}, egress: [{action: Allow}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: z-deny}
spec: {tier: Baseline, priority: 5, subject: {namespaceSelector: {}}, egress: [{action: Allow}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: b-deny}
spec: {tier: Admin, priority: 5, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{namespaces: {matchLabels: {ns: z}}}]}]}`,
			checks: []check{
				{from: "x/a", to: "z/a", port: 80, want: deny, tier: policy.TierAdmin},
				{from: "x/a", to: "y/a", port: 80, want: allow, tier: policy.TierAdmin, dir: policy.Egress},
			},
		},
		{
			name: "Pass skips the rest of the admin tier and hands over to the namespaced tier",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: pass}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, ingress: [{action: Pass, from: [{namespaces: {matchLabels: {ns: "y"}}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-later}
spec: {tier: Admin, priority: 2, subject: {namespaceSelector: {}}, ingress: [{action: Deny}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-80, namespace: x}
spec: {podSelector: {}, ingress: [{ports: [{port: 80}]}]}`,
			checks: []check{
				{from: "y/a", to: "x/a", port: 80, want: allow, tier: policy.TierNamespaced},
				{from: "y/a", to: "x/a", port: 81, want: deny, tier: policy.TierNamespaced, reason: policy.ReasonIsolated},
				{from: "y/a", to: "z/a", port: 81, want: allow, tier: policy.TierDefault},
				{from: "z/a", to: "x/a", port: 80, want: deny, tier: policy.TierAdmin},
			},
		},
		{
			name: "Pass goes to the baseline tier when no namespaced policy selects the pod",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: pass}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Pass}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: base}
spec: {tier: Baseline, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny, ports: [{port: 81}]}]}`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 81, want: deny, tier: policy.TierBaseline},
				{from: "x/a", to: "y/a", port: 80, want: allow, tier: policy.TierDefault},
			},
		},
		{
			name: "namespaced tier: a FirewallPolicy Deny beats any Allow of the tier",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all, namespace: x}
spec: {podSelector: {}, ingress: [{}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-again, namespace: x}
spec: {podSelector: {}, ingress: [{action: Allow}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: deny-udp, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{action: Deny, ports: [{protocol: UDP}]}]}`,
			checks: []check{
				{from: "y/a", to: "x/a", port: 80, proto: policy.ProtocolUDP, want: deny, tier: policy.TierNamespaced},
				{from: "y/a", to: "x/a", port: 80, want: allow},
				{from: "y/a", to: "x/b", port: 80, proto: policy.ProtocolUDP, want: allow},
			},
		},
		{
			name: "present but empty egress list isolates; an absent ingress list does not",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: no-egress, namespace: x}
spec: {podSelector: {}, egress: []}`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: deny, reason: policy.ReasonIsolated},
				{from: "y/a", to: "x/a", port: 80, want: allow, tier: policy.TierDefault},
			},
		},
		{
			name: "baseline tier only applies when no namespaced policy selects the pod for the direction",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: base-deny}
spec: {tier: Baseline, priority: 1, subject: {namespaceSelector: {}}, ingress: [{action: Deny}], egress: [{action: Deny}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: in-only, namespace: "y"}
spec: {podSelector: {}, ingress: [{action: Allow}]}`,
			checks: []check{
				{from: "z/a", to: "x/a", port: 80, want: deny, tier: policy.TierBaseline},
				{from: "y/a", to: "y/b", port: 80, want: deny, tier: policy.TierBaseline}, // y's egress: no namespaced policy
				{from: "x/a", to: "y/a", port: 80, want: deny},                            // x egress baseline
			},
		},
		{
			name: "default verdict decides when no tier does; node default deny",
			yaml: ``,
			opts: policy.Options{DefaultVerdict: policy.Deny},
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: deny, tier: policy.TierDefault, reason: policy.ReasonNotSelected},
				{from: "x/a", to: "x/a", port: 80, want: allow, reason: policy.ReasonSelf},
			},
		},
		{
			name: "default verdict is allow",
			yaml: ``,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: allow, tier: policy.TierDefault, reason: policy.ReasonNotSelected},
				{from: "x/a", to: "192.0.2.10", port: 80, want: allow},
			},
		},
		{
			name: "omitted namespaceSelector in a pods peer means the policy's own namespace for FirewallPolicy",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: from-b, namespace: x}
spec: {podSelector: {}, ingress: [{action: Allow, from: [{pods: {podSelector: {matchLabels: {pod: b}}}}]}]}`,
			checks: []check{
				{from: "x/b", to: "x/a", port: 80, want: allow},
				{from: "y/b", to: "x/a", port: 80, want: deny},
			},
		},
		{
			name: "omitted namespaceSelector in a pods peer means every namespace for ClusterFirewallPolicy",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-b}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {matchLabels: {ns: x}}}, ingress: [{action: Deny, from: [{pods: {podSelector: {matchLabels: {pod: b}}}}]}]}`,
			checks: []check{
				{from: "x/b", to: "x/a", port: 80, want: deny},
				{from: "z/b", to: "x/a", port: 80, want: deny},
				{from: "z/a", to: "x/a", port: 80, want: allow},
				{from: "z/b", to: "y/a", port: 80, want: allow},
			},
		},
		{
			name: "pods peer with both selectors needs both to match",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: both, namespace: x}
spec: {podSelector: {}, ingress: [{action: Allow, from: [{pods: {podSelector: {matchLabels: {pod: b}}, namespaceSelector: {matchLabels: {ns: z}}}}]}]}`,
			checks: []check{
				{from: "z/b", to: "x/a", port: 80, want: allow},
				{from: "z/a", to: "x/a", port: 80, want: deny},
				{from: "y/b", to: "x/a", port: 80, want: deny},
			},
		},
		{
			name: "rule with no peers matches every peer including non-workloads; rule with no ports matches every port and protocol",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: any, namespace: x}
spec: {podSelector: {}, egress: [{action: Allow}]}`,
			checks: []check{
				{from: "x/a", to: "192.0.2.10", port: 443, want: allow},
				{from: "x/a", to: "z/c", port: 9, proto: policy.ProtocolSCTP, want: allow},
			},
		},
		{
			name: "protocol defaults to TCP",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: p80, namespace: x}
spec: {podSelector: {}, ingress: [{action: Allow, ports: [{port: 80}]}]}`,
			checks: []check{
				{from: "y/a", to: "x/a", port: 80, want: allow},
				{from: "y/a", to: "x/a", port: 80, proto: policy.ProtocolUDP, want: deny},
				{from: "y/a", to: "x/a", port: 80, proto: policy.ProtocolSCTP, want: deny},
			},
		},
		{
			name: "named ports resolve on the destination workload for the rule's protocol",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: named, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, egress: [{action: Allow, ports: [{port: serve-81-udp, protocol: UDP}]}]}`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 81, proto: policy.ProtocolUDP, want: allow},
				{from: "x/a", to: "y/a", port: 80, proto: policy.ProtocolUDP, want: deny},
				{from: "x/a", to: "y/a", port: 81, want: deny},
				{from: "x/a", to: "192.0.2.10", port: 81, proto: policy.ProtocolUDP, want: deny}, // not a workload: no named ports
			},
		},
		{
			name: "CIDR peer with except does not match the excepted addresses",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: cidr, namespace: x}
spec: {podSelector: {}, egress: [{action: Allow, to: [{cidr: 10.244.0.0/16, except: [10.244.2.0/24, 10.244.3.3/32]}]}]}`,
			checks: []check{
				{from: "x/a", to: "z/a", port: 80, want: allow},
				{from: "x/a", to: "z/c", port: 80, want: deny},
				{from: "x/a", to: "y/b", port: 80, want: deny},
				{from: "x/a", to: "192.0.2.10", port: 80, want: deny},
			},
		},
		{
			name: "FQDN peers only match addresses the workload itself resolved a matching name to",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: fqdn, namespace: x}
spec: {podSelector: {}, egress: [{action: Allow, to: [{fqdn: {matchPattern: "*.example.com"}}]}]}`,
			lookups: []scenarios.Lookup{
				{Workload: "x/a", Name: "api.example.com", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.10")}},
				{Workload: "x/a", Name: "example.com", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.11")}},
				{Workload: "x/a", Name: "a.b.example.com", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.12")}},
			},
			checks: []check{
				{from: "x/a", to: "192.0.2.10", port: 443, want: allow},
				{from: "x/b", to: "192.0.2.10", port: 443, want: deny}, // x/b never resolved it
				{from: "x/a", to: "192.0.2.11", port: 443, want: deny}, // example.com does not match *.example.com
				{from: "x/a", to: "192.0.2.12", port: 443, want: deny}, // * is one label
				{from: "x/a", to: "192.0.2.13", port: 443, want: deny},
			},
		},
		{
			name: "a workload always reaches itself",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}`,
			checks: []check{
				{from: "x/a", to: "x/a", port: 80, want: allow, reason: policy.ReasonSelf},
				{from: "x/a", to: "x/b", port: 80, want: deny},
			},
		},
		{
			name: "Audit mode reports what it would have done without changing the verdict",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: staged}
spec: {tier: Admin, priority: 1, mode: Audit, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{namespaces: {matchLabels: {ns: z}}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: staged-isolation, namespace: "y"}
spec: {podSelector: {}, mode: Audit, ingress: []}`,
			checks: []check{
				{from: "x/a", to: "z/a", port: 80, want: allow, audit: deny, dir: policy.Egress},
				{from: "x/a", to: "y/a", port: 80, want: allow, audit: deny, dir: policy.Ingress},
				{from: "x/a", to: "x/b", port: 80, want: allow},
			},
		},
		{
			name: "NetworkPolicy without policyTypes isolates ingress only, plus egress when it has egress rules",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in-only, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: with-egress, namespace: "y"}
spec: {podSelector: {matchLabels: {pod: a}}, egress: [{ports: [{port: 80}]}]}`,
			checks: []check{
				{from: "z/a", to: "x/a", port: 80, want: deny},
				{from: "x/a", to: "z/a", port: 81, want: allow},
				{from: "y/a", to: "z/a", port: 81, want: deny},
				{from: "y/a", to: "z/a", port: 80, want: allow},
				{from: "z/a", to: "y/a", port: 81, want: deny}, // Ingress is implied too
			},
		},
		{
			name: "NetworkPolicy policyTypes Egress only leaves ingress alone even with ingress rules",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-only, namespace: x}
spec: {podSelector: {}, policyTypes: [Egress], ingress: [{from: [{podSelector: {matchLabels: {pod: c}}}]}]}`,
			checks: []check{
				{from: "y/a", to: "x/a", port: 80, want: allow},
				{from: "x/a", to: "y/a", port: 80, want: deny},
			},
		},
		{
			name: "NetworkPolicy: empty from allows everything, missing ports allows every port; empty ingress list allows nothing",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: empty-from, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: []}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: no-rules, namespace: x}
spec: {podSelector: {matchLabels: {pod: b}}, ingress: []}`,
			checks: []check{
				{from: "z/c", to: "x/a", port: 81, proto: policy.ProtocolSCTP, want: allow},
				{from: "192.0.2.10", to: "x/a", port: 1, want: allow},
				{from: "z/c", to: "x/b", port: 80, want: deny},
			},
		},
		{
			name: "NetworkPolicy: both selectors in one peer is AND, two peers is OR",
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec: {podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: x}
spec: {podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}, {podSelector: {matchLabels: {pod: b}}}]}]}`,
			checks: []check{
				{from: "z/b", to: "x/a", port: 80, want: allow},
				{from: "z/a", to: "x/a", port: 80, want: deny},
				{from: "y/b", to: "x/a", port: 80, want: deny},
				{from: "z/a", to: "x/b", port: 80, want: allow},
				{from: "x/b", to: "x/b", port: 80, want: allow},
				{from: "x/c", to: "x/b", port: 80, want: deny},
				{from: "y/b", to: "x/b", port: 80, want: deny}, // podSelector alone: own namespace
			},
		},
		{
			name:    "NetworkPolicy ipBlock except, in both families",
			family6: true,
			yaml: `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: ipblock, namespace: x}
spec: {podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: "fd00:244::/64", except: ["fd00:244::3:0/112"]}}]}]}`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: allow},
				{from: "x/a", to: "z/a", port: 80, want: deny},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := loadEngine(t, c.yaml, c.opts, c.lookups)
			runChecks(t, e, c.checks, c.family6)
		})
	}
}

// TestDecideLookup covers the lookup rules of docs/design.md §3.
func TestDecideLookup(t *testing.T) {
	const fqdnPolicies = `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-mining}
spec:
  tier: Admin
  priority: 10
  subject: {namespaceSelector: {}}
  egress:
  - action: Deny
    to: [{fqdn: {matchPattern: "*.minepool.com"}}, {fqdn: {matchPattern: "xmr-*.com"}}]
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: enforce, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  lookups: Enforce
  egress:
  - action: Allow
    to: [{fqdn: {matchName: api.github.com}}, {fqdn: {matchPattern: "**.s3.amazonaws.com"}}]
  - action: Deny
    to: [{fqdn: {matchName: evil.s3.amazonaws.com}}]
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: observe, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  egress:
  - action: Allow
    to: [{fqdn: {matchName: api.github.com}}]
`
	cases := []semanticsCase{
		{
			name: "Enforce: names no Allow FQDN rule matches are blocked for restricted workloads",
			yaml: fqdnPolicies,
			checks: []check{
				{from: "x/a", name: "api.github.com", want: allow, tier: policy.TierNamespaced, reason: policy.ReasonRule},
				{from: "x/a", name: "API.GitHub.com.", want: allow},
				{from: "x/a", name: "example.com", want: deny, reason: policy.ReasonLookupsEnf},
				{from: "x/a", name: "a.b.s3.amazonaws.com", want: allow},
				{from: "x/a", name: "s3.amazonaws.com", want: deny, reason: policy.ReasonLookupsEnf},
			},
		},
		{
			name: "Observe (default): unmatched names resolve; the connection is governed at L3",
			yaml: fqdnPolicies,
			checks: []check{
				{from: "x/b", name: "example.com", want: allow, reason: policy.ReasonNoFQDNRule},
				{from: "y/a", name: "example.com", want: allow, tier: policy.TierDefault},
			},
		},
		{
			name: "node-wide Lookups Enforce applies to every restricted workload",
			yaml: fqdnPolicies,
			opts: policy.Options{Lookups: policy.LookupsEnforce},
			checks: []check{
				{from: "x/b", name: "example.com", want: deny, reason: policy.ReasonLookupsEnf},
				{from: "y/a", name: "example.com", want: allow}, // egress not restricted
			},
		},
		{
			name: "a Deny FQDN rule that matches first blocks the lookup",
			yaml: fqdnPolicies,
			checks: []check{
				{from: "y/a", name: "eu.minepool.com", want: deny, tier: policy.TierAdmin, reason: policy.ReasonRule},
				{from: "x/a", name: "xmr-pool.com", want: deny, tier: policy.TierAdmin},
				{from: "x/a", name: "evil.s3.amazonaws.com", want: deny, tier: policy.TierNamespaced, reason: policy.ReasonRule}, // deny beats allow in the tier
			},
		},
		{
			name: "wildcards through the engine: * is one label, **. one or more, case-insensitive, trailing dot ignored",
			yaml: fqdnPolicies,
			checks: []check{
				{from: "y/a", name: "minepool.com", want: allow},
				{from: "y/a", name: "a.b.minepool.com", want: allow},
				{from: "y/a", name: "EU.MinePool.Com.", want: deny},
				{from: "y/a", name: "xmr-.com", want: deny},
				{from: "y/a", name: "a.xmr-eu.com", want: allow},
				{from: "y/a", name: "xmr.com", want: allow},
			},
		},
		{
			name: "names in the cluster domain and search domains are never blocked by FQDN rules",
			yaml: fqdnPolicies + `---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-everything}
spec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{fqdn: {matchPattern: "*"}}]}]}`,
			opts: policy.Options{SearchDomains: []string{"corp.internal"}},
			checks: []check{
				{from: "x/a", name: "kubernetes.default.svc.cluster.local", want: allow, reason: policy.ReasonClusterDomain},
				{from: "x/a", name: "cluster.local.", want: allow, reason: policy.ReasonClusterDomain},
				{from: "x/a", name: "db.corp.internal", want: allow, reason: policy.ReasonClusterDomain},
				{from: "x/a", name: "notcluster.local", want: deny},
				{from: "x/a", name: "api.github.com", want: deny, tier: policy.TierAdmin},
			},
		},
		{
			name: "Audit mode reports would-block lookups without blocking",
			yaml: `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: staged}
spec: {tier: Admin, priority: 1, mode: Audit, subject: {namespaceSelector: {}}, egress: [{action: Deny, to: [{fqdn: {matchPattern: "**.tracker.example"}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: staged-enforce, namespace: "y"}
spec: {podSelector: {}, mode: Audit, lookups: Enforce, egress: [{action: Allow, to: [{fqdn: {matchName: ok.example}}]}]}`,
			checks: []check{
				{from: "x/a", name: "a.tracker.example", want: allow, audit: deny},
				{from: "y/a", name: "other.example", want: allow, audit: deny},
				{from: "y/a", name: "ok.example", want: allow},
			},
		},
		{
			name: "invalid names and unknown workloads",
			yaml: fqdnPolicies,
			checks: []check{
				{from: "x/a", name: "a..b", want: deny, reason: policy.ReasonInvalidName},
				{from: "q/q", name: "eu.minepool.com", want: allow, reason: policy.ReasonNotWorkload},
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			runChecks(t, loadEngine(t, c.yaml, c.opts, c.lookups), c.checks, false)
		})
	}
}

// TestFQDNRulesNameTheKernelSets checks which rules' sets a resolver fills.
func TestFQDNRulesNameTheKernelSets(t *testing.T) {
	e := loadEngine(t, `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: f, namespace: x}
spec: {podSelector: {}, egress: [{name: gh, action: Allow, to: [{fqdn: {matchName: api.github.com}}]}, {action: Allow, to: [{fqdn: {matchPattern: "*.github.com"}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: audit, namespace: x}
spec: {podSelector: {}, mode: Audit, egress: [{action: Allow, to: [{fqdn: {matchPattern: "*"}}]}]}`, policy.Options{}, nil)
	got := e.FQDNRules(policy.WorkloadKey{Namespace: "x", Name: "a"}, "API.github.com.")
	if len(got) != 2 || got[0].String() != "FirewallPolicy/x/f#egress[1]" || got[1].String() != "FirewallPolicy/x/f#gh" {
		t.Errorf("FQDNRules: %v", got)
	}
	if got := e.FQDNRules(policy.WorkloadKey{Namespace: "y", Name: "a"}, "api.github.com"); len(got) != 0 {
		t.Errorf("unselected workload: %v", got)
	}
}

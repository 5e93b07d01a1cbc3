package scenarios

import (
	"net/netip"

	"github.com/egressd/egressd/policy"
)

// Project returns the scenarios of egressd's own semantics (docs/design.md §3):
// ClusterFirewallPolicy tiers, Deny and Pass, priorities, Audit mode, CIDRs with
// except, FQDN peers with recorded lookups, FirewallPolicy isolation.
func Project() []Scenario {
	ya, yb := PodIPv4("y", "a"), PodIPv4("y", "b")
	ext := DefaultExternal
	return []Scenario{
		{
			Name: "admin-deny-beats-namespaced-allow",
			Policies: []string{
				netpol("x", "allow-all", `
					podSelector: {}
					ingress:
					- {}`),
				cluster("deny-y-to-x", `
					tier: Admin
					priority: 10
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					ingress:
					- action: Deny
					  from:
					  - namespaces: {matchLabels: {ns: "y"}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "admin-allow-beats-namespaced-isolation",
			Policies: []string{
				netpol("x", "default-deny", `
					podSelector: {}
					policyTypes: [Ingress]`),
				cluster("allow-z-to-x", `
					tier: Admin
					priority: 10
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					ingress:
					- action: Allow
					  from:
					  - namespaces: {matchLabels: {ns: z}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   .   .   .
				x/b X   .   X   .   .   .   .   .   .
				x/c X   X   .   .   .   .   .   .   .
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "admin-pass-hands-over-to-namespaced-tier",
			Policies: []string{
				cluster("pass-y", `
					tier: Admin
					priority: 10
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					ingress:
					- action: Pass
					  from:
					  - namespaces: {matchLabels: {ns: "y"}}`),
				cluster("deny-all-to-x", `
					tier: Admin
					priority: 20
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					ingress:
					- action: Deny`),
				netpol("x", "allow-y-80", `
					podSelector: {}
					ingress:
					- from:
					  - namespaceSelector: {matchLabels: {ns: "y"}}
					  ports:
					  - port: 80`),
			},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   .   .   .
				x/b X   .   X   .   .   .   .   .   .
				x/c X   X   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   .   .   .
				x/b X   .   X   .   .   .   .   .   .
				x/c X   X   .   .   .   .   .   .   .
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   .   .   .
				x/b X   .   X   .   .   .   .   .   .
				x/c X   X   .   .   .   .   .   .   .
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   .   .   .
				x/b X   .   X   .   .   .   .   .   .
				x/c X   X   .   .   .   .   .   .   .
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
			},
		},
		{
			Name: "admin-pass-then-baseline",
			Policies: []string{
				cluster("pass-from-x", `
					tier: Admin
					priority: 1
					subject: {namespaceSelector: {}}
					ingress:
					- action: Pass
					  from:
					  - namespaces: {matchLabels: {ns: x}}`),
				cluster("deny-all-baseline", `
					tier: Baseline
					priority: 1
					subject: {namespaceSelector: {}}
					ingress:
					- action: Deny
					  from:
					  - namespaces: {matchLabels: {ns: x}}`),
				netpol("z", "allow-all", `
					podSelector: {}
					ingress:
					- {}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   .   .   .
				x/b X   .   X   X   X   X   .   .   .
				x/c X   X   .   X   X   X   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "admin-priority-order-first-match",
			Policies: []string{
				cluster("allow-y-a", `
					tier: Admin
					priority: 1
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					ingress:
					- action: Allow
					  from:
					  - pods:
					      namespaceSelector: {matchLabels: {ns: "y"}}
					      podSelector: {matchLabels: {pod: a}}`),
				cluster("deny-y", `
					tier: Admin
					priority: 2
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					ingress:
					- action: Deny
					  from:
					  - namespaces: {matchLabels: {ns: "y"}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "admin-rule-order-first-match-in-policy",
			Policies: []string{
				cluster("ordered", `
					tier: Admin
					priority: 5
					subject: {namespaceSelector: {matchLabels: {ns: z}}}
					egress:
					- name: allow-80-to-x
					  action: Allow
					  to:
					  - namespaces: {matchLabels: {ns: x}}
					  ports: [{port: 80, protocol: TCP}]
					- name: deny-x
					  action: Deny
					  to:
					  - namespaces: {matchLabels: {ns: x}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
			},
		},
		{
			Name: "admin-equal-priority-deny-beats-allow",
			Policies: []string{
				cluster("a-allow-y", `
					tier: Admin
					priority: 5
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					ingress:
					- action: Allow
					  from:
					  - namespaces: {matchLabels: {ns: "y"}}`),
				cluster("b-deny-y", `
					tier: Admin
					priority: 5
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					ingress:
					- action: Deny
					  from:
					  - namespaces: {matchLabels: {ns: "y"}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "baseline-only-without-namespaced-policy",
			Policies: []string{
				cluster("baseline-deny-all", `
					tier: Baseline
					priority: 100
					subject: {namespaceSelector: {}}
					ingress:
					- action: Deny`),
				netpol("y", "allow-all", `
					podSelector: {}
					ingress:
					- {}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   X   X   X
				x/b X   .   X   .   .   .   X   X   X
				x/c X   X   .   .   .   .   X   X   X
				y/a X   X   X   .   .   .   X   X   X
				y/b X   X   X   .   .   .   X   X   X
				y/c X   X   X   .   .   .   X   X   X
				z/a X   X   X   .   .   .   .   X   X
				z/b X   X   X   .   .   .   X   .   X
				z/c X   X   X   .   .   .   X   X   .`},
			},
		},
		{
			Name: "baseline-first-match-and-egress-namespaced-isolation",
			Policies: []string{
				cluster("baseline-allow-same-ns", `
					tier: Baseline
					priority: 1
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					egress:
					- action: Allow
					  to:
					  - namespaces: {matchLabels: {ns: x}}`),
				cluster("baseline-deny-egress", `
					tier: Baseline
					priority: 2
					subject: {namespaceSelector: {matchLabels: {ns: x}}}
					egress:
					- action: Deny`),
				firewall("x", "c-may-reach-z", `
					podSelector: {matchLabels: {pod: c}}
					egress:
					- action: Allow
					  to:
					  - namespaces: {matchLabels: {ns: z}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   X   X   X   X   X   X
				x/b .   .   .   X   X   X   X   X   X
				x/c X   X   .   X   X   X   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "firewall-deny-beats-allow-in-namespaced-tier",
			Policies: []string{
				firewall("x", "allow-all-in", `
					podSelector: {}
					ingress:
					- action: Allow`),
				firewall("x", "deny-b-pods", `
					podSelector: {}
					ingress:
					- action: Deny
					  from:
					  - pods: {podSelector: {matchLabels: {pod: b}}, namespaceSelector: {}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   X   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "firewall-deny-beats-networkpolicy-allow",
			Policies: []string{
				netpol("y", "allow-all", `
					podSelector: {}
					ingress:
					- {}`),
				firewall("y", "deny-udp-from-z", `
					podSelector: {matchLabels: {pod: c}}
					ingress:
					- action: Deny
					  from:
					  - namespaces: {matchLabels: {ns: z}}
					  ports: [{protocol: UDP}]`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   X   .   .   .
				z/b .   .   .   .   .   X   .   .   .
				z/c .   .   .   .   .   X   .   .   .`},
			},
		},
		{
			Name: "firewall-pods-peer-defaults-to-own-namespace",
			Policies: []string{
				firewall("x", "from-b", `
					podSelector: {}
					ingress:
					- action: Allow
					  from:
					  - pods: {podSelector: {matchLabels: {pod: b}}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c X   X   .   .   .   .   .   .   .
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
			},
		},
		{
			Name: "cluster-pods-peer-defaults-to-every-namespace",
			Policies: []string{
				cluster("deny-b-to-x-a", `
					tier: Admin
					priority: 3
					subject:
					  namespaceSelector: {matchLabels: {ns: x}}
					  podSelector: {matchLabels: {pod: a}}
					ingress:
					- action: Deny
					  from:
					  - pods: {podSelector: {matchLabels: {pod: b}}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "firewall-empty-egress-isolates-absent-ingress-does-not",
			Policies: []string{
				firewall("x", "no-egress", `
					podSelector: {}
					egress: []`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b X   .   X   X   X   X   X   X   X
				x/c X   X   .   X   X   X   X   X   X
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "firewall-rule-without-peers-matches-all-ports-listed",
			Policies: []string{
				firewall("z", "only-81", `
					podSelector: {matchLabels: {pod: a}}
					ingress:
					- action: Allow
					  ports: [{port: 81}, {port: 80, protocol: SCTP}]`),
			},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   X   .   .
				x/b .   .   .   .   .   .   X   .   .
				x/c .   .   .   .   .   .   X   .   .
				y/a .   .   .   .   .   .   X   .   .
				y/b .   .   .   .   .   .   X   .   .
				y/c .   .   .   .   .   .   X   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   X   .   .
				z/c .   .   .   .   .   .   X   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   X   .   .
				x/b .   .   .   .   .   .   X   .   .
				x/c .   .   .   .   .   .   X   .   .
				y/a .   .   .   .   .   .   X   .   .
				y/b .   .   .   .   .   .   X   .   .
				y/c .   .   .   .   .   .   X   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   X   .   .
				z/c .   .   .   .   .   .   X   .   .`},
				{Ports: ports(81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   X   .   .
				x/b .   .   .   .   .   .   X   .   .
				x/c .   .   .   .   .   .   X   .   .
				y/a .   .   .   .   .   .   X   .   .
				y/b .   .   .   .   .   .   X   .   .
				y/c .   .   .   .   .   .   X   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   X   .   .
				z/c .   .   .   .   .   .   X   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "audit-mode-changes-no-verdict",
			Policies: []string{
				cluster("audit-deny-everything", `
					tier: Admin
					priority: 0
					mode: Audit
					subject: {namespaceSelector: {}}
					ingress:
					- action: Deny
					egress:
					- action: Deny`),
				firewall("y", "audit-isolate", `
					podSelector: {}
					mode: Audit
					ingress: []
					egress: []`),
				firewall("z", "enforced-deny-from-x", `
					podSelector: {}
					ingress:
					- action: Deny
					  from:
					  - namespaces: {matchLabels: {ns: x}}
					- action: Allow`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   X   X   X
				x/b .   .   .   .   .   .   X   X   X
				x/c .   .   .   .   .   .   X   X   X
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:      "cidr-with-except",
			Externals: []External{ext},
			Policies: []string{
				firewall("x", "pods-but-not-y", `
					podSelector: {}
					egress:
					- action: Allow
					  to:
					  - {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}
					  - {cidr: "fd00:244::/64", except: ["fd00:244::2:0/112"]}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c external
				x/a .   .   .   X   X   X   .   .   .   X
				x/b .   .   .   X   X   X   .   .   .   X
				x/c .   .   .   X   X   X   .   .   .   X
				y/a .   .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .   .
				external .   .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:      "cidr-deny-ipv4-only",
			Externals: []External{ext},
			Policies: []string{
				cluster("deny-external-v4", `
					tier: Admin
					priority: 1
					subject: {namespaceSelector: {}}
					egress:
					- action: Deny
					  to:
					  - {cidr: 192.0.2.0/24}
					  - {cidr: 10.244.3.0/24, except: [10.244.3.1/32]}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Families: []Family{IPv4}, Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c external
				x/a .   .   .   .   .   .   .   X   X   X
				x/b .   .   .   .   .   .   .   X   X   X
				x/c .   .   .   .   .   .   .   X   X   X
				y/a .   .   .   .   .   .   .   X   X   X
				y/b .   .   .   .   .   .   .   X   X   X
				y/c .   .   .   .   .   .   .   X   X   X
				z/a .   .   .   .   .   .   .   X   X   X
				z/b .   .   .   .   .   .   .   .   X   X
				z/c .   .   .   .   .   .   .   X   .   X
				external .   .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Families: []Family{IPv6}, Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c external
				x/a .   .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .   .
				external .   .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:      "fqdn-allow-recorded-lookups",
			Externals: []External{ext},
			Policies: []string{
				firewall("x", "fqdn-egress", `
					podSelector: {matchLabels: {pod: a}}
					egress:
					- action: Allow
					  to:
					  - fqdn: {matchPattern: "*.y.example.org"}
					  ports: [{port: 80, protocol: TCP}]
					- action: Allow
					  to:
					  - fqdn: {matchName: api.example.com}`),
			},
			Lookups: []Lookup{
				{Workload: "x/a", Name: "b.y.example.org", IPs: []netip.Addr{yb, PodIPv6("y", "b")}},
				{Workload: "x/a", Name: "a.b.y.example.org", IPs: []netip.Addr{ya, PodIPv6("y", "a")}},
				{Workload: "x/a", Name: "API.Example.com.", IPs: []netip.Addr{ext.IPv4, ext.IPv6}},
				{Workload: "x/b", Name: "c.y.example.org", IPs: []netip.Addr{PodIPv4("y", "c"), PodIPv6("y", "c")}},
			},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c external
				x/a .   X   X   X   .   X   X   X   X   .
				x/b .   .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .   .
				external .   .   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c external
				x/a .   X   X   X   X   X   X   X   X   .
				x/b .   .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .   .
				external .   .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c external
				x/a .   X   X   X   X   X   X   X   X   .
				x/b .   .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .   .
				external .   .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c external
				x/a .   X   X   X   X   X   X   X   X   .
				x/b .   .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .   .
				external .   .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name: "fqdn-admin-deny-only-for-workload-that-resolved",
			Policies: []string{
				cluster("deny-blocked", `
					tier: Admin
					priority: 1
					subject: {namespaceSelector: {}}
					egress:
					- action: Deny
					  to:
					  - fqdn: {matchPattern: "**.blocked.example"}`),
			},
			Lookups: []Lookup{
				{Workload: "x/b", Name: "c.z.blocked.example", IPs: []netip.Addr{PodIPv4("z", "c"), PodIPv6("z", "c")}},
				{Workload: "y/a", Name: "blocked.example", IPs: []netip.Addr{PodIPv4("z", "a"), PodIPv6("z", "a")}},
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   X
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:    "node-default-deny-with-admin-allow",
			Options: policy.Options{DefaultVerdict: policy.Deny},
			Policies: []string{
				cluster("allow-within-namespace", `
					tier: Admin
					priority: 1
					subject: {namespaceSelector: {}}
					egress:
					- action: Allow
					ingress:
					- action: Allow
					  from:
					  - namespaces: {matchLabels: {ns: "y"}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b X   .   X   X   X   X   X   X   X
				x/c X   X   .   X   X   X   X   X   X
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   X   X   X   X   X   .   X   X
				z/b X   X   X   X   X   X   X   .   X
				z/c X   X   X   X   X   X   X   X   .`},
			},
		},
		{
			Name: "endport-and-protocols-in-cluster-policy",
			Policies: []string{
				cluster("deny-81-udp-sctp-from-z", `
					tier: Admin
					priority: 7
					subject: {namespaceSelector: {matchLabels: {ns: z}}}
					egress:
					- action: Deny
					  ports:
					  - {port: 81, endPort: 81, protocol: UDP}
					  - {port: 60, endPort: 100, protocol: SCTP}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   X   X   X   X   X   .   X   X
				z/b X   X   X   X   X   X   X   .   X
				z/c X   X   X   X   X   X   X   X   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   X   X   X   X   X   .   X   X
				z/b X   X   X   X   X   X   X   .   X
				z/c X   X   X   X   X   X   X   X   .`},
			},
		},
		{
			Name: "named-port-resolved-on-destination",
			Policies: []string{
				firewall("y", "egress-named", `
					podSelector: {matchLabels: {pod: a}}
					egress:
					- action: Allow
					  ports: [{port: serve-81-sctp, protocol: SCTP}, {port: serve-80-udp, protocol: UDP}]`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a X   X   X   .   X   X   X   X   X
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a X   X   X   .   X   X   X   X   X
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a X   X   X   .   X   X   X   X   X
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
	}
}

// All returns every scenario: Upstream, Project, then ClusterNetwork.
func All() []Scenario {
	return append(append(Upstream(), Project()...), ClusterNetwork()...)
}

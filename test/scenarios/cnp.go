package scenarios

import "github.com/egressd/egressd/policy"

// cnp returns a policy.networking.k8s.io ClusterNetworkPolicy document.
func cnp(name, spec string) string {
	return "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: " + name + "}\nspec:\n" + indent(spec)
}

// ClusterNetwork returns the ClusterNetworkPolicy scenarios
// (sigs.k8s.io/network-policy-api v0.3.0): the clauses of its conformance
// suite (conformance/base and conformance/tests: rule order, Pass into
// NetworkPolicy, Baseline below NetworkPolicy, ports) on the x/y/z model.
func ClusterNetwork() []Scenario {
	return []Scenario{
		{
			// conformance/base/admin_tier/standard-egress-tcp-rules.yaml:
			// the first rule that matches decides; a port-specific Deny
			// leaves the other ports alone.
			Name: "cnp-admin-egress-rule-order",
			Policies: []string{cnp("egress-tcp", `
				tier: Admin
				priority: 6
				subject: {namespaces: {matchLabels: {kubernetes.io/metadata.name: x}}}
				egress:
				- {name: allow-to-y, action: Accept, to: [{namespaces: {matchLabels: {ns: "y"}}}]}
				- {name: deny-to-y, action: Deny, to: [{namespaces: {matchLabels: {ns: "y"}}}]}
				- name: deny-to-z-at-tcp-80
				  action: Deny
				  to: [{namespaces: {matchLabels: {ns: z}}}]
				  protocols: [{tcp: {destinationPort: {number: 80}}}]`)},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
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
				{Ports: ports(80), Protocols: protos(UDP, SCTP), Table: allAllowed},
				{Ports: ports(81), Protocols: protos(TCP, UDP, SCTP), Table: allAllowed},
			},
		},
		{
			// conformance/base/api_integration/standard-anp-np-banp.yaml,
			// "pass-egress ... respect the match for network policy": Pass
			// skips the rest of the Admin tier and the NetworkPolicy of the
			// pod decides; pods no NetworkPolicy selects fall through to the
			// Baseline tier, then to the default.
			Name: "cnp-admin-pass-then-networkpolicy",
			Policies: []string{
				cnp("pass-example", `
					tier: Admin
					priority: 10
					subject: {namespaces: {matchLabels: {ns: x}}}
					egress:
					- {name: pass-to-y, action: Pass, to: [{namespaces: {matchLabels: {ns: "y"}}}]}
					- {name: deny-to-z, action: Deny, to: [{namespaces: {matchLabels: {ns: z}}}]}
					- {name: deny-y-c-below-pass, action: Deny, to: [{pods: {namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: c}}}}]}`),
				netpol("x", "a-to-y-b-only", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Egress]
					egress:
					- to:
					  - namespaceSelector: {matchLabels: {ns: "y"}}
					    podSelector: {matchLabels: {pod: b}}`),
				cnp("default", `
					tier: Baseline
					priority: 10
					subject: {namespaces: {matchLabels: {ns: x}}}
					egress:
					- {name: deny-to-y-a, action: Deny, to: [{pods: {namespaceSelector: {matchLabels: {ns: "y"}}, podSelector: {matchLabels: {pod: a}}}}]}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   .   X   X   X   X
				x/b .   .   .   X   .   .   X   X   X
				x/c .   .   .   X   .   .   X   X   X
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			// A Baseline Deny sits below NetworkPolicy: a pod selected by a
			// NetworkPolicy is decided by it (allowed from x), every other pod
			// by the Baseline tier.
			Name: "cnp-baseline-deny-below-networkpolicy",
			Policies: []string{
				cnp("baseline-deny-ingress", `
					tier: Baseline
					priority: 50
					subject: {namespaces: {}}
					ingress:
					- {name: deny-all, action: Deny, from: [{namespaces: {}}]}`),
				netpol("y", "allow-x-to-a", `
					podSelector: {matchLabels: {pod: a}}
					ingress:
					- from: [{namespaceSelector: {matchLabels: {ns: x}}}]`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   X   X   X   X   X
				x/b X   .   X   .   X   X   X   X   X
				x/c X   X   .   .   X   X   X   X   X
				y/a X   X   X   .   X   X   X   X   X
				y/b X   X   X   X   .   X   X   X   X
				y/c X   X   X   X   X   .   X   X   X
				z/a X   X   X   X   X   X   .   X   X
				z/b X   X   X   X   X   X   X   .   X
				z/c X   X   X   X   X   X   X   X   .`},
			},
		},
		{
			// conformance/base/*/standard-port-range-rules-combined.yaml and
			// the egress udp/sctp rules: a port range, a UDP port, and a
			// named port that resolves on the destination with the protocol
			// of its container port; Accept at a lower priority number wins.
			Name: "cnp-ports-ranges-named-and-priority",
			Policies: []string{
				cnp("deny-ports", `
					tier: Admin
					priority: 20
					subject: {namespaces: {matchLabels: {ns: "y"}}}
					ingress:
					- action: Deny
					  from: [{namespaces: {}}]
					  protocols:
					  - tcp: {destinationPort: {range: {start: 79, end: 80}}}
					  - udp: {destinationPort: {number: 81}}
					  - destinationNamedPort: serve-81-sctp`),
				cnp("accept-from-z-first", `
					tier: Admin
					priority: 19
					subject: {namespaces: {matchLabels: {ns: "y"}}}
					ingress:
					- {action: Accept, from: [{namespaces: {matchLabels: {ns: z}}}]}`),
			},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: denyToYExceptFromZ},
				{Ports: ports(81), Protocols: protos(UDP, SCTP), Table: denyToYExceptFromZ},
				{Ports: ports(81), Protocols: protos(TCP), Table: allAllowed},
				{Ports: ports(80), Protocols: protos(UDP, SCTP), Table: allAllowed},
			},
		},
		{
			// Pass in the Baseline tier skips the rest of the tier: the node
			// default decides (here default-deny), not the Accept below it.
			Name:    "cnp-baseline-pass-to-default-deny",
			Options: policy.Options{DefaultVerdict: policy.Deny},
			Policies: []string{cnp("baseline", `
				tier: Baseline
				priority: 1
				subject: {namespaces: {}}
				egress:
				- {name: pass-to-y, action: Pass, to: [{namespaces: {matchLabels: {ns: "y"}}}]}
				- {name: accept-all, action: Accept, to: [{namespaces: {}}]}
				ingress:
				- {name: accept-all, action: Accept, from: [{namespaces: {}}]}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   X   X   X   .   .   .
				x/b .   .   .   X   X   X   .   .   .
				x/c .   .   .   X   X   X   .   .   .
				y/a .   .   .   .   X   X   .   .   .
				y/b .   .   .   X   .   X   .   .   .
				y/c .   .   .   X   X   .   .   .   .
				z/a .   .   .   X   X   X   .   .   .
				z/b .   .   .   X   X   X   .   .   .
				z/c .   .   .   X   X   X   .   .   .`},
			},
		},
	}
}

const allAllowed = `
	-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
	x/a .   .   .   .   .   .   .   .   .
	x/b .   .   .   .   .   .   .   .   .
	x/c .   .   .   .   .   .   .   .   .
	y/a .   .   .   .   .   .   .   .   .
	y/b .   .   .   .   .   .   .   .   .
	y/c .   .   .   .   .   .   .   .   .
	z/a .   .   .   .   .   .   .   .   .
	z/b .   .   .   .   .   .   .   .   .
	z/c .   .   .   .   .   .   .   .   .`

const denyToYExceptFromZ = `
	-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
	x/a .   .   .   X   X   X   .   .   .
	x/b .   .   .   X   X   X   .   .   .
	x/c .   .   .   X   X   X   .   .   .
	y/a .   .   .   .   X   X   .   .   .
	y/b .   .   .   X   .   X   .   .   .
	y/c .   .   .   X   X   .   .   .   .
	z/a .   .   .   .   .   .   .   .   .
	z/b .   .   .   .   .   .   .   .   .
	z/c .   .   .   .   .   .   .   .   .`

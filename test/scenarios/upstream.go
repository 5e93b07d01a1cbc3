package scenarios

// Upstream returns the scenarios of the Kubernetes e2e NetworkPolicy suite
// (test/e2e/network/netpol/network_policy.go), over the full x/y/z × a/b/c model
// and every port and protocol. Tests that change labels or policies midway are
// reproduced in their final state. Where upstream uses a pod's single address
// (ipBlock tests), both families' addresses are listed.
func Upstream() []Scenario {
	return []Scenario{
		{
			Name:     "default-deny-ingress",
			Upstream: "should support a 'default-deny-ingress' policy",
			Policies: []string{netpol("x", "deny-ingress", `
				podSelector: {}
				policyTypes: [Ingress]`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
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
			Name:     "default-deny-all",
			Upstream: "should support a 'default-deny-all' policy",
			Policies: []string{netpol("x", "deny-all", `
				podSelector: {}
				policyTypes: [Ingress, Egress]`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b X   .   X   X   X   X   X   X   X
				x/c X   X   .   X   X   X   X   X   X
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "allow-from-same-namespace-pod-selector",
			Upstream: "should enforce policy to allow traffic from pods within server namespace based on PodSelector",
			Policies: []string{netpol("x", "x-a-allows-x-b", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - podSelector: {matchLabels: {pod: b}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "allow-ingress-for-a-target",
			Upstream: "should enforce policy to allow ingress traffic for a target",
			Policies: []string{
				netpol("x", "deny-all", `
					podSelector: {}
					policyTypes: [Ingress]`),
				netpol("x", "allow-all-to-a", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Ingress]
					ingress:
					- from:
					  - {podSelector: {}, namespaceSelector: {}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   .   .   .
				x/b .   .   X   .   .   .   .   .   .
				x/c .   X   .   .   .   .   .   .   .
				y/a .   X   X   .   .   .   .   .   .
				y/b .   X   X   .   .   .   .   .   .
				y/c .   X   X   .   .   .   .   .   .
				z/a .   X   X   .   .   .   .   .   .
				z/b .   X   X   .   .   .   .   .   .
				z/c .   X   X   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "allow-from-all-namespaces",
			Upstream: "should enforce policy to allow ingress traffic from pods in all namespaces",
			Policies: []string{netpol("x", "allow-from-another-ns", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
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
			Name:     "allow-from-other-namespace-ns-selector",
			Upstream: "should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector",
			Policies: []string{netpol("x", "allow-client-a-via-ns-selector", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {ns: "y"}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "pod-selector-match-expressions",
			Upstream: "should enforce policy based on PodSelector with MatchExpressions",
			Policies: []string{netpol("x", "x-a-allows-x-b", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - podSelector:
				      matchExpressions: [{key: pod, operator: In, values: [b]}]`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "namespace-selector-match-expressions",
			Upstream: "should enforce policy based on NamespaceSelector with MatchExpressions",
			Policies: []string{netpol("x", "allow-ns-y-match-selector", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector:
				      matchExpressions: [{key: ns, operator: In, values: ["y"]}]`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "pod-selector-or-namespace-selector",
			Upstream: "should enforce policy based on PodSelector or NamespaceSelector",
			Policies: []string{netpol("x", "allow-ns-y-match-selector", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector:
				      matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
				  - podSelector: {matchLabels: {pod: b}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "pod-selector-and-namespace-selector",
			Upstream: "should enforce policy based on PodSelector and NamespaceSelector",
			Policies: []string{netpol("x", "allow-ns-y-podselector-and-nsselector", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector:
				      matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
				    podSelector: {matchLabels: {pod: b}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "multiple-pod-selectors-and-namespace-selectors",
			Upstream: "should enforce policy based on Multiple PodSelectors and NamespaceSelectors",
			Policies: []string{netpol("x", "allow-ns-y-z-pod-b-c", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector:
				      matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
				    podSelector:
				      matchExpressions: [{key: pod, operator: In, values: [b, c]}]`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "any-pod-selectors",
			Upstream: "should enforce policy based on any PodSelectors",
			Policies: []string{netpol("x", "allow-ns-x-pod-b-c", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - podSelector: {matchLabels: {pod: b}}
				  - podSelector: {matchLabels: {pod: c}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "allow-from-pod-in-other-namespace",
			Upstream: "should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
			Policies: []string{netpol("x", "allow-ns-y-pod-a-via-namespace-pod-selector", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {ns: "y"}}
				    podSelector: {matchLabels: {pod: a}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "ports",
			Upstream: "should enforce policy based on Ports",
			Policies: []string{netpol("x", "allow-client-a-via-ns-selector", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {ns: "y"}}
				  ports:
				  - {port: 81, protocol: TCP}`)},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "stacked-policies-overlapping-pod-selectors",
			Upstream: "should enforce multiple, stacked policies with overlapping podSelectors",
			Policies: []string{
				netpol("x", "allow-client-a-via-ns-selector", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Ingress]
					ingress:
					- from:
					  - namespaceSelector: {matchLabels: {ns: "y"}}
					  ports:
					  - {port: 81, protocol: TCP}`),
				netpol("x", "allow-client-a-via-ns-selector-80", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Ingress]
					ingress:
					- from:
					  - namespaceSelector: {matchLabels: {ns: "y"}}
					  ports:
					  - {port: 80, protocol: TCP}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "allow-all",
			Upstream: "should support allow-all policy",
			Policies: []string{netpol("x", "allow-all", `
				podSelector: {}
				policyTypes: [Ingress]
				ingress:
				- {}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
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
			Name:     "ingress-one-named-port",
			Upstream: "should allow ingress access on one named port",
			Policies: []string{netpol("x", "allow-all", `
				podSelector: {}
				policyTypes: [Ingress]
				ingress:
				- ports:
				  - port: serve-81-tcp`)},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
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
			},
		},
		{
			Name:     "ingress-from-namespace-one-named-port",
			Upstream: "should allow ingress access from namespace on one named port",
			Policies: []string{netpol("x", "allow-client-a-via-ns-selector-80", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {ns: "y"}}
				  ports:
				  - {port: serve-80-tcp, protocol: TCP}`)},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "egress-one-named-port",
			Upstream: "should allow egress access on one named port",
			Policies: []string{netpol("x", "allow-egress", `
				podSelector: {}
				policyTypes: [Egress]
				egress:
				- ports:
				  - port: serve-80-tcp`)},
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
				x/a .   X   X   X   X   X   X   X   X
				x/b X   .   X   X   X   X   X   X   X
				x/c X   X   .   X   X   X   X   X   X
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
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
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
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
			Name:     "updated-policy-allow-all-to-deny-all",
			Upstream: "should enforce updated policy",
			Policies: []string{netpol("x", "allow-all-mutate-to-deny-all", `
				podSelector: {}
				policyTypes: [Ingress]
				ingress: []`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
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
			Name:     "deny-ingress-from-other-namespaces",
			Upstream: "should deny ingress from pods on other namespaces",
			Policies: []string{netpol("x", "deny-empty-policy", `
				podSelector: {}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - podSelector: {matchLabels: {}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c .   .   .   .   .   .   .   .   .
				y/a X   X   X   .   .   .   .   .   .
				y/b X   X   X   .   .   .   .   .   .
				y/c X   X   X   .   .   .   .   .   .
				z/a X   X   X   .   .   .   .   .   .
				z/b X   X   X   .   .   .   .   .   .
				z/c X   X   X   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "deny-egress-pod-selector",
			Upstream: "should deny egress from pods based on PodSelector",
			Policies: []string{netpol("x", "deny-egress-pod-a", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Egress]`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
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
			Name:     "deny-egress-namespace",
			Upstream: "should deny egress from all pods in a namespace",
			Policies: []string{netpol("x", "deny-egress-ns-x", `
				podSelector: {}
				policyTypes: [Egress]`)},
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
			Name:     "ingress-and-egress-together",
			Upstream: "should work with Ingress, Egress specified together",
			Policies: []string{netpol("x", "allow-client-a-via-pod-selector", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Egress, Ingress]
				ingress:
				- from:
				  - podSelector: {matchLabels: {pod: b}}
				egress:
				- ports:
				  - port: 80`)},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "deny-egress-client-side",
			Upstream: "should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)",
			Policies: []string{
				netpol("x", "allow-to-ns-y-pod-a", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Egress]
					egress:
					- to:
					  - namespaceSelector: {matchLabels: {ns: "y"}}
					    podSelector: {matchLabels: {pod: a}}`),
				netpol("y", "allow-from-xa-on-ya-match-selector", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Ingress]
					ingress:
					- from:
					  - namespaceSelector: {matchLabels: {ns: x}}
					    podSelector: {matchLabels: {pod: a}}`),
				netpol("y", "allow-from-xa-on-yb-match-selector", `
					podSelector: {matchLabels: {pod: b}}
					policyTypes: [Ingress]
					ingress:
					- from:
					  - namespaceSelector: {matchLabels: {ns: x}}
					    podSelector: {matchLabels: {pod: a}}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   X   X   X   X   X
				x/b .   .   .   X   X   .   .   .   .
				x/c .   .   .   X   X   .   .   .   .
				y/a .   .   .   .   X   .   .   .   .
				y/b .   .   .   X   .   .   .   .   .
				y/c .   .   .   X   X   .   .   .   .
				z/a .   .   .   X   X   .   .   .   .
				z/b .   .   .   X   X   .   .   .   .
				z/c .   .   .   X   X   .   .   .   .`},
			},
		},
		{
			Name:     "egress-to-pod-in-other-namespace",
			Upstream: "should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector",
			Policies: []string{netpol("x", "allow-to-ns-y-pod-a", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Egress]
				egress:
				- to:
				  - namespaceSelector: {matchLabels: {ns: "y"}}
				    podSelector: {matchLabels: {pod: a}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   X   X   X   X   X
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
			Name:     "ingress-any-port-one-protocol",
			Upstream: "should enforce ingress policy allowing any port traffic to a server on a specific protocol",
			Policies: []string{netpol("x", "allow-ingress-by-proto", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- ports:
				  - protocol: TCP`)},
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
				{Ports: ports(80, 81), Protocols: protos(UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "ingress-allow-all-takes-precedence",
			Upstream: "should enforce multiple ingress policies with ingress allow-all policy taking precedence",
			Policies: []string{
				netpol("x", "allow-ingress-port-80", `
					podSelector: {}
					policyTypes: [Ingress]
					ingress:
					- ports:
					  - port: 80`),
				netpol("x", "allow-ingress", `
					podSelector: {}
					policyTypes: [Ingress]
					ingress:
					- {}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
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
			Name:     "ingress-port-80-only",
			Upstream: "should enforce multiple ingress policies with ingress allow-all policy taking precedence (first step: port 80 only)",
			Policies: []string{netpol("x", "allow-ingress-port-80", `
				podSelector: {}
				policyTypes: [Ingress]
				ingress:
				- ports:
				  - port: 80`)},
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
			Name:     "egress-allow-all-takes-precedence",
			Upstream: "should enforce multiple egress policies with egress allow-all policy taking precedence",
			Policies: []string{
				netpol("x", "allow-egress-port-80", `
					podSelector: {}
					policyTypes: [Egress]
					egress:
					- ports:
					  - port: 80`),
				netpol("x", "allow-egress", `
					podSelector: {}
					policyTypes: [Egress]
					egress:
					- {}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
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
			Name:     "egress-to-cidr-block",
			Upstream: "should allow egress access to server in CIDR block",
			Policies: []string{netpol("x", "allow-client-a-via-cidr-egress-rule", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Egress]
				egress:
				- to:
				  - ipBlock: {cidr: 10.244.2.2/32}
				  - ipBlock: {cidr: "fd00:244::2:2/128"}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   .   X   X   X   X
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
			Name:     "egress-cidr-except",
			Upstream: "should enforce except clause while egress access to server in CIDR block",
			Policies: []string{netpol("x", "allow-client-a-via-cidr-egress-rule", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Egress]
				egress:
				- to:
				  - ipBlock: {cidr: 0.0.0.0/4, except: [10.244.1.2/32]}
				  - ipBlock: {cidr: "f000::/4", except: ["fd00:244::1:2/128"]}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   .   .   .   .   .   .   .
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
			Name:     "cidr-and-except-overlap-allowed-by-other-policy",
			Upstream: "should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed",
			Policies: []string{
				netpol("x", "allow-client-a-via-cidr-egress-rule", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Egress]
					egress:
					- to:
					  - ipBlock: {cidr: 0.0.0.0/4, except: [10.244.1.2/32]}
					  - ipBlock: {cidr: "f000::/4", except: ["fd00:244::1:2/128"]}`),
				netpol("x", "allow-client-a-via-cidr-egress-rule-b", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Egress]
					egress:
					- to:
					  - ipBlock: {cidr: 10.244.1.2/32}
					  - ipBlock: {cidr: "fd00:244::1:2/128"}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
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
			Name:     "ingress-egress-controlled-independently",
			Upstream: "should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector",
			Policies: []string{
				netpol("x", "allow-egress-for-target", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Egress]
					egress:
					- {}`),
				netpol("x", "deny-ingress-via-label-selector", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Ingress]`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "sctp-not-treated-as-tcp",
			Upstream: "should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP",
			Policies: []string{
				netpol("x", "deny-ingress", `
					podSelector: {}
					policyTypes: [Ingress]`),
				netpol("x", "allow-only-sctp-ingress-on-port-81", `
					podSelector: {matchLabels: {pod: a}}
					policyTypes: [Ingress]
					ingress:
					- ports:
					  - {port: 81, protocol: SCTP}`),
			},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
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
				{Ports: ports(80), Protocols: protos(SCTP), Table: `
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
				{Ports: ports(81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   .   .   .   .   .   .
				x/b .   .   X   .   .   .   .   .   .
				x/c .   X   .   .   .   .   .   .   .
				y/a .   X   X   .   .   .   .   .   .
				y/b .   X   X   .   .   .   .   .   .
				y/c .   X   X   .   .   .   .   .   .
				z/a .   X   X   .   .   .   .   .   .
				z/b .   X   X   .   .   .   .   .   .
				z/c .   X   X   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "sctp-policy-isolates",
			Upstream: "should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP",
			Policies: []string{netpol("x", "allow-only-sctp-ingress-on-port-80", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- ports:
				  - {port: 80, protocol: SCTP}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
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
			Name:     "udp-only-policy-denies-tcp",
			Upstream: "should not allow access by TCP when a policy specifies only UDP",
			Policies: []string{netpol("x", "allow-only-udp-ingress-on-port-81", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- ports:
				  - {port: 81, protocol: UDP}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(UDP), Table: `
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
			Name:     "namespace-selector-default-ns-label",
			Upstream: "should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label",
			Policies: []string{netpol("x", "allow-client-a-via-ns-selector-for-immutable-ns-label", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "y"}}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "egress-namespace-match-expressions-default-ns-label",
			Upstream: "should enforce policy based on NamespaceSelector with MatchExpressions using default ns label",
			Policies: []string{netpol("x", "allow-ns-y-match-selector-for-immutable-ns-label", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Egress]
				egress:
				- to:
				  - namespaceSelector:
				      matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: ["y"]}]`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP, UDP, SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   X   X   X   .   .   .
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
			Name:     "udp-ports",
			Upstream: "should enforce policy based on Ports (UDP)",
			Policies: []string{netpol("x", "allow-ingress-on-port-81-ns-x", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {ns: "y"}}
				  ports:
				  - {port: 81, protocol: UDP}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "sctp-ports",
			Upstream: "should enforce policy based on Ports (SCTP)",
			Policies: []string{netpol("x", "allow-ingress-on-port-81-ns-x", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {ns: "y"}}
				  ports:
				  - {port: 81, protocol: SCTP}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "policy-types-default-with-egress-rules",
			Upstream: "should work with Ingress, Egress specified together (policyTypes omitted: Ingress, plus Egress because egress rules are present)",
			Policies: []string{netpol("x", "no-policy-types", `
				podSelector: {matchLabels: {pod: a}}
				ingress:
				- from:
				  - podSelector: {matchLabels: {pod: b}}
				egress:
				- ports:
				  - port: 80`)},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   X   X   X   X   X   X   X   X
				x/b .   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "endport-range",
			Upstream: "should enforce policy based on Ports with endPort (port ranges)",
			Policies: []string{netpol("x", "allow-ingress-port-range", `
				podSelector: {matchLabels: {pod: a}}
				policyTypes: [Ingress]
				ingress:
				- from:
				  - namespaceSelector: {matchLabels: {ns: "y"}}
				  ports:
				  - {port: 79, endPort: 80, protocol: TCP}
				  - {port: 81, endPort: 90, protocol: UDP}`)},
			Expect: []Expectation{
				{Ports: ports(80), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80), Protocols: protos(UDP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   .   .   .   .   .   .   .
				x/c X   .   .   .   .   .   .   .   .
				y/a X   .   .   .   .   .   .   .   .
				y/b X   .   .   .   .   .   .   .   .
				y/c X   .   .   .   .   .   .   .   .
				z/a X   .   .   .   .   .   .   .   .
				z/b X   .   .   .   .   .   .   .   .
				z/c X   .   .   .   .   .   .   .   .`},
			},
		},
		{
			Name:     "egress-named-port-udp",
			Upstream: "should allow egress access on one named port (UDP)",
			Policies: []string{netpol("x", "allow-egress-udp", `
				podSelector: {matchLabels: {pod: b}}
				policyTypes: [Egress]
				egress:
				- to:
				  - namespaceSelector: {}
				  ports:
				  - {port: serve-81-udp, protocol: UDP}`)},
			Expect: []Expectation{
				{Ports: ports(80, 81), Protocols: protos(TCP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   X   X   X   X   X   X   X
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
				x/b X   .   X   X   X   X   X   X   X
				x/c .   .   .   .   .   .   .   .   .
				y/a .   .   .   .   .   .   .   .   .
				y/b .   .   .   .   .   .   .   .   .
				y/c .   .   .   .   .   .   .   .   .
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
				{Ports: ports(80, 81), Protocols: protos(SCTP), Table: `
				-   x/a x/b x/c y/a y/b y/c z/a z/b z/c
				x/a .   .   .   .   .   .   .   .   .
				x/b X   .   X   X   X   X   X   X   X
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
				z/a .   .   .   .   .   .   .   .   .
				z/b .   .   .   .   .   .   .   .   .
				z/c .   .   .   .   .   .   .   .   .`},
			},
		},
	}
}

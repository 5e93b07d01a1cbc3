package policy_test

import (
	"net/netip"
	"strings"
	"testing"

	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/scenarios"
)

// TestCNPSemantics checks the ClusterNetworkPolicy clauses of upstream's API
// documentation (sigs.k8s.io/network-policy-api v0.3.0, apis/v1alpha2) on the
// x/y/z model.
func TestCNPSemantics(t *testing.T) {
	cases := []semanticsCase{
		{
			name: "rules in written order: the first match decides (Accept before Deny)",
			yaml: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: order}
spec:
  tier: Admin
  priority: 6
  subject: {namespaces: {matchLabels: {ns: x}}}
  egress:
  - {name: allow-y, action: Accept, to: [{namespaces: {matchLabels: {ns: y}}}]}
  - {name: deny-y, action: Deny, to: [{namespaces: {matchLabels: {ns: y}}}]}
  - {name: deny-z-80, action: Deny, to: [{namespaces: {matchLabels: {ns: z}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: allow, tier: policy.TierAdmin, dir: policy.Egress},
				{from: "x/a", to: "z/a", port: 80, want: deny, tier: policy.TierAdmin},
				{from: "x/a", to: "z/a", port: 81, want: allow, tier: policy.TierDefault},
				{from: "x/a", to: "z/a", port: 80, proto: policy.ProtocolUDP, want: allow},
				// Egress rules only: ingress of the subject is untouched.
				{from: "z/a", to: "x/a", port: 80, want: allow},
			},
		},
		{
			name: "Pass hands over to NetworkPolicy; without one, to the Baseline tier",
			yaml: `
apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: pass-example}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {ns: x}}}
  egress:
  - {action: Pass, to: [{namespaces: {matchLabels: {ns: y}}}]}
  - {action: Pass, to: [{namespaces: {matchLabels: {ns: z}}}]}
  - {action: Deny, to: [{networks: [0.0.0.0/0, "::/0"]}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-to-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {ns: y}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: default}
spec:
  tier: Baseline
  priority: 10
  subject: {namespaces: {matchLabels: {ns: x}}}
  egress:
  - {action: Deny, to: [{namespaces: {matchLabels: {ns: y}}}]}
`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: allow, tier: policy.TierNamespaced, dir: policy.Egress},
				{from: "x/a", to: "z/a", port: 80, want: deny, tier: policy.TierNamespaced, reason: policy.ReasonIsolated},
				{from: "x/b", to: "y/a", port: 80, want: deny, tier: policy.TierBaseline},
				{from: "x/b", to: "z/a", port: 80, want: allow, tier: policy.TierDefault, dir: policy.Egress},
				{from: "x/b", to: "192.0.2.1", port: 80, want: deny, tier: policy.TierAdmin},
			},
		},
		{
			name: "Baseline Deny applies only where no NetworkPolicy selects the pod",
			yaml: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline-deny}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  ingress:
  - {action: Deny, from: [{namespaces: {}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: y}}}]
`,
			checks: []check{
				{from: "y/a", to: "x/a", port: 80, want: allow, tier: policy.TierNamespaced},
				{from: "z/a", to: "x/a", port: 80, want: deny, tier: policy.TierNamespaced},
				{from: "y/a", to: "x/b", port: 80, want: deny, tier: policy.TierBaseline},
			},
		},
		{
			name: "Baseline Pass skips the rest of the tier: the node default decides",
			yaml: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: b1}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {action: Pass, to: [{namespaces: {matchLabels: {ns: y}}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: b2}
spec:
  tier: Baseline
  priority: 2
  subject: {namespaces: {}}
  egress:
  - {action: Deny, to: [{namespaces: {}}]}
  - {action: Accept, to: [{namespaces: {}}]}
`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: allow, tier: policy.TierBaseline, dir: policy.Egress},
				{from: "x/a", to: "z/a", port: 80, want: deny, tier: policy.TierBaseline},
			},
		},
		{
			name: "Baseline Pass on a default-deny node denies",
			opts: policy.Options{DefaultVerdict: policy.Deny},
			yaml: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: b1}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {action: Pass, to: [{namespaces: {matchLabels: {ns: y}}}]}
  - {action: Accept, to: [{namespaces: {}}]}
  ingress:
  - {action: Accept, from: [{namespaces: {}}]}
`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: deny, tier: policy.TierBaseline, dir: policy.Egress},
				{from: "x/a", to: "z/a", port: 80, want: allow},
			},
		},
		{
			name: "pods peer is namespaceSelector AND podSelector; subject pods likewise",
			yaml: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: pods}
spec:
  tier: Admin
  priority: 1
  subject: {pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}}
  ingress:
  - action: Deny
    from: [{pods: {namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: b}}}}]
`,
			checks: []check{
				{from: "y/b", to: "x/a", port: 80, want: deny},
				{from: "y/a", to: "x/a", port: 80, want: allow},
				{from: "z/b", to: "x/a", port: 80, want: allow},
				{from: "y/b", to: "x/b", port: 80, want: allow},
			},
		},
		{
			name: "protocols: port range, udp, sctp and a named port resolved on the destination",
			yaml: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: ports}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {ns: x}}}
  egress:
  - action: Deny
    to: [{namespaces: {matchLabels: {ns: y}}}]
    protocols:
    - tcp: {destinationPort: {range: {start: 80, end: 81}}}
    - sctp: {destinationPort: {number: 81}}
  - action: Deny
    to: [{namespaces: {matchLabels: {ns: z}}}]
    protocols: [{destinationNamedPort: serve-81-udp}]
`,
			checks: []check{
				{from: "x/a", to: "y/a", port: 80, want: deny},
				{from: "x/a", to: "y/a", port: 81, want: deny},
				{from: "x/a", to: "y/a", port: 81, proto: policy.ProtocolUDP, want: allow},
				{from: "x/a", to: "y/a", port: 81, proto: policy.ProtocolSCTP, want: deny},
				{from: "x/a", to: "y/a", port: 80, proto: policy.ProtocolSCTP, want: allow},
				{from: "x/a", to: "z/a", port: 81, proto: policy.ProtocolUDP, want: deny},
				{from: "x/a", to: "z/a", port: 81, proto: policy.ProtocolTCP, want: allow},
				{from: "x/a", to: "z/a", port: 80, proto: policy.ProtocolUDP, want: allow},
			},
		},
		{
			name: "domainNames: Accept before a Deny all, allowed only to what the pod resolved",
			yaml: `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: allowlist}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {ns: x}}}
  egress:
  - {name: allowed-domains, action: Accept, to: [{domainNames: ["*.example.com", "kubernetes.io"]}]}
  - {name: default-deny, action: Deny, to: [{networks: [0.0.0.0/0, "::/0"]}]}
`,
			lookups: []scenarios.Lookup{
				{Workload: "x/a", Name: "a.b.example.com", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.1")}},
				{Workload: "x/a", Name: "example.com", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.2")}},
				{Workload: "x/a", Name: "KUBERNETES.io.", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.3")}},
				{Workload: "x/a", Name: "www.kubernetes.io", IPs: []netip.Addr{netip.MustParseAddr("192.0.2.4")}},
			},
			checks: []check{
				{from: "x/a", to: "192.0.2.1", port: 443, want: allow},
				{from: "x/a", to: "192.0.2.2", port: 443, want: deny}, // the apex never matches
				{from: "x/a", to: "192.0.2.3", port: 443, want: allow},
				{from: "x/a", to: "192.0.2.4", port: 443, want: deny}, // exact names are exact
				{from: "x/b", to: "192.0.2.1", port: 443, want: deny}, // x/b did not resolve it
				{from: "x/a", name: "a.b.example.com", want: allow, tier: policy.TierAdmin},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runChecks(t, loadEngine(t, tc.yaml, tc.opts, tc.lookups), tc.checks, tc.family6)
		})
	}
}

// TestCNPNodesPeer: a nodes peer matches the addresses of the nodes it
// selects (the workloads file's nodes in standalone mode), and a node change
// reaches the compiled plan.
func TestCNPNodesPeer(t *testing.T) {
	const y = `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: nodes}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {name: deny-linux-nodes, action: Deny, to: [{nodes: {matchLabels: {kubernetes.io/os: linux}}}]}
`
	objs, err := manifest.Decode("test", strings.NewReader(y))
	if err != nil {
		t.Fatal(err)
	}
	ws := scenarios.Workloads()
	ws.Nodes = []policy.Node{
		{Name: "n1", Labels: map[string]string{"kubernetes.io/os": "linux"}, IPs: []netip.Addr{netip.MustParseAddr("192.168.0.1")}},
		{Name: "n2", Labels: map[string]string{"kubernetes.io/os": "windows"}, IPs: []netip.Addr{netip.MustParseAddr("192.168.0.2")}},
	}
	s, err := manifest.LoadStore(objs, ws)
	if err != nil {
		t.Fatal(err)
	}
	e := policy.NewEngine(s, policy.Options{})
	c := policy.NewCompiler(s, policy.Options{})
	decide := func(dst string) policy.Verdict {
		return e.Decide(policy.Connection{Src: scenarios.PodIPv4("x", "a"), Dst: netip.MustParseAddr(dst), Port: 10250}).Verdict
	}
	prefixes := func(plan *policy.Plan) []netip.Prefix {
		return plan.Policies[policy.PolicyRef{Kind: policy.KindClusterNetworkPolicy, Name: "nodes"}].Egress[0].Prefixes
	}
	plan, _ := c.Compile()
	if decide("192.168.0.1") != policy.Deny || decide("192.168.0.2") != policy.Allow {
		t.Fatalf("n1 %s, n2 %s; want Deny, Allow", decide("192.168.0.1"), decide("192.168.0.2"))
	}
	if got := prefixes(plan); len(got) != 1 || got[0] != netip.MustParsePrefix("192.168.0.1/32") {
		t.Fatalf("plan prefixes %v, want [192.168.0.1/32]", got)
	}
	if err := s.UpsertNode(policy.Node{Name: "n2", Labels: map[string]string{"kubernetes.io/os": "linux"}, IPs: []netip.Addr{netip.MustParseAddr("192.168.0.2")}}); err != nil {
		t.Fatal(err)
	}
	plan, ch := c.Compile()
	if decide("192.168.0.2") != policy.Deny {
		t.Fatalf("relabelled n2: %s, want Deny", decide("192.168.0.2"))
	}
	if got := prefixes(plan); len(got) != 2 || len(ch.Policies) != 1 {
		t.Fatalf("after relabel: prefixes %v, changed policies %v", got, ch.Policies)
	}
	s.DeleteNode("n1")
	plan, _ = c.Compile()
	if decide("192.168.0.1") != policy.Allow || len(prefixes(plan)) != 1 {
		t.Fatalf("deleted n1: %s, prefixes %v", decide("192.168.0.1"), prefixes(plan))
	}
}

// TestCNPValidation: what upstream's CRD (and its CEL rules) rejects is
// rejected with the field path.
func TestCNPValidation(t *testing.T) {
	head := func(tier string, prio int) string {
		return "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: p}\nspec:\n  tier: " + tier +
			"\n  priority: " + itoa(int32(prio)) + "\n  subject: {namespaces: {}}\n"
	}
	many := func(n int, item string) string {
		return "[" + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + "]"
	}
	cases := []struct{ name, yaml, want string }{
		{"domainNames outside Accept", head("Admin", 1) + "  egress: [{action: Deny, to: [{domainNames: [a.example.com]}]}]", "spec.egress[0].to[0].domainNames: Forbidden"},
		{"wildcard not at the start", head("Admin", 1) + "  egress: [{action: Accept, to: [{domainNames: [a.*.example.com]}]}]", "spec.egress[0].to[0].domainNames[0]"},
		{"wildcard inside a label", head("Admin", 1) + "  egress: [{action: Accept, to: [{domainNames: [\"*a.example.com\"]}]}]", "spec.egress[0].to[0].domainNames[0]"},
		{"priority above 1000", head("Admin", 1001) + "  egress: [{action: Deny, to: [{networks: [10.0.0.0/8]}]}]", "spec.priority"},
		{"two peer fields", head("Admin", 1) + "  egress: [{action: Deny, to: [{networks: [10.0.0.0/8], namespaces: {}}]}]", "spec.egress[0].to[0]"},
		{"26 rules", head("Admin", 1) + "  egress: " + many(26, "{action: Deny, to: [{namespaces: {}}]}"), "spec.egress: Too many: 26"},
		{"26 peers", head("Admin", 1) + "  egress: [{action: Deny, to: " + many(26, "{namespaces: {}}") + "}]", "spec.egress[0].to: Too many: 26"},
		{"port range start = end", head("Admin", 1) + "  egress: [{action: Deny, to: [{namespaces: {}}], protocols: [{tcp: {destinationPort: {range: {start: 80, end: 80}}}}]}]", "spec.egress[0].protocols[0].tcp.destinationPort.range"},
		{"named port with networks", head("Admin", 1) + "  egress: [{action: Deny, to: [{networks: [10.0.0.0/8]}], protocols: [{destinationNamedPort: web}]}]", "destinationNamedPort"},
		{"host bits", head("Admin", 1) + "  egress: [{action: Deny, to: [{networks: [10.0.0.1/8]}]}]", "did you mean 10.0.0.0/8"},
		{"empty peer", head("Baseline", 1) + "  egress: [{action: Deny, to: [{}]}]", "spec.egress[0].to[0]"},
		{"unknown tier", head("Developer", 1) + "  egress: [{action: Deny, to: [{namespaces: {}}]}]", "spec.tier: Unsupported value"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// File mode checks the document against the upstream CRD's
			// schema first; what it admits, the policy validation checks.
			objs, err := manifest.Decode("test", strings.NewReader(tc.yaml))
			if err == nil {
				err = objs[0].Validate()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	ok := head("Baseline", 1000) + "  egress: [{action: Pass, to: [{namespaces: {}}]}, {action: Accept, to: [{domainNames: [\"*.example.com\", Example.ORG.]}]}]"
	objs, err := manifest.Decode("test", strings.NewReader(ok))
	if err != nil {
		t.Fatal(err)
	}
	if err := objs[0].Validate(); err != nil {
		t.Fatalf("valid policy rejected: %v", err)
	}
}

// TestCNPFailClosed: a peer with no known field (an object written against a
// newer CRD, read from the API server with the unknown field dropped) makes an
// Accept rule match nothing and a Deny or Pass rule deny everything, as
// upstream asks; ValidateClusterNetworkPolicy reports it.
func TestCNPFailClosed(t *testing.T) {
	docs := []string{`
metadata: {name: future}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {ns: x}}}
  egress:
  - {action: Accept, to: [{}]}
  - {action: Pass, to: [{}, {namespaces: {matchLabels: {ns: "y"}}}]}
`, `
metadata: {name: future-accept}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {ns: "y"}}}
  egress:
  - {action: Accept, to: [{}]}
  - {action: Deny, to: [{namespaces: {matchLabels: {ns: z}}}]}
`}
	s, err := manifest.LoadStore(nil, scenarios.Workloads())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		var p cnpv1alpha2.ClusterNetworkPolicy
		if err := yaml.Unmarshal([]byte(d), &p); err != nil {
			t.Fatal(err)
		}
		if err := policy.ValidateClusterNetworkPolicy(&p); err == nil || !strings.Contains(err.Error(), "spec.egress[0].to[0]: Required") {
			t.Errorf("%s: validation %v, want spec.egress[0].to[0]: Required", p.Name, err)
		}
		if err := s.UpsertClusterNetworkPolicy(&p); err != nil {
			t.Fatalf("%s: %v", p.Name, err)
		}
	}
	runChecks(t, policy.NewEngine(s, policy.Options{}), []check{
		{from: "x/a", to: "z/a", port: 80, want: deny, tier: policy.TierAdmin},
		{from: "x/a", to: "y/a", port: 80, want: deny, tier: policy.TierAdmin},
		{from: "y/a", to: "z/a", port: 80, want: deny, tier: policy.TierAdmin},
		{from: "y/a", to: "x/b", port: 80, want: allow, tier: policy.TierDefault, dir: policy.Egress},
	}, false)
}

// TestCNPDomainNamesL7: the L7 proxy's decision (Engine.DecideFor: the
// connection as if the pod had resolved only the Host/SNI name) honours
// domainNames with upstream's wildcard: a name one or more labels below is
// allowed, the apex and other names fall to the Deny below.
func TestCNPDomainNamesL7(t *testing.T) {
	e := loadEngine(t, `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: allowlist}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {ns: x}}}
  egress:
  - {name: allowed-domains, action: Accept, to: [{domainNames: ["*.example.com"]}]}
  - {name: default-deny, action: Deny, to: [{networks: [0.0.0.0/0, "::/0"]}]}
`, policy.Options{}, nil)
	c := policy.Connection{Src: scenarios.PodIPv4("x", "a"), Dst: netip.MustParseAddr("192.0.2.1"), Port: 443}
	for name, want := range map[string]policy.Verdict{
		"www.example.com": policy.Allow, "a.b.example.com": policy.Allow,
		"example.com": policy.Deny, "www.example.org": policy.Deny,
	} {
		d := e.DecideFor(c, name)
		if d.Verdict != want {
			t.Errorf("%s: %s (%+v), want %s", name, d.Verdict, d.Egress.Outcome, want)
		}
	}
}

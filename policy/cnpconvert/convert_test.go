package cnpconvert_test

import (
	"strings"
	"testing"

	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/cnpconvert"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/scenarios"
)

const cnpDoc = `
metadata: {name: platform}
spec:
  tier: Admin
  priority: 7
  subject: {pods: {namespaceSelector: {matchLabels: {ns: x}}, podSelector: {matchLabels: {pod: a}}}}
  ingress:
  - {name: from-y, action: Deny, from: [{namespaces: {matchLabels: {ns: "y"}}}], protocols: [{tcp: {destinationPort: {number: 80}}}]}
  egress:
  - {name: pass-z, action: Pass, to: [{pods: {namespaceSelector: {matchLabels: {ns: z}}, podSelector: {matchLabels: {pod: b}}}}]}
  - {name: ranges, action: Deny, to: [{namespaces: {}}], protocols: [{udp: {destinationPort: {range: {start: 80, end: 81}}}}, {destinationNamedPort: serve-81-tcp}]}
  - {name: net, action: Accept, to: [{networks: [10.244.2.0/24]}]}
  - {name: names, action: Accept, to: [{domainNames: ["*.example.com", api.github.com]}]}
`

// TestRoundTrip: a ClusterNetworkPolicy converted to a ClusterFirewallPolicy
// decides every cell of the x/y/z model as the original, and converts back.
func TestRoundTrip(t *testing.T) {
	var in cnpv1alpha2.ClusterNetworkPolicy
	if err := yaml.Unmarshal([]byte(cnpDoc), &in); err != nil {
		t.Fatal(err)
	}
	cfp, probs := cnpconvert.ToClusterFirewallPolicy(&in)
	if len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
	if err := policy.ValidateClusterFirewallPolicy(cfp); err != nil {
		t.Fatalf("converted policy invalid: %v", err)
	}
	engine := func(apply func(*policy.Store) error) *policy.Engine {
		s, err := manifest.LoadStore(nil, scenarios.Workloads())
		if err != nil {
			t.Fatal(err)
		}
		if err := apply(s); err != nil {
			t.Fatal(err)
		}
		return policy.NewEngine(s, policy.Options{})
	}
	a := engine(func(s *policy.Store) error { return s.UpsertClusterNetworkPolicy(&in) })
	b := engine(func(s *policy.Store) error { return s.UpsertClusterFirewallPolicy(cfp) })
	for _, f := range scenarios.Families {
		ra := scenarios.Matrix(a, scenarios.Ports, scenarios.Protocols, f)
		rb := scenarios.Matrix(b, scenarios.Ports, scenarios.Protocols, f)
		if d := scenarios.Diff(ra, rb); len(d) > 0 {
			t.Fatalf("%d cells differ, first %v", len(d), d[0])
		}
	}
	for _, name := range []string{"a.b.example.com", "example.com", "api.github.com", "x.api.github.com"} {
		k := policy.WorkloadKey{Namespace: "x", Name: "a"}
		if da, db := a.DecideLookup(k, name), b.DecideLookup(k, name); da.Verdict != db.Verdict || da.Rule != db.Rule {
			t.Errorf("lookup %s: %+v vs %+v", name, da.Outcome, db.Outcome)
		}
	}
	back, probs := cnpconvert.ToClusterNetworkPolicy(cfp)
	if len(probs) > 0 {
		t.Fatalf("back: problems %v", probs)
	}
	if err := policy.ValidateClusterNetworkPolicy(back); err != nil {
		t.Fatalf("back: %v", err)
	}
}

// TestRefusals: what the other kind cannot express is refused with the field.
func TestRefusals(t *testing.T) {
	cfpDoc := `
metadata: {name: p}
spec:
  tier: Admin
  priority: 1
  mode: Audit
  subject: {namespaceSelector: {}}
  egress:
  - {action: Deny, to: [{fqdn: {matchPattern: "*.minepool.com"}}]}
  - {action: Allow, to: [{fqdn: {matchPattern: "*.example.com"}}, {fqdn: {matchPattern: "xmr-*.com"}}, {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]}
`
	var cfp policy.ClusterFirewallPolicy
	if err := yaml.Unmarshal([]byte(cfpDoc), &cfp); err != nil {
		t.Fatal(err)
	}
	_, probs := cnpconvert.ToClusterNetworkPolicy(&cfp)
	got := ""
	for _, p := range probs {
		got += p.String() + "\n"
	}
	for _, want := range []string{"spec.mode", "spec.egress[0].to[0].fqdn: an FQDN Deny rule", "spec.egress[1].to[0].fqdn", "spec.egress[1].to[1].fqdn", "spec.egress[1].to[2].except"} {
		if !strings.Contains(got, want) {
			t.Errorf("no problem %q in:\n%s", want, got)
		}
	}
	var in cnpv1alpha2.ClusterNetworkPolicy
	if err := yaml.Unmarshal([]byte(`
metadata: {name: n}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {action: Pass, to: [{namespaces: {}}]}
  - {action: Deny, to: [{nodes: {}}]}
`), &in); err != nil {
		t.Fatal(err)
	}
	_, probs = cnpconvert.ToClusterFirewallPolicy(&in)
	if len(probs) != 2 || probs[0].Field != "spec.egress[0].action" || probs[1].Field != "spec.egress[1].to[0].nodes" {
		t.Errorf("problems %v", probs)
	}
}

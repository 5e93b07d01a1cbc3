package policy_test

import (
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/scenarios"
)

// Labels the random patterns and names are made of: few, so that patterns
// overlap, collide and shadow each other.
var indexLabels = []string{"a", "b", "api", "pool", "xmr-pool", "cdn", "example", "com", "org", "test"}

func randomIndexName(r *rand.Rand) string {
	n := 1 + r.Intn(4)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = indexLabels[r.Intn(len(indexLabels))]
	}
	return strings.Join(parts, ".")
}

func randomIndexPattern(r *rand.Rand) string {
	switch r.Intn(8) {
	case 0:
		return "*"
	case 1:
		return "**." + randomIndexName(r)
	case 2:
		return "*." + randomIndexName(r)
	case 3:
		l := indexLabels[r.Intn(len(indexLabels))]
		return l[:len(l)/2] + "*." + randomIndexName(r)
	}
	return randomIndexName(r)
}

func randomFQDNRule(r *rand.Rand, tier policy.Tier, i int) policy.Rule {
	rule := policy.Rule{Action: policy.ActionAllow}
	switch x := r.Intn(10); {
	case x < 4:
		rule.Action = policy.ActionDeny
	case x == 9 && tier == policy.TierAdmin:
		rule.Action = policy.ActionPass
	}
	if r.Intn(3) == 0 {
		rule.Name = fmt.Sprintf("rule-%d", i)
	}
	for j, n := 0, 1+r.Intn(3); j < n; j++ {
		f := &policy.FQDNPeer{MatchPattern: randomIndexPattern(r)}
		if !strings.Contains(f.MatchPattern, "*") && r.Intn(2) == 0 {
			f = &policy.FQDNPeer{MatchName: f.MatchPattern}
		}
		rule.To = append(rule.To, policy.Peer{FQDN: f})
	}
	if r.Intn(5) == 0 {
		rule.To = append(rule.To, policy.Peer{CIDR: "192.0.2.0/24"})
	}
	return rule
}

// randomFQDNPolicies adds n random policies of every kind and tier with FQDN
// rules over indexLabels, colliding priorities, Audit mode and lookups
// enforcement to s.
func randomFQDNPolicies(t *testing.T, s *policy.Store, r *rand.Rand, n int, prefix string) {
	t.Helper()
	mode := func() policy.Mode {
		if r.Intn(6) == 0 {
			return policy.ModeAudit
		}
		return ""
	}
	sel := func() *metav1.LabelSelector {
		switch r.Intn(3) {
		case 0:
			return &metav1.LabelSelector{}
		case 1:
			return &metav1.LabelSelector{MatchLabels: map[string]string{"pod": scenarios.PodNames[r.Intn(len(scenarios.PodNames))]}}
		}
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpNotIn, Values: []string{scenarios.PodNames[r.Intn(len(scenarios.PodNames))]}}}}
	}
	rules := func(tier policy.Tier) []policy.Rule {
		var out []policy.Rule
		for i, k := 0, r.Intn(4); i < k; i++ {
			out = append(out, randomFQDNRule(r, tier, i))
		}
		return out
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		var err error
		switch r.Intn(3) {
		case 0, 1:
			tier := policy.TierAdmin
			if r.Intn(3) == 0 {
				tier = policy.TierBaseline
			}
			p := &policy.ClusterFirewallPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: policy.ClusterFirewallPolicySpec{
					Tier: tier, Priority: int32(r.Intn(4)), Mode: mode(),
					Subject: policy.Subject{NamespaceSelector: metav1.LabelSelector{}, PodSelector: sel()},
					Egress:  rules(tier),
				},
			}
			if len(p.Spec.Egress) == 0 {
				p.Spec.Egress = []policy.Rule{randomFQDNRule(r, tier, 0)}
			}
			err = s.UpsertClusterFirewallPolicy(p)
		default:
			p := &policy.FirewallPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: scenarios.Namespaces[r.Intn(len(scenarios.Namespaces))]},
				Spec:       policy.FirewallPolicySpec{Mode: mode(), PodSelector: *sel(), Egress: rules(policy.TierNamespaced)},
			}
			switch r.Intn(4) {
			case 0:
				p.Spec.Egress = nil // does not isolate egress
			case 1:
				p.Spec.Lookups = policy.LookupsEnforce
			}
			err = s.UpsertFirewallPolicy(p)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// checkAgainstOracle compares the indexed lookup functions with the oracle
// for every workload of the model (and an unknown one) and every name.
func checkAgainstOracle(t *testing.T, e *policy.Engine, names []string, what string) {
	t.Helper()
	keys := []policy.WorkloadKey{{Namespace: "nowhere", Name: "nobody"}}
	for _, k := range scenarios.PodKeys() {
		w, err := policy.ParseWorkloadKey(k)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, w)
	}
	buf := make([]policy.RuleRef, 0, 4)
	for _, w := range keys {
		for _, name := range names {
			want := e.OracleDecideLookup(w, name)
			got := e.DecideLookup(w, name)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s: DecideLookup(%s, %q):\n got %+v (audit %+v)\nwant %+v (audit %+v)", what, w, name, got, got.Audit, want, want.Audit)
			}
			wantRules := e.OracleFQDNRules(w, name)
			if gotRules := e.FQDNRules(w, name); !reflect.DeepEqual(gotRules, wantRules) {
				t.Fatalf("%s: FQDNRules(%s, %q):\n got %v\nwant %v", what, w, name, gotRules, wantRules)
			}
			d, rules := e.DecideLookupRules(w, name, buf[:0])
			if !reflect.DeepEqual(d, want) || !(len(rules) == 0 && len(wantRules) == 0 || reflect.DeepEqual(rules, wantRules)) {
				t.Fatalf("%s: DecideLookupRules(%s, %q) = %+v %v, want %+v %v", what, w, name, d, rules, want, wantRules)
			}
			pre := policy.RuleRef{Rule: "keep"}
			if got := e.AppendFQDNRules([]policy.RuleRef{pre}, w, name); got[0] != pre || len(got) != 1+len(wantRules) || (len(wantRules) > 0 && !reflect.DeepEqual(got[1:], wantRules)) {
				t.Fatalf("%s: AppendFQDNRules(%s, %q) = %v, want [%v] + %v", what, w, name, got, pre, wantRules)
			}
		}
	}
}

// TestFQDNIndexMatchesOracle: the FQDN index decides every lookup and selects
// every rule exactly as the evaluation that visits every policy (the code
// before the index, kept in export_test.go), over random policy sets — the
// project's random scenarios merged eight at a time, plus random policies with
// many overlapping patterns — under every lookup option, and again after
// workloads, namespaces and policies change (the caches must follow).
func TestFQDNIndexMatchesOracle(t *testing.T) {
	seeds := 60
	if testing.Short() {
		seeds = 15
	}
	optionSets := []policy.Options{
		{},
		{Lookups: policy.LookupsEnforce},
		{Lookups: policy.LookupsEnforce, DefaultVerdict: policy.Deny, SearchDomains: []string{"test"}},
	}
	for seed := 0; seed < seeds; seed++ {
		r := rand.New(rand.NewSource(int64(seed)))
		var objs []manifest.Object
		for k := 0; k < 8; k++ {
			sc := scenarios.Random(int64(seed*8 + k))
			o, err := sc.Objects()
			if err != nil {
				t.Fatal(err)
			}
			objs = append(objs, o...)
		}
		s, err := manifest.LoadStore(objs, scenarios.Workloads())
		if err != nil {
			t.Fatal(err)
		}
		randomFQDNPolicies(t, s, r, 10+r.Intn(40), fmt.Sprintf("fq%d", seed))
		names := []string{"API.Example.COM.", "xmr-pool.com", "a.y.example.org", "kubernetes.default.svc.cluster.local", "x.test", "bad..name", "", "."}
		for i := 0; i < 40; i++ {
			names = append(names, randomIndexName(r))
		}
		e := policy.NewEngine(s, optionSets[seed%len(optionSets)])
		what := fmt.Sprintf("seed %d", seed)
		checkAgainstOracle(t, e, names, what)

		// Changes: a pod's labels, a namespace's labels, a policy replaced,
		// one deleted, new ones added.
		x := scenarios.Workloads()
		pod := x.Pods[r.Intn(len(x.Pods))]
		pod.Labels = map[string]string{"pod": scenarios.PodNames[r.Intn(len(scenarios.PodNames))], "team": "t"}
		if err := s.UpsertWorkload(pod); err != nil {
			t.Fatal(err)
		}
		checkAgainstOracle(t, e, names, what+" after a pod change")
		if err := s.UpsertNamespace(policy.Namespace{Name: "y", Labels: map[string]string{"ns": "x"}}); err != nil {
			t.Fatal(err)
		}
		refs := s.Policies()
		s.DeletePolicy(refs[r.Intn(len(refs))])
		randomFQDNPolicies(t, s, r, 5, fmt.Sprintf("fq%d", seed)) // replaces fq<seed>-0…4
		randomFQDNPolicies(t, s, r, 3, fmt.Sprintf("new%d", seed))
		checkAgainstOracle(t, e, names, what+" after policy and namespace changes")

		// Policies changed one at a time, looked up after each change: the
		// index serves them from its delta, then is rebuilt past the limit
		// (a small one here), and a batch replaces it in between.
		s.SetFQDNDeltaLimit(1 + r.Intn(4))
		for step := 0; step < 12; step++ {
			switch refs := s.Policies(); r.Intn(4) {
			case 0:
				s.DeletePolicy(refs[r.Intn(len(refs))])
			case 1:
				var b policy.PolicyBatch
				p := denyPolicy(fmt.Sprintf("batch%d-%d", seed, step), randomIndexPattern(r))
				if err := b.UpsertClusterFirewallPolicy(p); err != nil {
					t.Fatal(err)
				}
				b.DeletePolicy(refs[r.Intn(len(refs))])
				if err := s.ApplyPolicies(&b); err != nil {
					t.Fatal(err)
				}
			default:
				randomFQDNPolicies(t, s, r, 1, fmt.Sprintf("step%d-%d", seed, r.Intn(3)))
			}
			checkAgainstOracle(t, e, names[:12], fmt.Sprintf("%s after change %d", what, step))
		}
	}
}

// TestFQDNIndexManyPolicies: with the 10,000 Admin policies of the benchmark
// the index agrees with the oracle on names matching Deny, Allow and no rule.
func TestFQDNIndexManyPolicies(t *testing.T) {
	e := scenariosWithManyAdmin(t, 10000)
	var names []string
	for _, l := range manyAdminLookups {
		names = append(names, l.name)
	}
	for _, k := range []int{0, 1, 6, 7, 8, 9, 4242, 9999} {
		names = append(names, fmt.Sprintf("a.pool%d.example", k), fmt.Sprintf("svc%d.example.com", k), fmt.Sprintf("q.zone%d.example.org", k))
	}
	checkAgainstOracle(t, e, names, "10,000 Admin policies")
}

// TestDecideLookupDoesNotAllocate: the resolver's per-query work (decision and
// rule selection) allocates nothing with 10,000 Admin policies.
func TestDecideLookupDoesNotAllocate(t *testing.T) {
	e := scenariosWithManyAdmin(t, 10000)
	w := policy.WorkloadKey{Namespace: "x", Name: "a"}
	buf := make([]policy.RuleRef, 0, 8)
	for _, l := range manyAdminLookups {
		e.DecideLookupRules(w, l.name, buf[:0]) // builds the index and the tier cache
		if n := testing.AllocsPerRun(100, func() { e.DecideLookupRules(w, l.name, buf[:0]) }); n != 0 && l.name != "bad..name." {
			t.Errorf("DecideLookupRules(%q): %.1f allocations per call, want 0", l.name, n)
		}
	}
}

// scenariosWithManyAdmin is an engine on the scenarios' workloads and
// manyAdminPolicies(n); skipped with -short.
func scenariosWithManyAdmin(t *testing.T, n int) *policy.Engine {
	t.Helper()
	if testing.Short() {
		t.Skipf("builds %d policies; skipped with -short", n)
	}
	s := policy.NewStore()
	if err := s.LoadWorkloads(scenarios.Workloads()); err != nil {
		t.Fatal(err)
	}
	return withManyAdmin(t, s, n)
}

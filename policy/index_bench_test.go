package policy_test

import (
	"fmt"
	"math/rand"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/policy"
)

// manyAdminPolicies is the attack of issue 17 item 8: n Admin
// ClusterFirewallPolicies selecting every pod, one FQDN rule each (n patterns in
// all): 70 % Deny `*.poolN.example`, 20 % Allow `svcN.example.com`, 10 % Allow
// `**.zoneN.example.org`, priorities 0–99.
func manyAdminPolicies(n int) []*policy.ClusterFirewallPolicy {
	r := rand.New(rand.NewSource(17))
	out := make([]*policy.ClusterFirewallPolicy, 0, n)
	for k := 0; k < n; k++ {
		rule := policy.Rule{Action: policy.ActionDeny}
		switch k % 10 {
		case 0, 1, 2, 3, 4, 5, 6:
			rule.To = []policy.Peer{{FQDN: &policy.FQDNPeer{MatchPattern: fmt.Sprintf("*.pool%d.example", k)}}}
		case 7, 8:
			rule.Action = policy.ActionAllow
			rule.To = []policy.Peer{{FQDN: &policy.FQDNPeer{MatchName: fmt.Sprintf("svc%d.example.com", k)}}}
		default:
			rule.Action = policy.ActionAllow
			rule.To = []policy.Peer{{FQDN: &policy.FQDNPeer{MatchPattern: fmt.Sprintf("**.zone%d.example.org", k)}}}
		}
		out = append(out, &policy.ClusterFirewallPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("adm-%05d", k)},
			Spec: policy.ClusterFirewallPolicySpec{
				Tier: policy.TierAdmin, Priority: int32(r.Intn(100)),
				Egress: []policy.Rule{rule},
			},
		})
	}
	return out
}

// manyAdminEngine is the benchmark cluster (10,000 workloads, 1,000 policies)
// plus manyAdminPolicies(n).
func manyAdminEngine(tb testing.TB, n int) *policy.Engine {
	tb.Helper()
	return withManyAdmin(tb, benchStore(tb), n)
}

// withManyAdmin adds manyAdminPolicies(n) to s and returns an engine on it.
func withManyAdmin(tb testing.TB, s *policy.Store, n int) *policy.Engine {
	tb.Helper()
	for _, p := range manyAdminPolicies(n) {
		if err := s.UpsertClusterFirewallPolicy(p); err != nil {
			tb.Fatal(err)
		}
	}
	return policy.NewEngine(s, policy.Options{})
}

// manyAdminLookups are the names the benchmark resolves, with whether each is
// blocked: a denied pool, an allowed service, an allowed zone, a name no rule
// matches, a cluster name and an invalid name.
var manyAdminLookups = []struct {
	name    string
	blocked bool
}{
	{"a.pool4242.example.", true},
	{"svc7.example.com.", false},
	{"x.y.zone9.example.org.", false},
	{"unknown.example.com.", false},
	{"kubernetes.default.svc.cluster.local.", false},
	{"bad..name.", true},
}

// BenchmarkLookupManyAdminPolicies measures what the resolver does per query
// (DecideLookup, then FQDNRules when allowed) for a workload that 10,000 Admin
// policies with 10,000 FQDN patterns select. Budget: < 5 µs and no allocation.
func BenchmarkLookupManyAdminPolicies(b *testing.B) {
	e := manyAdminEngine(b, 10000)
	w := policy.WorkloadKey{Namespace: benchNS(5), Name: benchPod(5)}
	for _, l := range manyAdminLookups {
		if got := e.DecideLookup(w, l.name).Blocked(); got != l.blocked {
			b.Fatalf("%s: blocked=%v, want %v", l.name, got, l.blocked)
		}
	}
	if got := e.FQDNRules(w, "svc7.example.com"); len(got) != 1 || got[0].Policy.Name != "adm-00007" {
		b.Fatalf("FQDNRules(svc7.example.com) = %v", got)
	}
	for _, l := range manyAdminLookups {
		b.Run("old-api/"+l.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if d := e.DecideLookup(w, l.name); !d.Blocked() {
					e.FQDNRules(w, l.name)
				}
			}
		})
	}
	buf := make([]policy.RuleRef, 0, 8)
	for _, l := range manyAdminLookups {
		b.Run("rules/"+l.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				e.DecideLookupRules(w, l.name, buf[:0])
			}
		})
	}
}

// BenchmarkLookupAfterPolicyChange measures the first lookup after one of
// the 10,000 Admin policies changed: the change itself (validation, store),
// the rebuild of the FQDN index and the workload's tiers (once per change,
// not per lookup).
func BenchmarkLookupAfterPolicyChange(b *testing.B) {
	e := manyAdminEngine(b, 10000)
	s := e.Store()
	w := policy.WorkloadKey{Namespace: benchNS(5), Name: benchPod(5)}
	ps := manyAdminPolicies(10000)
	buf := make([]policy.RuleRef, 0, 8)
	e.DecideLookupRules(w, "svc7.example.com", buf[:0])
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p := ps[i%len(ps)].DeepCopy()
		p.Spec.Priority = int32(i % 100)
		if err := s.UpsertClusterFirewallPolicy(p); err != nil {
			b.Fatal(err)
		}
		if d, _ := e.DecideLookupRules(w, "a.pool4242.example", buf[:0]); !d.Blocked() {
			b.Fatal("not blocked")
		}
	}
}

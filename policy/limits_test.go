package policy_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/policy"
)

func denyPolicy(name, pattern string) *policy.ClusterFirewallPolicy {
	return &policy.ClusterFirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: policy.ClusterFirewallPolicySpec{Tier: policy.TierAdmin, Egress: []policy.Rule{{
			Action: policy.ActionDeny, To: []policy.Peer{{FQDN: &policy.FQDNPeer{MatchPattern: pattern}}}}}},
	}
}

// TestStoreRefusesPoliciesBeyondItsLimit: at the limit a new policy is refused
// with a *PolicyLimitError (replacing one is fine), and a batch that would
// end beyond the limit applies nothing.
func TestStoreRefusesPoliciesBeyondItsLimit(t *testing.T) {
	s := policy.NewStore()
	s.SetPolicyLimit(3)
	for i := 0; i < 3; i++ {
		if err := s.UpsertClusterFirewallPolicy(denyPolicy(fmt.Sprintf("p%d", i), "*.a.example")); err != nil {
			t.Fatal(err)
		}
	}
	var le *policy.PolicyLimitError
	if err := s.UpsertClusterFirewallPolicy(denyPolicy("p3", "*.a.example")); !errors.As(err, &le) || le.Limit != 3 || le.Policy.Name != "p3" {
		t.Fatalf("fourth policy: %v", err)
	}
	if err := s.UpsertClusterFirewallPolicy(denyPolicy("p0", "*.b.example")); err != nil {
		t.Fatalf("replacing at the limit: %v", err)
	}
	if n := len(s.Policies()); n != 3 {
		t.Fatalf("%d policies, want 3", n)
	}

	var b policy.PolicyBatch
	b.DeletePolicy(policy.PolicyRef{Kind: policy.KindClusterFirewallPolicy, Name: "p1"})
	for _, name := range []string{"p1", "p4", "p5"} {
		if err := b.UpsertClusterFirewallPolicy(denyPolicy(name, "*.c.example")); err != nil {
			t.Fatal(err)
		}
	}
	gen := s.Generation()
	if err := s.ApplyPolicies(&b); !errors.As(err, &le) || le.Count != 5 || le.Policy.Name != "p4" {
		t.Fatalf("batch to 5 policies: %v", err)
	}
	if s.Generation() != gen || len(s.Policies()) != 3 {
		t.Fatalf("a refused batch changed the store (generation %d → %d, %d policies)", gen, s.Generation(), len(s.Policies()))
	}
	var ok policy.PolicyBatch
	ok.DeletePolicy(policy.PolicyRef{Kind: policy.KindClusterFirewallPolicy, Name: "p1"})
	ok.DeletePolicy(policy.PolicyRef{Kind: policy.KindClusterFirewallPolicy, Name: "p2"})
	for _, name := range []string{"p1", "p4"} {
		if err := ok.UpsertClusterFirewallPolicy(denyPolicy(name, "*.c.example")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.ApplyPolicies(&ok); err != nil {
		t.Fatalf("batch to 3 policies: %v", err)
	}
	if got := fmt.Sprint(s.Policies()); got != "[ClusterFirewallPolicy/p0 ClusterFirewallPolicy/p1 ClusterFirewallPolicy/p4]" {
		t.Fatalf("policies %s", got)
	}
	if s.Generation() != gen+1 {
		t.Fatalf("a batch moved the generation by %d, want 1", s.Generation()-gen)
	}
	e := policy.NewEngine(s, policy.Options{})
	if d := e.DecideLookup(policy.WorkloadKey{}, "x.c.example"); d.Reason != policy.ReasonNotWorkload {
		t.Fatalf("lookup by no workload: %+v", d)
	}

	s2 := policy.NewStore()
	if err := s2.UpsertClusterFirewallPolicy(denyPolicy("x", "*.a.example")); err != nil {
		t.Fatal(err)
	}
	s2.SetPolicyLimit(0) // the default
	var big policy.PolicyBatch
	for i := 0; i < policy.MaxPolicies; i++ {
		if err := big.UpsertClusterFirewallPolicy(denyPolicy(fmt.Sprintf("b%d", i), "*.a.example")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s2.ApplyPolicies(&big); !errors.As(err, &le) || le.Limit != policy.MaxPolicies {
		t.Fatalf("MaxPolicies+1: %v", err)
	}
}

// TestTruncate: short values are kept, long ones keep their beginning and end
// around their length, never split a UTF-8 character, and stay near
// MaxErrorValue bytes even for a megabyte.
func TestTruncate(t *testing.T) {
	short := strings.Repeat("a", policy.MaxErrorValue)
	if policy.Truncate(short) != short {
		t.Fatal("a value of MaxErrorValue bytes was changed")
	}
	mb := "start" + strings.Repeat("é", 1<<19) + "end"
	got := policy.Truncate(mb)
	if len(got) > policy.MaxErrorValue+40 || !strings.HasPrefix(got, "start") || !strings.HasSuffix(got, "end") ||
		!strings.Contains(got, fmt.Sprintf("(%d bytes)", len(mb))) || !utf8.ValidString(got) {
		t.Fatalf("Truncate(1 MB) = %q (%d bytes)", got, len(got))
	}
}

// TestValidationErrorIsBounded: a policy with a megabyte-long value and
// dozens of invalid peers gives an error of a few kilobytes that names
// the first problems and counts the rest.
func TestValidationErrorIsBounded(t *testing.T) {
	mb := strings.Repeat("v", 1<<20)
	p := denyPolicy("a", "*.a.example")
	p.Spec.Subject.NamespaceSelector = metav1.LabelSelector{MatchLabels: map[string]string{"team": mb}}
	for i := 0; i < 40; i++ {
		p.Spec.Egress = append(p.Spec.Egress, policy.Rule{Action: policy.ActionDeny, To: []policy.Peer{{CIDR: mb}}})
	}
	err := policy.ValidateClusterFirewallPolicy(p)
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	if len(msg) > 8000 || !strings.Contains(msg, "not a CIDR") || !strings.Contains(msg, "more") {
		t.Fatalf("%d-byte error: %.1000s", len(msg), msg)
	}
}

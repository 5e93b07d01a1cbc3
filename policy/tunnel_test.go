package policy_test

import (
	"testing"

	"github.com/egressd/egressd/policy"
)

// TestTunnelDetectionPrecedence checks which policy's spec.tunnelDetection
// applies to a workload: Admin over namespaced over Baseline, the strictest
// within a tier, Audit-mode policies ignored, unset when none selects it.
func TestTunnelDetectionPrecedence(t *testing.T) {
	const yaml = `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: admin-z}
spec:
  tier: Admin
  priority: 5
  subject: {namespaceSelector: {matchLabels: {ns: z}}}
  tunnelDetection: "Off"
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: baseline-all}
spec:
  tier: Baseline
  priority: 5
  subject: {namespaceSelector: {}}
  tunnelDetection: Alert
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: x-all, namespace: x}
spec:
  podSelector: {}
  tunnelDetection: Alert
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: x-a, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  tunnelDetection: Block
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: x-b-off, namespace: x}
spec:
  podSelector: {matchLabels: {pod: b}}
  tunnelDetection: "Off"
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: z-block, namespace: z}
spec:
  podSelector: {}
  tunnelDetection: Block
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: y-audit, namespace: y}
spec:
  mode: Audit
  podSelector: {}
  tunnelDetection: Block
`
	e := loadEngine(t, yaml, policy.Options{}, nil)
	for _, tc := range []struct {
		w, want, by string
	}{
		{"x/a", "Block", "FirewallPolicy/x/x-a"},   // strictest namespaced
		{"x/b", "Alert", "FirewallPolicy/x/x-all"}, // Alert beats Off
		{"x/c", "Alert", "FirewallPolicy/x/x-all"},
		{"y/a", "Alert", "ClusterFirewallPolicy/baseline-all"}, // Audit ignored, Baseline applies
		{"z/a", "Off", "ClusterFirewallPolicy/admin-z"},        // Admin overrides namespaced Block
	} {
		k, err := policy.ParseWorkloadKey(tc.w)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // second call is served from the cache
			got, ok := e.TunnelDetection(k)
			if !ok || string(got.Action) != tc.want || got.Policy.String() != tc.by {
				t.Errorf("%s: %+v %v, want %s by %s", tc.w, got, ok, tc.want, tc.by)
			}
		}
	}
	if got, ok := e.TunnelDetection(policy.WorkloadKey{Namespace: "nope", Name: "p"}); ok {
		t.Errorf("unknown workload: %+v, want unset", got)
	}
	// Deleting the Baseline policy leaves y unset; the cache follows the store.
	e.Store().DeletePolicy(policy.PolicyRef{Kind: policy.KindClusterFirewallPolicy, Name: "baseline-all"})
	if got, ok := e.TunnelDetection(policy.WorkloadKey{Namespace: "y", Name: "a"}); ok {
		t.Errorf("y/a after delete: %+v, want unset", got)
	}
	empty := loadEngine(t, "", policy.Options{}, nil)
	if got, ok := empty.TunnelDetection(policy.WorkloadKey{Namespace: "x", Name: "a"}); ok {
		t.Errorf("no policies: %+v, want unset", got)
	}
}

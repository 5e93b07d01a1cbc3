package manifest

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkDecodePolicies decodes a file of 1,000 ClusterFirewallPolicies
// with an FQDN rule each (the shape of docs/policy.md's size example): the
// cost of the CRD-schema check and the line map in file mode.
func BenchmarkDecodePolicies(b *testing.B) {
	var doc strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&doc, "---\napiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: p%d}\nspec:\n  tier: Admin\n  priority: %d\n  subject: {namespaceSelector: {matchLabels: {team: t%d}}}\n  egress:\n  - action: Deny\n    to: [{fqdn: {matchPattern: \"*.pool%d.example\"}}]\n    ports: [{port: 443, protocol: TCP}]\n", i, i%1000, i%10, i)
	}
	data := doc.String()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		objs, err := Decode("bench", strings.NewReader(data))
		if err != nil || len(objs) != 1000 {
			b.Fatal(len(objs), err)
		}
	}
}

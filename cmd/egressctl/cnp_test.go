package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExplainClusterNetworkPolicy: explain names the ClusterNetworkPolicy and
// the rule (by its name) that decided, with the upstream action name.
func TestExplainClusterNetworkPolicy(t *testing.T) {
	const pol, wl = "testdata/cnp/platform.yaml", "../../deploy/examples/workloads.yaml"
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"--to-ip", "1.2.3.4", "--port", "443"}, []string{"Verdict:     Deny", "policy:    ClusterNetworkPolicy/platform", "rule:      default-deny (Deny)"}},
		{[]string{"--to-name", "api.stripe.com"}, []string{"Verdict:     Allow", "rule:      allowed-domains (Accept)", "sets:      ClusterNetworkPolicy/platform#allowed-domains"}},
		{[]string{"--to-name", "stripe.com"}, []string{"Verdict:     Allow", "no-matching-fqdn"}}, // the apex is not *.stripe.com
	}
	for _, c := range cases {
		out, errOut, code := runCmd(t, append([]string{"explain", "-f", pol, "--workloads", wl, "--from", "payments/gateway-0"}, c.args...)...)
		if code != exitOK {
			t.Fatalf("%v: code %d, stderr %s", c.args, code, errOut)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", c.args, w, out)
			}
		}
	}
}

// TestValidateClusterNetworkPolicy: validate rejects domainNames outside an
// Accept rule with the field path.
func TestValidateClusterNetworkPolicy(t *testing.T) {
	f := filepath.Join(t.TempDir(), "bad.yaml")
	doc := `apiVersion: policy.networking.k8s.io/v1beta1
kind: ClusterNetworkPolicy
metadata: {name: bad}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {}}
  egress:
  - {action: Deny, to: [{domainNames: [evil.example]}]}
`
	if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCmd(t, "validate", "-f", f)
	if code == exitOK || !strings.Contains(out+errOut, "spec.egress[0].to[0].domainNames") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestConvertClusterNetworkPolicy: convert --to egressd gives a
// ClusterFirewallPolicy that validates, --to clusternetworkpolicy brings it
// back; an FQDN Deny is refused with its field.
func TestConvertClusterNetworkPolicy(t *testing.T) {
	out, errOut, code := runCmd(t, "convert", "--to", "egressd", "-f", "testdata/cnp/platform.yaml")
	if code != exitOK || !strings.Contains(out, "kind: ClusterFirewallPolicy") || !strings.Contains(out, "matchPattern: '**.stripe.com'") {
		t.Fatalf("code %d, stdout %s, stderr %s", code, out, errOut)
	}
	f := filepath.Join(t.TempDir(), "cfp.yaml")
	if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := runCmd(t, "validate", "-f", f); code != exitOK {
		t.Fatalf("converted policy does not validate: %s", errOut)
	}
	back, errOut, code := runCmd(t, "convert", "--to", "clusternetworkpolicy", "-f", f)
	if code != exitOK || !strings.Contains(back, "- '*.stripe.com'") || !strings.Contains(back, "action: Accept") {
		t.Fatalf("back: code %d, stdout %s, stderr %s", code, back, errOut)
	}
	deny := filepath.Join(t.TempDir(), "deny.yaml")
	if err := os.WriteFile(deny, []byte(`apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-mining}
spec:
  tier: Admin
  priority: 1
  subject: {namespaceSelector: {}}
  egress:
  - {action: Deny, to: [{fqdn: {matchPattern: "*.minepool.com"}}]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = runCmd(t, "convert", "--to", "clusternetworkpolicy", "-f", deny)
	if code != exitFail || out != "" || !strings.Contains(errOut, "spec.egress[0].to[0].fqdn: an FQDN Deny rule") {
		t.Fatalf("FQDN Deny: code %d, stdout %q, stderr %q", code, out, errOut)
	}
}

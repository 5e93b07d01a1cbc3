package egress_test

import (
	"strings"
	"testing"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// TestRenderDenyNamesSet: a Deny rule with exact names drops the addresses of
// its pre-resolved set (fqd_<rule>, plain addresses with timeouts) besides
// the (pod, answer) pairs of its FQDN set; a rule with wildcards only, and an
// Allow rule with the same exact name, get no such set.
func TestRenderDenyNamesSet(t *testing.T) {
	out := render(t, nil,
		admin("deny-exact", 10, "  - action: Deny\n    to: [{fqdn: {matchName: pool.minepool.test}}, {fqdn: {matchPattern: '*.wild.test'}}]\n    ports: [{port: 443}]\n"),
		admin("deny-wild", 20, "  - action: Deny\n    to: [{fqdn: {matchPattern: '*.minepool.test'}}]\n"),
		admin("allow-exact", 30, "  - action: Allow\n    to: [{fqdn: {matchName: api.example.test}}]\n"),
	)
	ref := policy.RuleRef{Policy: policy.PolicyRef{Kind: policy.KindClusterFirewallPolicy, Name: "deny-exact"}, Rule: "egress[0]"}
	id := policy.RuleID(ref)
	for _, fam := range []ipset.Family{ipset.IPv4, ipset.IPv6} {
		name := egress.DenySetName(id, fam)
		body, ok := block(out, "set", name)
		if !ok {
			t.Fatalf("no set %s:\n%s", name, out)
		}
		typ := map[ipset.Family]string{ipset.IPv4: "ipv4_addr", ipset.IPv6: "ipv6_addr"}[fam]
		if !strings.Contains(body, "type "+typ) || !strings.Contains(body, "flags timeout") {
			t.Errorf("set %s: %s, want type %s with timeouts", name, body, typ)
		}
		kw := map[ipset.Family]string{ipset.IPv4: "ip", ipset.IPv6: "ip6"}[fam]
		if !strings.Contains(out, kw+" daddr @"+name+" meta l4proto tcp th dport 443 counter") {
			t.Errorf("no rule dropping %s daddr @%s on TCP 443:\n%s", kw, name, out)
		}
	}
	if got := names(out, "set", `fqd_[A-Za-z0-9_]+`); len(got) != 2 {
		t.Errorf("pre-resolved sets %v, want the two of deny-exact only (no wildcard-only or Allow rule)", got)
	}
	if got := names(out, "set", `fq_[A-Za-z0-9_]+`); len(got) != 6 {
		t.Errorf("FQDN pair sets %v, want 2 per rule (3 rules)", got)
	}
}

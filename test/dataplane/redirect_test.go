package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/test/scenarios"
)

// TestFullApplyKeepsTheL7Redirect: the transparent proxy's redirect lives in the
// enforcer's table; a full apply (adoption by a restarted enforcer) must not
// remove it, or connections would bypass the proxy until it is re-installed.
func TestFullApplyKeepsTheL7Redirect(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	s, err := newSession(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	plan, ch, eng, err := s.load(&scenarios.Scenario{Name: "redirect", Policies: []string{fmt.Sprintf(ingressYA, portsYAML(80))}})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	if err := h.enf.Apply(ctx, plan, ch); err != nil {
		t.Fatal(err)
	}
	err = egress.ApplyRedirect(egress.Redirect{NetNS: h.node.Fd(), To4: netip.MustParseAddrPort("169.254.20.10:15001"),
		Sources: []netip.Addr{h.byName["x/a"].IPv4}})
	if err != nil {
		t.Fatal(err)
	}
	restarted := h.newEnforcer(egress.WithRevocation(h.decide))
	if err := restarted.Apply(ctx, plan, policy.Changes{Full: true}); err != nil {
		t.Fatal(err)
	}
	rs := h.ruleset()
	if !strings.Contains(rs, "chain "+egress.RedirectChain) || !strings.Contains(rs, h.byName["x/a"].IPv4.String()) {
		t.Fatalf("the redirect did not survive a full apply:\n%s", rs)
	}
}

package policy

import (
	"net/netip"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func dnsBypassPolicy(name string, tier Tier, prio int32, label string, d *DNSBypass) *ClusterFirewallPolicy {
	p := &ClusterFirewallPolicy{Spec: ClusterFirewallPolicySpec{Tier: tier, Priority: prio,
		Subject:   Subject{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": label}}},
		DNSBypass: d}}
	p.Name = name
	return p
}

func TestDNSBypassValidation(t *testing.T) {
	for _, d := range []*DNSBypass{
		{Action: "Maybe"},
		{Resolvers: []string{"10.0.0.1/8"}},
		{Resolvers: []string{"not-a-cidr"}},
		{Resolvers: []string{strings.Repeat("1", 5000)}},
		{Resolvers: make([]string, MaxDNSBypassResolvers+1)},
	} {
		_, err := compileClusterFirewallPolicy(dnsBypassPolicy("p", TierAdmin, 1, "a", d))
		if err == nil {
			t.Errorf("%+v: accepted", d)
		} else if len(err.Error()) > 1000 {
			t.Errorf("error echoes a huge value (%d bytes)", len(err.Error()))
		}
	}
	cp, err := compileClusterFirewallPolicy(dnsBypassPolicy("p", TierAdmin, 1, "a",
		&DNSBypass{Action: DNSBypassDrop, Resolvers: []string{"10.0.0.0/8", "2001:db8::/32", "10.0.0.0/8"}}))
	if err != nil {
		t.Fatal(err)
	}
	if cp.dnsBypass.action != DNSBypassDrop || len(cp.dnsBypass.resolvers) != 2 {
		t.Fatalf("%+v", cp.dnsBypass)
	}
}

// TestDNSBypassPrecedence: Admin before Baseline, lower priority first, then
// the name; Audit-mode policies never decide; the compiled plan and the
// engine agree, and a change reaches the plan as a workload change.
func TestDNSBypassPrecedence(t *testing.T) {
	s := NewStore()
	if err := s.UpsertNamespace(Namespace{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertWorkload(Workload{Namespace: "x", Name: "w", Labels: map[string]string{"app": "a"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.5")}}); err != nil {
		t.Fatal(err)
	}
	key := WorkloadKey{Namespace: "x", Name: "w"}
	comp := NewCompiler(s, Options{})
	eng := NewEngine(s, Options{})
	check := func(want DNSBypassAction, wantPolicy string) {
		t.Helper()
		plan, _ := comp.Compile()
		got := plan.Workloads[key].DNSBypass
		if got.Action != want || got.Policy.Name != wantPolicy {
			t.Errorf("plan: %+v, want %s from %q", got, want, wantPolicy)
		}
		if e := eng.DNSBypass(key); !e.Equal(got) {
			t.Errorf("engine %+v != plan %+v", e, got)
		}
	}
	check("", "")
	upsert := func(p *ClusterFirewallPolicy) {
		t.Helper()
		if err := s.UpsertClusterFirewallPolicy(p); err != nil {
			t.Fatal(err)
		}
	}
	upsert(dnsBypassPolicy("base", TierBaseline, 1, "a", &DNSBypass{Action: DNSBypassAllow}))
	check(DNSBypassAllow, "base")
	upsert(dnsBypassPolicy("adm-b", TierAdmin, 50, "a", &DNSBypass{Action: DNSBypassDrop}))
	check(DNSBypassDrop, "adm-b")
	upsert(dnsBypassPolicy("adm-a", TierAdmin, 50, "a", &DNSBypass{Action: DNSBypassRedirect}))
	check(DNSBypassRedirect, "adm-a")
	audit := dnsBypassPolicy("adm-0", TierAdmin, 0, "a", &DNSBypass{Action: DNSBypassAllow})
	audit.Spec.Mode = ModeAudit
	upsert(audit)
	check(DNSBypassRedirect, "adm-a")
	upsert(dnsBypassPolicy("other", TierAdmin, 0, "b", &DNSBypass{Action: DNSBypassAllow}))
	check(DNSBypassRedirect, "adm-a")
	s.DeletePolicy(PolicyRef{Kind: KindClusterFirewallPolicy, Name: "adm-a"})
	check(DNSBypassDrop, "adm-b")
}

func TestDecideSideDoor(t *testing.T) {
	self := netip.MustParseAddr("169.254.20.10")
	isSelf := func(a netip.Addr) bool { return a == self }
	isDoH := func(a netip.Addr) bool { return a == netip.MustParseAddr("1.1.1.1") }
	src := netip.MustParseAddr("10.0.0.5")
	conn := func(dst string, port int32, p Protocol) Connection {
		return Connection{Src: src, Dst: netip.MustParseAddr(dst), Port: port, Protocol: p}
	}
	n := DNSBypassNode{ExemptNamespaces: []string{"kube-system"}}
	red := n.Effective("x", DNSBypassSetting{})
	drop := DNSBypassSetting{Action: DNSBypassDrop, Policy: PolicyRef{Kind: KindClusterFirewallPolicy, Name: "d"}}
	exempt := n.Effective("kube-system", DNSBypassSetting{})
	own := DNSBypassSetting{Action: DNSBypassRedirect, Resolvers: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}
	for _, c := range []struct {
		c    Connection
		s    DNSBypassSetting
		n    DNSBypassNode
		v6   bool
		door SideDoor
		want SideDoorVerdict
	}{
		{conn("8.8.8.8", 53, ProtocolUDP), red, n, true, SideDoorDNS, SideDoorRedirected},
		{conn("8.8.8.8", 53, ProtocolTCP), red, n, false, SideDoorDNS, SideDoorDropped}, // no address of the family
		{conn("8.8.8.8", 53, ProtocolUDP), drop, n, true, SideDoorDNS, SideDoorDropped},
		{conn("8.8.8.8", 53, ProtocolUDP), exempt, n, true, SideDoorDNS, SideDoorPass},
		{conn("169.254.20.10", 53, ProtocolUDP), red, n, true, SideDoorNone, SideDoorPass},
		{conn("8.8.8.8", 853, ProtocolTCP), red, n, true, SideDoorDoT, SideDoorDropped},
		{conn("8.8.8.8", 853, ProtocolUDP), red, n, true, SideDoorDoQ, SideDoorDropped},
		{conn("8.8.8.8", 853, ProtocolUDP), red, DNSBypassNode{AllowEncrypted: true}, true, SideDoorDoQ, SideDoorPass},
		{conn("1.1.1.1", 443, ProtocolTCP), red, n, true, SideDoorDoH, SideDoorDropped},
		{conn("1.1.1.1", 443, ProtocolUDP), red, n, true, SideDoorDoH, SideDoorDropped},
		{conn("1.1.1.1", 53, ProtocolUDP), red, n, true, SideDoorDNS, SideDoorRedirected},
		{conn("1.1.1.2", 443, ProtocolTCP), red, n, true, SideDoorNone, SideDoorPass},
		{conn("1.1.1.1", 443, ProtocolSCTP), red, n, true, SideDoorNone, SideDoorPass},
		{conn("10.9.1.1", 53, ProtocolUDP), own, n, true, SideDoorDNS, SideDoorPass},
		{conn("10.9.1.1", 853, ProtocolTCP), own, n, true, SideDoorDoT, SideDoorPass},
		{conn("10.8.1.1", 853, ProtocolTCP), own, n, true, SideDoorDoT, SideDoorDropped},
	} {
		d := DecideSideDoor(c.c, c.s, c.n, isSelf, isDoH, c.v6)
		if d.Door != c.door || d.Verdict != c.want || d.Reason == "" && d.Door != SideDoorNone {
			t.Errorf("%v %+v: %+v, want %s %s", c.c, c.s, d, c.door, c.want)
		}
	}
}

package scenarios

import (
	"strings"
	"testing"
)

// TestScenariosMatchEngine checks every scenario's truth tables against
// policy.Engine.Decide, cell by cell, and prints the differing tables.
func TestScenariosMatchEngine(t *testing.T) {
	all := All()
	upstream := 0
	names := map[string]bool{}
	for _, s := range all {
		if names[s.Name] {
			t.Errorf("scenario name %q twice", s.Name)
		}
		names[s.Name] = true
		if s.Upstream != "" {
			upstream++
		}
	}
	if upstream < 25 || len(all) < 30 {
		t.Errorf("%d scenarios, %d upstream; want at least 30 and 25", len(all), upstream)
	}
	for _, s := range all {
		t.Run(s.Name, func(t *testing.T) {
			want, err := s.Expected()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Actual(s)
			if err != nil {
				t.Fatal(err)
			}
			if d := Diff(want, got); len(d) > 0 {
				t.Errorf("%d cell(s) differ from the expected tables; first: %v\n%s", len(d), d[0], Format(want, got, s.Endpoints()))
			}
		})
	}
}

func TestParseTableErrors(t *testing.T) {
	eps := Endpoints()
	good := FormatTable(Reachability{}, eps, 80, TCP, IPv4)
	good = strings.ReplaceAll(good, "?", ".")
	if _, err := ParseTable(good, eps); err != nil {
		t.Fatalf("formatted table does not parse: %v\n%s", err, good)
	}
	cases := map[string]string{
		"empty":        "",
		"short row":    strings.Replace(good, "x/a .   .", "x/a .", 1),
		"bad cell":     strings.Replace(good, "y/b .", "y/b x", 1),
		"missing row":  good[:strings.LastIndex(good, "z/c")],
		"unknown name": strings.Replace(good, "z/c", "q/q", 1),
	}
	for name, text := range cases {
		if _, err := ParseTable(text, eps); err == nil {
			t.Errorf("%s: parsed without error:\n%s", name, text)
		}
	}
}

func TestExpectedCoversEveryPortProtocolFamily(t *testing.T) {
	s := Upstream()[0]
	s.Expect = s.Expect[:0]
	if _, err := s.Expected(); err == nil {
		t.Error("a scenario without tables was accepted")
	}
	s = Upstream()[0]
	s.Expect = append(s.Expect, s.Expect[0])
	if _, err := s.Expected(); err == nil {
		t.Error("a cell covered twice was accepted")
	}
}

func TestFormatMarksDifferences(t *testing.T) {
	s := Upstream()[0]
	want, err := s.Expected()
	if err != nil {
		t.Fatal(err)
	}
	got := Reachability{}
	for c, v := range want {
		got[c] = v
	}
	c := Cell{From: "y/a", To: "x/b", Port: 81, Protocol: UDP, Family: IPv6}
	got[c] = !got[c]
	d := Diff(want, got)
	if len(d) != 1 || d[0] != c {
		t.Fatalf("diff: %v", d)
	}
	out := Format(want, got, s.Endpoints())
	if !strings.Contains(out, "IPv6 UDP/81: 1 cell(s) differ") || !strings.Contains(out, ".*") || strings.Contains(out, "TCP/80") {
		t.Errorf("format:\n%s", out)
	}
	if n := len(WithoutLoopback(want)); n != len(want)-9*12 {
		t.Errorf("WithoutLoopback kept %d of %d cells", n, len(want))
	}
}

// TestRandomScenariosAreValidAndDeterministic decodes and loads many random
// scenarios (every policy must validate) and checks that a seed always gives the
// same scenario and that the generator covers every kind, tier and mode.
func TestRandomScenariosAreValidAndDeterministic(t *testing.T) {
	seen := map[string]bool{}
	for seed := int64(0); seed < 300; seed++ {
		s := Random(seed)
		if again := Random(seed); strings.Join(again.Policies, "---\n") != strings.Join(s.Policies, "---\n") || len(again.Lookups) != len(s.Lookups) {
			t.Fatalf("seed %d: not deterministic", seed)
		}
		objs, err := s.Objects()
		if err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, strings.Join(s.Policies, "---\n"))
		}
		if len(objs) != len(s.Policies) {
			t.Fatalf("seed %d: %d objects from %d documents", seed, len(objs), len(s.Policies))
		}
		if _, err := Engine(s); err != nil {
			t.Fatalf("seed %d: %v\n%s", seed, err, strings.Join(s.Policies, "---\n"))
		}
		all := strings.Join(s.Policies, "\n")
		for _, w := range []string{"kind: NetworkPolicy", "kind: FirewallPolicy", "kind: ClusterFirewallPolicy", "tier: Admin", "tier: Baseline",
			"action: Pass", "action: Deny", "mode: Audit", "endPort", "serve-8", "except", "fqdn", "ingress: []", "egress: []", "policyTypes",
			"operator: NotIn", "operator: Exists", "operator: DoesNotExist", "lookups: Enforce", "protocol: SCTP", "protocol: UDP"} {
			if strings.Contains(all, w) {
				seen[w] = true
			}
		}
	}
	for _, w := range []string{"kind: NetworkPolicy", "kind: FirewallPolicy", "kind: ClusterFirewallPolicy", "tier: Admin", "tier: Baseline",
		"action: Pass", "action: Deny", "mode: Audit", "endPort", "serve-8", "except", "fqdn", "ingress: []", "egress: []", "policyTypes",
		"operator: NotIn", "operator: Exists", "operator: DoesNotExist", "lookups: Enforce", "protocol: SCTP", "protocol: UDP"} {
		if !seen[w] {
			t.Errorf("300 random scenarios never contain %q", w)
		}
	}
}

// TestRandomScenarioVerdictsVary makes sure random scenarios are not trivially
// all-allow: across seeds, a good share of cells is denied.
func TestRandomScenarioVerdictsVary(t *testing.T) {
	denied, total := 0, 0
	for seed := int64(0); seed < 40; seed++ {
		got, err := Actual(Random(seed))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range got {
			total++
			if !v {
				denied++
			}
		}
	}
	if denied*10 < total || denied*10 > total*9 {
		t.Errorf("%d of %d random cells denied; want between 10%% and 90%%", denied, total)
	}
}

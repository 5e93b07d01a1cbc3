package egress_test

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// These tests check the rendering (Enforcer.Render) of small plans; they need
// no kernel and no root.

// renderWorkloads: namespace x (ns=x) with pods a (10.0.0.1, fd00::1) and b
// (10.0.0.2), namespace y with pod a (10.0.1.1); every pod has the named port
// http = TCP 8080.
func renderWorkloads() *policy.Workloads {
	ports := []policy.NamedPort{{Name: "http", Port: 8080, Protocol: policy.ProtocolTCP}}
	return &policy.Workloads{
		Namespaces: []policy.Namespace{{Name: "x", Labels: map[string]string{"ns": "x"}}, {Name: "y", Labels: map[string]string{"ns": "y"}}},
		Pods: []policy.Workload{
			{Namespace: "x", Name: "a", Labels: map[string]string{"pod": "a"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}, Ports: ports},
			{Namespace: "x", Name: "b", Labels: map[string]string{"pod": "b"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Ports: ports},
			{Namespace: "y", Name: "a", Labels: map[string]string{"pod": "a"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.1.1")}, Ports: ports},
		},
	}
}

func render(t *testing.T, opts []egress.Option, docs ...string) string {
	t.Helper()
	objs, err := manifest.Decode("test", strings.NewReader(strings.Join(docs, "---\n")))
	if err != nil {
		t.Fatal(err)
	}
	st, err := manifest.LoadStore(objs, renderWorkloads())
	if err != nil {
		t.Fatal(err)
	}
	plan, _ := policy.NewCompiler(st, policy.Options{}).Compile()
	e, err := egress.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e.Render(plan)
}

// block returns the body of "chain NAME {" / "set NAME {" / "map NAME {".
func block(out, kind, name string) (string, bool) {
	start := "\t" + kind + " " + name + " {\n"
	i := strings.Index(out, start)
	if i < 0 {
		return "", false
	}
	rest := out[i+len(start):]
	return rest[:strings.Index(rest, "\n\t}\n")], true
}

// names returns the names of the chains (kind "chain") or sets matching re.
func names(out, kind, re string) []string {
	var ns []string
	r := regexp.MustCompile(`(?m)^\t` + kind + ` (` + re + `) \{$`)
	for _, m := range r.FindAllStringSubmatch(out, -1) {
		ns = append(ns, m[1])
	}
	return ns
}

func admin(name string, prio int, rules string) string {
	return `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: ` + name + `}
spec:
  tier: Admin
  priority: ` + strconv.Itoa(prio) + `
  subject: {namespaceSelector: {matchLabels: {ns: x}}}
  egress:
` + rules
}

func TestRenderEqualPriorityGroupUsesCheckChains(t *testing.T) {
	out := render(t, nil,
		admin("deny-meta", 10, "  - action: Deny\n    to: [{cidr: 169.254.169.254/32}]\n"),
		admin("allow-web", 10, "  - action: Allow\n    to: [{cidr: 192.0.2.0/24}]\n    ports: [{port: 443}]\n"),
	)
	adm := names(out, "chain", `adm_e_[a-z0-9]+`)
	if len(adm) != 1 {
		t.Fatalf("admin chains %v, want one shared by x/a and x/b\n%s", adm, out)
	}
	body, _ := block(out, "chain", adm[0])
	jumps := regexp.MustCompile(`jump (\S+)`).FindAllStringSubmatch(body, -1)
	var kinds []string
	for _, j := range jumps {
		kinds = append(kinds, j[1][strings.LastIndex(j[1], "_")+1:])
	}
	// Deny checks first, then allow checks; no pass checks (no Pass rule), no
	// ordered chains (a group of two).
	if strings.Join(kinds, ",") != "d,a" {
		t.Errorf("admin chain jumps to %v, want the deny check then the allow check:\n%s", kinds, body)
	}
	if !strings.Contains(body, "ip saddr vmap @egp_v4") || !strings.Contains(body, "ip6 saddr vmap @egp_v6") {
		t.Errorf("admin chain does not end in the pass maps:\n%s", body)
	}
	if got := names(out, "chain", `pol_e_[a-z0-9]+`); len(got) != 0 {
		t.Errorf("ordered policy chains %v rendered for a group of two", got)
	}
	if got := names(out, "chain", `pol_i_\S+`); len(got) != 0 {
		t.Errorf("ingress chains %v rendered for egress-only policies", got)
	}
	// A single address is matched inline, without a set.
	if !strings.Contains(out, "ip daddr 169.254.169.254 counter log group <N> drop") {
		t.Errorf("single address not inline:\n%s", out)
	}
	if got := names(out, "set", `r4_\S+`); len(got) != 0 {
		t.Errorf("prefix sets %v, want none (single ranges are inline)", got)
	}
}

func TestRenderSingletonGroupUsesOrderedChain(t *testing.T) {
	out := render(t, nil,
		admin("deny-meta", 10, "  - action: Deny\n    to: [{cidr: 169.254.169.254/32}]\n  - action: Allow\n    to: [{cidr: 10.0.0.0/8}]\n"),
	)
	ord := names(out, "chain", `pol_e_[a-z0-9]+`)
	if len(ord) != 1 {
		t.Fatalf("ordered chains %v, want 1\n%s", ord, out)
	}
	if got := names(out, "chain", `pol_e_[a-z0-9]+_(d|a|p)`); len(got) != 0 {
		t.Errorf("check chains %v rendered for a group of one", got)
	}
	body, _ := block(out, "chain", ord[0])
	if !strings.Contains(body, "drop") || !strings.Contains(body, "ip daddr 10.0.0.0-10.255.255.255 accept") {
		t.Errorf("ordered chain:\n%s", body)
	}
}

func TestRenderPassGoesThroughPassMap(t *testing.T) {
	out := render(t, nil,
		admin("pass-pods", 20, "  - action: Pass\n    to: [{cidr: 10.0.0.0/16}]\n"),
		`apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: only-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress:
  - action: Allow
    to: [{namespaces: {matchLabels: {ns: "y"}}}]
`)
	ord := names(out, "chain", `pol_e_[a-z0-9]+`)
	if len(ord) != 1 {
		t.Fatalf("ordered chains %v\n%s", ord, out)
	}
	body, _ := block(out, "chain", ord[0])
	if !strings.Contains(body, "ip daddr 10.0.0.0-10.0.255.255 ip saddr vmap @egp_v4") {
		t.Errorf("pass rule does not go through the pass map:\n%s", body)
	}
	egp, _ := block(out, "map", "egp_v4")
	// x/a's rest is its namespaced program, x/b's the default.
	a := regexp.MustCompile(`10\.0\.0\.1 : goto (prog_e_[a-z0-9]+)`).FindStringSubmatch(egp)
	b := regexp.MustCompile(`10\.0\.0\.2 : goto (prog_e_[a-z0-9]+)`).FindStringSubmatch(egp)
	if a == nil || b == nil || a[1] == b[1] {
		t.Fatalf("pass map:\n%s", egp)
	}
	rest, _ := block(out, "chain", a[1])
	if !strings.Contains(rest, "_na") || strings.Contains(rest, "_nd") || !strings.Contains(rest, `drop comment "isolated"`) {
		t.Errorf("x/a's rest chain (no _nd without Deny rules):\n%s", rest)
	}
	if def, _ := block(out, "chain", b[1]); strings.TrimSpace(def) != "accept" {
		t.Errorf("x/b's rest chain: %q", def)
	}
	// Pods of y have no policy: no map entry (the default allows).
	if eg, _ := block(out, "map", "eg_v4"); strings.Contains(eg, "10.0.1.1") {
		t.Errorf("y/a in the dispatch map:\n%s", eg)
	}
}

func TestRenderPortsAndNamedPorts(t *testing.T) {
	out := render(t, nil, `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - action: Allow
    from: [{pods: {podSelector: {matchLabels: {pod: b}}}}]
    ports: [{port: 80}, {port: 81}, {port: 53, protocol: UDP}, {port: 9000, endPort: 9100, protocol: SCTP}]
  - action: Allow
    ports: [{port: http}]
`)
	if !strings.Contains(out, "ip saddr 10.0.0.2 meta l4proto . th dport { tcp . 80-81, udp . 53, sctp . 9000-9100 } accept") {
		t.Errorf("port list not one anonymous set:\n%s", out)
	}
	np := names(out, "set", `np4_\S+`)
	if len(np) != 1 {
		t.Fatalf("named-port sets %v\n%s", np, out)
	}
	body, _ := block(out, "set", np[0])
	if !strings.Contains(body, "type ipv4_addr . inet_proto . inet_service") || !strings.Contains(body, "10.0.0.1 . tcp . 8080") {
		t.Errorf("named-port set:\n%s", body)
	}
	if !strings.Contains(out, "ip daddr . meta l4proto . th dport @"+np[0]+" accept") {
		t.Errorf("named-port rule missing:\n%s", out)
	}
	if got := names(out, "set", `np6_\S+`); len(got) != 1 {
		t.Errorf("IPv6 named-port sets %v (x/a has fd00::1)", got)
	}
}

func TestRenderSharedPrefixSets(t *testing.T) {
	pol := func(name string) string {
		return `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: ` + name + `, namespace: x}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{cidr: 192.0.2.0/24}, {cidr: 198.51.100.0/24}]
`
	}
	out := render(t, nil, pol("one"), pol("two"))
	if got := names(out, "set", `r4_\S+`); len(got) != 1 {
		t.Errorf("prefix sets %v, want one shared by both policies\n%s", got, out)
	}
}

func TestRenderDefaultDeny(t *testing.T) {
	out := render(t, []egress.Option{egress.WithDefaultVerdict(policy.Deny)}, admin("allow-web", 10, "  - action: Allow\n    to: [{cidr: 192.0.2.0/24}]\n"))
	eg, _ := block(out, "map", "eg_v4")
	if !strings.Contains(eg, "10.0.1.1 : drop") {
		t.Errorf("y/a (no policy) not dropped by the dispatch map:\n%s", eg)
	}
	egp, _ := block(out, "map", "egp_v4")
	rest := regexp.MustCompile(`10\.0\.0\.1 : goto (prog_e_[a-z0-9]+)`).FindStringSubmatch(egp)
	if rest == nil {
		t.Fatalf("pass map:\n%s", egp)
	}
	if body, _ := block(out, "chain", rest[1]); !strings.Contains(body, `counter log group <N> drop comment "default"`) {
		t.Errorf("rest chain does not end in the default drop:\n%s", body)
	}
}

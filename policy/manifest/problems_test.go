package manifest

import (
	"errors"
	"strings"
	"testing"
)

// problemsOf decodes data and validates what decoded: every problem, as
// "line N: field: reason" strings (file mode as egressctl validate and the
// agent's --policies see it).
func problemsOf(t *testing.T, data string) []string {
	t.Helper()
	objs, err := Decode("f.yaml", strings.NewReader(data))
	var out []string
	for _, leaf := range leavesOf(err) {
		if leaf == nil {
			continue
		}
		var p *Problem
		if !errors.As(leaf, &p) {
			t.Fatalf("not a *Problem: %T %v", leaf, leaf)
		}
		out = append(out, p.Error())
	}
	for i := range objs {
		if err := objs[i].Validate(); err != nil {
			out = append(out, objs[i].Source+": "+err.Error())
		}
	}
	return out
}

func wantProblems(t *testing.T, got []string, want ...string) {
	t.Helper()
	all := strings.Join(got, "\n")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("missing %q in:\n%s", w, all)
		}
	}
}

// TestYAML11BooleanInAnEnum: `tunnelDetection: Off` unquoted is the string
// "Off" in YAML 1.2 but false for kubectl; file mode says to quote it.
func TestYAML11BooleanInAnEnum(t *testing.T) {
	doc := "apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: a, namespace: x}\nspec:\n  podSelector: {}\n  tunnelDetection: Off\n"
	got := problemsOf(t, doc)
	wantProblems(t, got, `f.yaml:1: line 6: FirewallPolicy/x/a: spec.tunnelDetection: Invalid value: unquoted Off is a boolean in YAML 1.1`, `quote it, "Off"`)
	if got := problemsOf(t, strings.Replace(doc, "Off", `"Off"`, 1)); len(got) != 0 {
		t.Errorf("quoted: %v", got)
	}
	// A label value y stays a string (not an enum: YAML 1.2 reads it as "y").
	if got := problemsOf(t, strings.Replace(doc, "podSelector: {}", "podSelector: {matchLabels: {a: y}}", 1)); len(got) != 1 {
		t.Errorf("label value y: %v", got)
	}
}

// TestEveryProblemWithItsIndex: three bad matchExpressions give three
// problems, each with its index; a type error keeps its list index and does
// not hide the other problems; no Go struct is printed.
func TestEveryProblemWithItsIndex(t *testing.T) {
	got := problemsOf(t, `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: a, namespace: x}
spec:
  podSelector:
    matchExpressions:
    - {key: a, operator: Like, values: [b]}
    - {key: b, operator: Exists, values: [c]}
    - {key: "c d", operator: In, values: [e]}
`)
	wantProblems(t, got,
		"spec.podSelector.matchExpressions[0].operator: Invalid value: \"Like\"",
		"spec.podSelector.matchExpressions[1].values: Forbidden",
		"spec.podSelector.matchExpressions[2].key: Invalid value: \"c d\"")
	for _, g := range got {
		if strings.Contains(g, "LabelSelector{") || strings.Contains(g, "&") {
			t.Errorf("a Go value in %q", g)
		}
	}

	got = problemsOf(t, `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: a, namespace: x}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{cidr: 10.0.0.1/8}]
    ports:
    - port: 80
    - port: {number: 443}
    - port: 70000
  - action: Block
`)
	wantProblems(t, got,
		"line 11: FirewallPolicy/x/a: spec.egress[0].ports[1].port: Invalid value: \"object\": must be an integer or a string",
		"line 13: FirewallPolicy/x/a: spec.egress[1].action: Unsupported value: \"Block\"",
		"spec.egress[0].to[0].cidr: Invalid value: \"10.0.0.1/8\": host bits set",
		"spec.egress[0].ports[2].port: Invalid value: 70000")
}

// TestLinesAreTheFilesLines: in a multi-document file every line number is
// the file's, for syntax errors and field problems alike.
func TestLinesAreTheFilesLines(t *testing.T) {
	got := problemsOf(t, `# 1
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: a, namespace: x}
spec: {podSelector: {}}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: b, namespace: x}
spec:
  podSelector: {}
  egress: [{action: Allow, to: [{cidr: nope}]}]
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: c, namespace: x}
spec:
  podSelector: {}
  egress: [{action: Allow
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: d, namespace: x}
spec:
  podSelctor: {}
`)
	// go-yaml names the line before the broken flow mapping: line 5 of
	// document 3, which starts on line 14.
	var n struct{}
	alone := Unmarshal([]byte("apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: c, namespace: x}\nspec:\n  podSelector: {}\n  egress: [{action: Allow\n"), &n, false)
	if alone == nil || !strings.Contains(alone.Error(), "line 5:") {
		t.Fatalf("document 3 alone: %v", alone)
	}
	wantProblems(t, got,
		"f.yaml:3: line 18: not valid YAML: line 18:",
		"f.yaml:4: line 25: FirewallPolicy/x/d: spec.podSelctor: Unknown field: not part of FirewallPolicy (did you mean podSelector?)",
		"f.yaml:4: line 25: FirewallPolicy/x/d: spec.podSelector: Required value")
	// Validation problems of a decoded object: the line of the field.
	objs, _ := Decode("f.yaml", strings.NewReader("apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: a, namespace: x}\nspec: {podSelector: {}}\n---\n# b\napiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: b, namespace: x}\nspec:\n  podSelector: {}\n  egress:\n  - action: Allow\n    to: [{cidr: nope}]\n"))
	if len(objs) != 2 || objs[1].FieldLine("spec.egress[0].to[0].cidr") != 14 || objs[1].Line != 7 || objs[1].FieldLine("spec.nothing") != 10 {
		t.Errorf("lines: %d objects; %+v", len(objs), objs)
	}
}

// TestForeignKinds: a Calico policy points to egressctl convert.
func TestForeignKinds(t *testing.T) {
	got := problemsOf(t, "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny}\nspec: {selector: all()}\n")
	wantProblems(t, got, "f.yaml:1: line 1: GlobalNetworkPolicy/deny: projectcalico.org/v3/GlobalNetworkPolicy is a Calico policy", "egressctl convert -f FILE")
}

// TestWorkloadsProblems: a bad IP or an unknown field of the workloads file
// names the pod and the line; a policy file passed as workloads says so.
func TestWorkloadsProblems(t *testing.T) {
	_, err := DecodeWorkloads("w.yaml", []byte(`namespaces: [{name: x}]
pods:
- namespace: x
  name: a
  ips: [10.0.0.1]
- namespace: x
  name: b
  ips: [10.0.0.300, 10.0.0.1]
  lables: {app: b}
`))
	got := []string{}
	for _, leaf := range leavesOf(err) {
		if leaf != nil {
			got = append(got, leaf.Error())
		}
	}
	wantProblems(t, got,
		`w.yaml: line 8: pod x/b: pods[1].ips[0]: Invalid value: "10.0.0.300": not an IP address`,
		`w.yaml: line 8: pod x/b: pods[1].ips[1]: Duplicate value: "10.0.0.1 (also an address of pod x/a)"`,
		"w.yaml: line 9: pod x/b: pods[1].lables: Unknown field: not part of the workloads file (did you mean labels?)")

	_, err = DecodeWorkloads("p.yaml", []byte("# policies\napiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: a, namespace: x}\nspec: {podSelector: {}}\n"))
	if err == nil || !strings.Contains(err.Error(), "p.yaml: line 1: this is a policy file (document 1 is a egressd.io/v1alpha1 FirewallPolicy), not a workloads file") {
		t.Errorf("policy file as workloads: %v", err)
	}
	_, err = DecodeWorkloads("w.yaml", []byte("namespaces: [{name: x}]\npods:\n- {namespace: x, name: a, ips: [10.0.0.1]}\n  bad: [\n"))
	if err == nil || !strings.Contains(err.Error(), "w.yaml: line 3: not valid YAML") {
		t.Errorf("syntax error: %v", err)
	}
}

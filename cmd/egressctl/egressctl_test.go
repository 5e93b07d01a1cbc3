package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

var update = flag.Bool("update", false, "rewrite golden files")

const (
	designPolicies  = "../../policy/testdata/design-example.yaml"
	designWorkloads = "../../policy/testdata/design-workloads.yaml"
	modelPolicies   = "testdata/model/policies"
	modelWorkloads  = "testdata/model/workloads.yaml"
)

func runCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

func TestValidateValid(t *testing.T) {
	out, errOut, code := runCmd(t, "validate", "-f", "testdata/valid", "-f", designPolicies)
	if code != exitOK || errOut != "" {
		t.Fatalf("code %d, stderr %q, stdout %q", code, errOut, out)
	}
	if want := "4 objects valid (3 files)\n"; out != want {
		t.Errorf("stdout %q, want %q", out, want)
	}
	out, _, code = runCmd(t, "validate", "-o", "json", "testdata/valid")
	if code != exitOK {
		t.Fatalf("code %d", code)
	}
	res := decodeJSON[validateResult](t, out)
	if !res.Valid || res.Errors == nil || len(res.Errors) != 0 {
		t.Errorf("got %+v", res)
	}
	if !strings.Contains(out, `"errors": []`) {
		t.Errorf("errors must be an empty list, not null: %s", out)
	}
}

func TestValidateInvalid(t *testing.T) {
	bad := filepath.Join("testdata", "invalid", "bad.yaml")
	dup := filepath.Join("testdata", "invalid", "dup.yml")
	p := func(source string, line int, object, field, reason string) problem {
		return problem{Source: source, Line: line, Object: object, Field: field, Reason: reason}
	}
	// Lines are the file's (documents 2 to 5 of bad.yaml start below line 1);
	// the problems of a document are in line order.
	want := []problem{
		p(bad+":1", 11, "FirewallPolicy/x/bad", "spec.egress[0].to[1].cidr", `Invalid value: "10.0.0.0/33"`),
		p(bad+":1", 12, "FirewallPolicy/x/bad", "spec.egress[0].ports[0].endPort", "Forbidden"),
		p(bad+":1", 13, "FirewallPolicy/x/bad", "spec.egress[1].action", `Unsupported value: "Block"`),
		p(bad+":2", 21, "ClusterFirewallPolicy/baseline-pass", "spec.priority", "Invalid value: 5000"),
		p(bad+":2", 24, "ClusterFirewallPolicy/baseline-pass", "spec.ingress[0].action", "Pass is only allowed in the Admin tier"),
		p(bad+":2", 25, "ClusterFirewallPolicy/baseline-pass", "spec.ingress[0].from[0].fqdn", "only valid in egress rules"),
		p(bad+":3", 33, "FirewallPolicy/x/typo", "spec.egres", "Unknown field: not part of FirewallPolicy (did you mean egress?)"),
		p(bad+":3", 36, "FirewallPolicy/x/typo", "spec.ingress[0].form", "Unknown field: not part of FirewallPolicy (did you mean from?)"),
		p(bad+":4", 39, "ConfigMap/cm", "", "unsupported kind v1/ConfigMap"),
		p(dup+":1", 3, "FirewallPolicy/x/good", "metadata.name", "also defined at "+bad+":5"),
		p(dup+":2", 12, "NetworkPolicy/x/np", "spec.policyTypes[1]", `Unsupported value: "Sideways"`),
		p(dup+":2", 14, "NetworkPolicy/x/np", "spec.ingress[0].from[0].ipBlock.except[0]", "must be inside cidr"),
	}

	out, errOut, code := runCmd(t, "validate", "-f", filepath.Join("testdata", "invalid"), "-o", "json")
	if code != exitFail {
		t.Fatalf("code %d, want %d; stderr %q", code, exitFail, errOut)
	}
	res := decodeJSON[validateResult](t, out)
	if res.Valid {
		t.Error("valid: true")
	}
	if len(res.Errors) != len(want) {
		t.Errorf("got %d errors, want %d:\n%s", len(res.Errors), len(want), out)
	}
	for i := range min(len(want), len(res.Errors)) {
		got, w := res.Errors[i], want[i]
		if got.Source != w.Source || got.Line != w.Line || got.Object != w.Object || got.Field != w.Field || !strings.Contains(got.Reason, w.Reason) {
			t.Errorf("error %d: got %+v\nwant %+v (reason containing %q)", i, got, w, w.Reason)
		}
	}

	// Text: one line per problem, "source: line N: object: field: reason", and a summary.
	out, _, code = runCmd(t, "validate", "-f", bad, "-f", dup)
	if code != exitFail {
		t.Fatalf("text: code %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want)+1 {
		t.Fatalf("text: %d lines, want %d:\n%s", len(lines), len(want)+1, out)
	}
	for i, w := range want {
		prefix := fmt.Sprintf("%s: line %d: %s: ", w.Source, w.Line, w.Object)
		if w.Field != "" {
			prefix += w.Field + ": "
		}
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d: %q, want prefix %q", i, lines[i], prefix)
		}
	}
	if last := lines[len(lines)-1]; last != "12 errors in 6 documents (3 objects decoded from 2 files)" {
		t.Errorf("summary %q", last)
	}
}

func TestValidateInputErrors(t *testing.T) {
	out, _, code := runCmd(t, "validate", "-f", "testdata/nope.yaml")
	if code != exitFail || !strings.Contains(out, "testdata/nope.yaml: no such file or directory") {
		t.Errorf("missing file: code %d, %q", code, out)
	}
	// A workloads file given as policies gets a hint.
	out, _, code = runCmd(t, "validate", "-f", modelWorkloads)
	if code != exitFail || !strings.Contains(out, modelWorkloads+":1: line 3: apiVersion and kind are required (this looks like a workloads file") {
		t.Errorf("workloads as policies: code %d, %q", code, out)
	}
}

// explainCase runs explain -o json and checks the result.
type explainCase struct {
	name string
	args []string
	want explainJSON
}

func checkExplain(t *testing.T, policies, workloads string, cases []explainCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"explain", "-f", policies, "--workloads", workloads, "-o", "json"}, c.args...)
			out, errOut, code := runCmd(t, args...)
			if code != exitOK {
				t.Fatalf("code %d, stderr %q", code, errOut)
			}
			got := decodeJSON[explainJSON](t, out)
			g, w := got, c.want
			g.Audit, w.Audit = nil, nil
			g.SideDoor, w.SideDoor = nil, nil
			g.Egress, g.Ingress = nil, nil
			if g != w || (got.Audit == nil) != (c.want.Audit == nil) || (got.Audit != nil && *got.Audit != *c.want.Audit) ||
				(got.SideDoor == nil) != (c.want.SideDoor == nil) || (got.SideDoor != nil && *got.SideDoor != *c.want.SideDoor) {
				t.Errorf("got  %s\nwant %+v %+v", out, c.want, c.want.Audit)
			}
			// Exactly the documented keys.
			var keys map[string]any
			_ = json.Unmarshal([]byte(out), &keys)
			for k := range keys {
				switch k {
				case "verdict", "tier", "policy", "rule", "reason", "audit", "sideDoor", "egress", "ingress":
				default:
					t.Errorf("unexpected key %q", k)
				}
			}
		})
	}
}

// TestExplainKernelExemptions: what the kernel accepts before any policy
// (egress.Enforcer's egress_local chain: the node resolver and the proxies,
// TCP and UDP) is allowed by explain with its own reason, even for a pod whose
// egress is isolated; other ports and protocols of those addresses are not.
func TestExplainKernelExemptions(t *testing.T) {
	gw := []string{"--from", "payments/gateway-0"}
	checkExplain(t, designPolicies, designWorkloads, []explainCase{
		{"node resolver UDP", append(gw, "--to-ip", "169.254.20.10", "--port", "53", "--protocol", "UDP"), explainJSON{Verdict: "Allow", Reason: "node-resolver"}},
		{"node resolver TCP", append(gw, "--to-ip", "169.254.20.10", "--port", "53"), explainJSON{Verdict: "Allow", Reason: "node-resolver"}},
		{"node resolver, another port", append(gw, "--to-ip", "169.254.20.10", "--port", "80"), explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: "FirewallPolicy/payments/payments", Reason: "isolated"}},
		{"node resolver, SCTP", append(gw, "--to-ip", "169.254.20.10", "--port", "53", "--protocol", "SCTP"), explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: "FirewallPolicy/payments/payments", Reason: "isolated"}},
		{"resolver moved", append(gw, "--to-ip", "10.9.9.9", "--port", "5353", "--protocol", "UDP", "--resolver", "10.9.9.9:5353"), explainJSON{Verdict: "Allow", Reason: "node-resolver"}},
		{"proxy", append(gw, "--to-ip", "10.9.9.1", "--port", "3128", "--proxy", "10.9.9.1:3128"), explainJSON{Verdict: "Allow", Reason: "node-proxy"}},
		{"no proxy given", append(gw, "--to-ip", "10.9.9.1", "--port", "3128"), explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: "FirewallPolicy/payments/payments", Reason: "isolated"}},
		{"itself", append(gw, "--to", "payments/gateway-0", "--port", "9999"), explainJSON{Verdict: "Allow", Reason: "self"}},
	})
}

// TestExplainNamesBothDirections: an allowed connection's JSON names the
// egress rule that allowed it as well as the ingress side that decided.
func TestExplainNamesBothDirections(t *testing.T) {
	pol := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(pol, []byte(`apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: orders-out, namespace: payments}
spec:
  podSelector: {matchLabels: {app: order-service}}
  egress:
  - {name: to-gateway, action: Allow, to: [{pods: {podSelector: {matchLabels: {app: payment-gateway}}}}], ports: [{port: 8080}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: gateway-in, namespace: payments}
spec:
  podSelector: {matchLabels: {app: payment-gateway}}
  ingress:
  - {name: from-orders, action: Allow, from: [{pods: {podSelector: {matchLabels: {app: order-service}}}}], ports: [{port: 8080}]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, code := runCmd(t, "explain", "-f", pol, "--workloads", designWorkloads, "--from", "payments/orders-0", "--to", "payments/gateway-0", "--port", "8080", "-o", "json")
	if code != exitOK {
		t.Fatal(code, out)
	}
	got := decodeJSON[explainJSON](t, out)
	if got.Verdict != "Allow" || got.Rule != "from-orders" || got.Egress == nil || got.Ingress == nil || got.Ingress.Rule != "from-orders" {
		t.Fatalf("%s", out)
	}
	if got.Egress.Reason != "rule" || got.Egress.Policy != "FirewallPolicy/payments/orders-out" || got.Egress.Rule != "to-gateway" {
		t.Errorf("the egress side does not name its rule: %s", out)
	}
}

func TestExplainDesignExample(t *testing.T) {
	fw := "FirewallPolicy/payments/payments"
	checkExplain(t, designPolicies, designWorkloads, []explainCase{
		// Ingress at the destination decides.
		{"orders to gateway 8080 allowed by ingress rule", []string{"--from", "payments/orders-0", "--to", "payments/gateway-0", "--port", "8080"},
			explainJSON{Verdict: "Allow", Tier: "Namespaced", Policy: fw, Rule: "ingress[0]", Reason: "rule"}},
		{"orders to gateway 8081 isolated", []string{"--from", "payments/orders-0", "--to", "payments/gateway-0", "--port", "8081"},
			explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: fw, Reason: "isolated"}},
		{"ops to gateway named port metrics", []string{"--from", "ops/prom-0", "--to", "payments/gateway-0", "--port", "9090"},
			explainJSON{Verdict: "Allow", Tier: "Namespaced", Policy: fw, Rule: "ingress[0]", Reason: "rule"}},
		{"ops to gateway udp range", []string{"--from", "ops/prom-0", "--to", "payments/gateway-0", "--port", "9050", "--protocol", "udp"},
			explainJSON{Verdict: "Allow", Tier: "Namespaced", Policy: fw, Rule: "ingress[0]", Reason: "rule"}},
		{"other to orders: no policy anywhere", []string{"--from", "payments/other-0", "--to", "payments/orders-0", "--port", "80"},
			explainJSON{Verdict: "Allow", Tier: "Default", Reason: "no-policy"}},
		// Egress at the source decides.
		{"gateway to metadata denied by egress rule", []string{"--from", "payments/gateway-0", "--to-ip", "169.254.169.254", "--port", "80"},
			explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: fw, Rule: "egress[1]", Reason: "rule"}},
		{"gateway to unresolved IP isolated", []string{"--from", "payments/gateway-0", "--to-ip", "52.1.1.1", "--port", "443"},
			explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: fw, Reason: "isolated"}},
		{"gateway to resolved stripe IP allowed by FQDN rule", []string{"--from", "payments/gateway-0", "--to-ip", "52.1.1.1", "--port", "443", "--resolved", "api.stripe.com=52.1.1.1,52.1.1.2"},
			explainJSON{Verdict: "Allow", Tier: "Namespaced", Policy: fw, Rule: "egress[0]", Reason: "rule"}},
		{"gateway to resolved stripe IP on port 80", []string{"--from", "payments/gateway-0", "--to-ip", "52.1.1.1", "--port", "80", "--resolved", "api.stripe.com=52.1.1.1"},
			explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: fw, Reason: "isolated"}},
		{"gateway to orders: egress isolated", []string{"--from", "payments/gateway-0", "--to", "payments/orders-0", "--port", "8080"},
			explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: fw, Reason: "isolated"}},
		{"gateway over IPv6 to a non-workload", []string{"--from", "payments/gateway-0", "--to-ip", "fd00::99", "--port", "443"},
			explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: fw, Reason: "isolated"}},
		// Lookups.
		{"lookup of a mining pool blocked by the Admin policy", []string{"--from", "payments/other-0", "--to-name", "pool.minepool.com"},
			explainJSON{Verdict: "Deny", Tier: "Admin", Policy: "ClusterFirewallPolicy/deny-mining", Rule: "egress[0]", Reason: "rule"}},
		{"lookup blocked by lookups: Enforce", []string{"--from", "payments/gateway-0", "--to-name", "example.com"},
			explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: fw, Reason: "lookups-enforced"}},
		{"lookup allowed by FQDN rule", []string{"--from", "payments/gateway-0", "--to-name", "API.Stripe.com."},
			explainJSON{Verdict: "Allow", Tier: "Namespaced", Policy: fw, Rule: "egress[0]", Reason: "rule"}},
		{"lookup inside the cluster domain", []string{"--from", "payments/gateway-0", "--to-name", "kubernetes.default.svc.cluster.local"},
			explainJSON{Verdict: "Allow", Reason: "cluster-domain"}},
		{"lookup observed", []string{"--from", "payments/other-0", "--to-name", "example.com"},
			explainJSON{Verdict: "Allow", Tier: "Default", Reason: "no-matching-fqdn"}},
	})
}

func TestExplainModel(t *testing.T) {
	staged := &explainJSON{Verdict: "Deny", Tier: "Admin", Policy: "ClusterFirewallPolicy/staged-no-udp", Rule: "no-udp", Reason: "rule"}
	dnsAllowed := &sideDoorJSON{Door: "dns", Verdict: "Pass", Reason: "dnsBypass Allow (node default Allow)"}
	checkExplain(t, modelPolicies, modelWorkloads, []explainCase{
		{"baseline denies blue to red at ingress", []string{"--from", "x/a", "--to", "y/b", "--port", "80"},
			explainJSON{Verdict: "Deny", Tier: "Baseline", Policy: "ClusterFirewallPolicy/blue-not-red", Rule: "from-blue", Reason: "rule"}},
		{"NetworkPolicy allows red to blue", []string{"--from", "y/b", "--to", "x/a", "--port", "80"},
			explainJSON{Verdict: "Allow", Tier: "Namespaced", Policy: "NetworkPolicy/x/allow-from-red", Rule: "ingress[0]", Reason: "rule"}},
		{"Deny rule of a FirewallPolicy at egress", []string{"--from", "y/a", "--to", "x/b", "--port", "80"},
			explainJSON{Verdict: "Deny", Tier: "Namespaced", Policy: "FirewallPolicy/y/no-b", Rule: "deny-b", Reason: "rule"}},
		{"named port at ingress, IPv6", []string{"--from", "x/a", "--to", "z/c", "--port", "80", "--family", "ipv6"},
			explainJSON{Verdict: "Allow", Tier: "Namespaced", Policy: "FirewallPolicy/z/web", Rule: "http", Reason: "rule"}},
		// Port 53 with --dns-bypass Allow: the side doors (TestExplainSideDoors) stay out of the way.
		{"staged policy: audit would deny UDP", []string{"--from", "y/b", "--to", "y/a", "--port", "53", "--protocol", "UDP", "--dns-bypass", "Allow"},
			explainJSON{Verdict: "Allow", Tier: "Default", Reason: "no-policy", Audit: staged, SideDoor: dnsAllowed}},
		{"staged policy on a denied connection", []string{"--from", "x/a", "--to", "y/b", "--port", "53", "--protocol", "UDP", "--dns-bypass", "Allow"},
			explainJSON{Verdict: "Deny", Tier: "Baseline", Policy: "ClusterFirewallPolicy/blue-not-red", Rule: "from-blue", Reason: "rule", Audit: staged, SideDoor: dnsAllowed}},
		{"lookup of xmr pool blocked by Admin", []string{"--from", "z/c", "--to-name", "xmr-eu.com"},
			explainJSON{Verdict: "Deny", Tier: "Admin", Policy: "ClusterFirewallPolicy/deny-mining", Rule: "mining", Reason: "rule"}},
		{"node default deny", []string{"--from", "y/b", "--to", "y/a", "--port", "80", "--default-verdict", "deny"},
			explainJSON{Verdict: "Deny", Tier: "Default", Reason: "no-policy"}},
	})
}

func TestExplainText(t *testing.T) {
	out, errOut, code := runCmd(t, "explain", "-f", modelPolicies, "--workloads", modelWorkloads,
		"--from", "x/a", "--to", "y/b", "--port", "53", "--protocol", "udp", "--dns-bypass", "Allow")
	if code != exitOK {
		t.Fatalf("code %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"Verdict:     Deny\n",
		"Connection:  x/a (10.1.0.1) -> y/b (10.2.0.2) UDP/53\n",
		"Decided by:  ingress\n",
		"Egress at x/a: Allow\n  tier:      Default\n",
		"  audit:     would Deny: rule no-udp (Deny) of ClusterFirewallPolicy/staged-no-udp, Admin tier\n",
		"Ingress at y/b: Deny\n  tier:      Baseline\n  policy:    ClusterFirewallPolicy/blue-not-red\n  rule:      from-blue (Deny)\n",
		"Audit:       would be Deny if Audit-mode policies were enforced\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}

	out, _, code = runCmd(t, "explain", "-f", designPolicies, "--workloads", designWorkloads,
		"--from", "payments/gateway-0", "--to-ip", "52.1.1.1", "--port", "443", "--resolved", "api.stripe.com=52.1.1.1")
	for _, want := range []string{
		"Resolved:    payments/gateway-0 resolved api.stripe.com to 52.1.1.1",
		"Decided by:  egress\n",
		"Egress at payments/gateway-0: Allow\n",
		"Ingress: not enforced (52.1.1.1 is not a known workload)\n",
	} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("code %d, missing %q in:\n%s", code, want, out)
		}
	}

	out, _, code = runCmd(t, "explain", "-f", designPolicies, "--workloads", designWorkloads,
		"--from", "payments/gateway-0", "--to-name", "x.y.s3.amazonaws.com")
	for _, want := range []string{
		"Verdict:     Allow\nLookup:      x.y.s3.amazonaws.com by payments/gateway-0\n",
		"  sets:      FirewallPolicy/payments/payments#egress[0]",
	} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Errorf("code %d, missing %q in:\n%s", code, want, out)
		}
	}
}

func TestMatrixMatchesEngine(t *testing.T) {
	for _, tc := range []struct{ policies, workloads, family string }{
		{modelPolicies, modelWorkloads, "ipv4"},
		{modelPolicies, modelWorkloads, "ipv6"},
		{designPolicies, designWorkloads, "ipv4"},
	} {
		t.Run(tc.policies+"/"+tc.family, func(t *testing.T) {
			out, errOut, code := runCmd(t, "matrix", "-f", tc.policies, "--workloads", tc.workloads,
				"--ports", "80,81,9090,9050,8080", "--protocols", "SCTP,udp,TCP", "--family", tc.family, "-o", "json")
			if code != exitOK {
				t.Fatalf("code %d, stderr %q", code, errOut)
			}
			got := decodeJSON[matrixJSON](t, out)

			// The reference, built independently.
			objs, err := manifest.DecodePath(tc.policies)
			if err != nil {
				t.Fatal(err)
			}
			ws, err := manifest.LoadWorkloads(tc.workloads)
			if err != nil {
				t.Fatal(err)
			}
			s, err := manifest.LoadStore(objs, ws)
			if err != nil {
				t.Fatal(err)
			}
			e := policy.NewEngine(s, policy.Options{})
			var pods []policy.Workload
			for _, p := range ws.Pods {
				if ip, ok := firstIP(p, tc.family); ok {
					p.IPs = []netip.Addr{ip}
					pods = append(pods, p)
				}
			}
			var want []cell
			for _, port := range []int32{80, 81, 8080, 9050, 9090} {
				for _, proto := range []policy.Protocol{"TCP", "UDP", "SCTP"} {
					for _, from := range sortedPods(pods) {
						for _, to := range sortedPods(pods) {
							d := e.Decide(policy.Connection{Src: from.IPs[0], Dst: to.IPs[0], Port: port, Protocol: proto})
							want = append(want, cell{From: from.Namespace + "/" + from.Name, To: to.Namespace + "/" + to.Name, Port: port, Protocol: string(proto), Verdict: string(d.Verdict)})
						}
					}
				}
			}
			if len(got.Cells) != len(want) {
				t.Fatalf("%d cells, want %d", len(got.Cells), len(want))
			}
			allow, deny := 0, 0
			for i := range want {
				if got.Cells[i] != want[i] {
					t.Errorf("cell %d: got %+v, want %+v", i, got.Cells[i], want[i])
				}
				if want[i].Verdict == "Allow" {
					allow++
				} else {
					deny++
				}
			}
			if allow == 0 || deny == 0 {
				t.Errorf("a matrix worth testing has both verdicts: %d allowed, %d denied", allow, deny)
			}
			if tc.family == "ipv6" && !strings.Contains(errOut, "left out, no ipv6 address: y/b") {
				t.Errorf("stderr %q", errOut)
			}
		})
	}
}

func sortedPods(ps []policy.Workload) []policy.Workload {
	out := append([]policy.Workload(nil), ps...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j].Key().String() < out[i].Key().String() {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestMatrixTableGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"testdata/matrix-design.golden", []string{"-f", designPolicies, "--workloads", designWorkloads, "--ports", "8080,9090", "--protocols", "TCP,UDP"}},
		{"testdata/matrix-model.golden", []string{"-f", modelPolicies, "--workloads", modelWorkloads}},
	} {
		out, errOut, code := runCmd(t, append([]string{"matrix"}, tc.args...)...)
		if code != exitOK {
			t.Fatalf("%s: code %d, stderr %q", tc.golden, code, errOut)
		}
		if *update {
			if err := os.WriteFile(tc.golden, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(tc.golden)
		if err != nil {
			t.Fatal(err)
		}
		if out != string(want) {
			t.Errorf("%s: got\n%s\nwant\n%s", tc.golden, out, want)
		}
	}
}

func TestUsage(t *testing.T) {
	ex := []string{"-f", modelPolicies, "--workloads", modelWorkloads}
	for _, c := range []struct {
		args     []string
		code     int
		inStderr string
	}{
		{nil, exitUsage, "Usage:"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"validate"}, exitUsage, "no policy files"},
		{[]string{"validate", "-o", "yaml", "x"}, exitUsage, `invalid value "yaml" for flag -o: want one of text, json`},
		{[]string{"explain", "--workloads", modelWorkloads, "--from", "x/a", "--to", "y/a", "--port", "80"}, exitUsage, "no policy files"},
		{append(ex, "--from", "x/a", "--port", "80"), exitUsage, "exactly one of --to, --to-ip and --to-name"},
		{append(ex, "--from", "x/a", "--to", "y/a", "--to-ip", "10.2.0.1", "--port", "80"), exitUsage, "exactly one of"},
		{append(ex, "--from", "x/a", "--to", "y/a"), exitUsage, "--port: want a number from 1 to 65535"},
		{append(ex, "--from", "x/a", "--to", "y/a", "--port", "80", "--protocol", "icmp"), exitUsage, `protocol "icmp"`},
		{append(ex, "--from", "x/a", "--to-name", "a.com", "--port", "80"), exitUsage, "do not apply to --to-name"},
		{append(ex, "--from", "xa", "--to-name", "a.com"), exitUsage, `--from: workload "xa": want namespace/name`},
		{append(ex, "--from", "x/a", "--to-ip", "10.1", "--port", "80"), exitUsage, "--to-ip"},
		{append(ex, "--from", "x/a", "--to-name", "a.com", "--resolved", "a.com"), exitUsage, "want NAME=IP"},
		{append(ex, "--from", "x/zz", "--to-name", "a.com"), exitFail, "--from: no pod x/zz in " + modelWorkloads},
		{append(ex, "--from", "x/a", "--to", "q/q", "--port", "80"), exitFail, "--to: no pod q/q"},
		{append(ex, "--from", "y/b", "--to-ip", "fd00::1", "--port", "80"), exitFail, "has no ipv6 address"},
		{[]string{"explain", "-f", "testdata/invalid", "--workloads", modelWorkloads, "--from", "x/a", "--to-name", "a.com"}, exitFail, "spec.egress[0].to[1].cidr"},
		{[]string{"explain", "-f", modelPolicies, "--workloads", "testdata/nope.yaml", "--from", "x/a", "--to-name", "a.com"}, exitFail, "workloads: testdata/nope.yaml: no such file or directory"},
		{[]string{"matrix", "-f", modelPolicies}, exitUsage, "no workloads file"},
		{append([]string{"matrix"}, append(ex, "--ports", "0")...), exitUsage, "--ports"},
		{append([]string{"matrix"}, append(ex, "--protocols", "TCP,ICMP")...), exitUsage, "--protocols"},
		{append([]string{"matrix"}, append(ex, "--family", "ipv5")...), exitUsage, "want one of ipv4, ipv6"},
		{[]string{"help", "nope"}, exitUsage, "unknown command"},
	} {
		args := c.args
		if len(args) > 0 && args[0] == "-f" {
			args = append([]string{"explain"}, args...)
		}
		_, errOut, code := runCmd(t, args...)
		if code != c.code || !strings.Contains(errOut, c.inStderr) {
			t.Errorf("%q: code %d (want %d), stderr %q (want %q)", args, code, c.code, errOut, c.inStderr)
		}
	}
}

func TestHelp(t *testing.T) {
	out, _, code := runCmd(t, "help")
	if code != exitOK || !strings.Contains(out, "validate") || !strings.Contains(out, "matrix") {
		t.Errorf("help: %d %q", code, out)
	}
	for cmd, flags := range map[string][]string{
		"validate": {"-f", "-o"},
		"explain": {"-f", "-workloads", "-from", "-to", "-to-ip", "-to-name", "-port", "-protocol", "-family", "-resolved", "-o",
			"-default-verdict", "-lookups", "-cluster-domain", "-search-domain"},
		"matrix": {"-f", "-workloads", "-ports", "-protocols", "-family", "-o", "-default-verdict"},
	} {
		for _, args := range [][]string{{cmd, "-h"}, {"help", cmd}} {
			out, errOut, code := runCmd(t, args...)
			if code != exitOK || errOut != "" {
				t.Errorf("%q: code %d, stderr %q", args, code, errOut)
			}
			for _, f := range flags {
				if !strings.Contains(out, "\n  "+f+" ") && !strings.Contains(out, "\n  "+f+"\n") {
					t.Errorf("%q: flag %s not documented:\n%s", args, f, out)
				}
			}
		}
	}
	out, _, code = runCmd(t, "version")
	if code != exitOK || !strings.HasPrefix(out, "egressctl ") {
		t.Errorf("version: %d %q", code, out)
	}
}

// TestExplainSideDoors: explain says what the kernel does with a pod's DNS
// that does not go to egressd (issue 16), exemptions included; the kernel
// side is test/dataplane TestSideDoorsConformance.
func TestExplainSideDoors(t *testing.T) {
	pols, wls := "testdata/sidedoors/policies.yaml", "testdata/sidedoors/workloads.yaml"
	node := "node default Redirect"
	checkExplain(t, pols, wls, []explainCase{
		{"plain DNS to 8.8.8.8 redirected", []string{"--from", "builds/runner-0", "--to-ip", "8.8.8.8", "--port", "53", "--protocol", "udp"},
			explainJSON{Verdict: "Redirect", Reason: "dns-redirect", SideDoor: &sideDoorJSON{Door: "dns", Verdict: "Redirected",
				Reason: "plain DNS to another resolver is redirected to egressd (" + node + ")", To: "169.254.20.10:53"}}},
		{"plain DNS over TCP and IPv6 without an IPv6 resolver address is dropped", []string{"--from", "builds/runner-0", "--to-ip", "2001:4860:4860::8888", "--port", "53"},
			explainJSON{Verdict: "Deny", Reason: "dns-bypass-blocked", SideDoor: &sideDoorJSON{Door: "dns", Verdict: "Dropped",
				Reason: "plain DNS to another resolver; egressd listens on no address of this family, so it is dropped"}}},
		{"plain DNS over IPv6 redirected with an IPv6 resolver address", []string{"--from", "builds/runner-0", "--to-ip", "2001:4860:4860::8888", "--port", "53", "--resolver", "169.254.20.10:53", "--resolver", "[fd00::53]:53"},
			explainJSON{Verdict: "Redirect", Reason: "dns-redirect", SideDoor: &sideDoorJSON{Door: "dns", Verdict: "Redirected",
				Reason: "plain DNS to another resolver is redirected to egressd (" + node + ")", To: "[fd00::53]:53"}}},
		{"DoH to 1.1.1.1 dropped", []string{"--from", "builds/runner-0", "--to-ip", "1.1.1.1", "--port", "443"},
			explainJSON{Verdict: "Deny", Reason: "dns-bypass-blocked", SideDoor: &sideDoorJSON{Door: "doh", Verdict: "Dropped",
				Reason: "encrypted DNS (doh) is dropped (" + node + ")", Resolver: "cloudflare-dns.com"}}},
		{"DoT dropped", []string{"--from", "builds/runner-0", "--to-ip", "203.0.113.7", "--port", "853"},
			explainJSON{Verdict: "Deny", Reason: "dns-bypass-blocked", SideDoor: &sideDoorJSON{Door: "dot", Verdict: "Dropped",
				Reason: "encrypted DNS (dot) is dropped (" + node + ")"}}},
		{"DoQ dropped", []string{"--from", "builds/runner-0", "--to-ip", "203.0.113.7", "--port", "853", "--protocol", "udp"},
			explainJSON{Verdict: "Deny", Reason: "dns-bypass-blocked", SideDoor: &sideDoorJSON{Door: "doq", Verdict: "Dropped",
				Reason: "encrypted DNS (doq) is dropped (" + node + ")"}}},
		{"encrypted DNS allowed on the node", []string{"--from", "builds/runner-0", "--to-ip", "1.1.1.1", "--port", "443", "--encrypted-dns", "Allow"},
			explainJSON{Verdict: "Allow", Tier: "Default", Reason: "no-policy", SideDoor: &sideDoorJSON{Door: "doh", Verdict: "Pass",
				Reason: "encrypted DNS allowed on this node (--encrypted-dns=Allow)", Resolver: "cloudflare-dns.com"}}},
		{"not a side door: HTTPS elsewhere", []string{"--from", "builds/runner-0", "--to-ip", "203.0.113.7", "--port", "443"},
			explainJSON{Verdict: "Allow", Tier: "Default", Reason: "no-policy"}},
		{"egressd itself", []string{"--from", "builds/runner-0", "--to-ip", "169.254.20.10", "--port", "53", "--protocol", "udp"},
			explainJSON{Verdict: "Allow", Reason: "node-resolver"}},
		{"dnsBypass Drop", []string{"--from", "builds/strict-0", "--to-ip", "8.8.8.8", "--port", "53", "--protocol", "udp"},
			explainJSON{Verdict: "Deny", Policy: "ClusterFirewallPolicy/strict-dns", Reason: "dns-bypass-blocked", SideDoor: &sideDoorJSON{Door: "dns", Verdict: "Dropped",
				Reason: "plain DNS to another resolver is dropped (dnsBypass Drop of ClusterFirewallPolicy/strict-dns)", Policy: "ClusterFirewallPolicy/strict-dns"}}},
		{"dnsBypass.resolvers exemption", []string{"--from", "dns/unbound-0", "--to-ip", "9.9.9.9", "--port", "853"},
			explainJSON{Verdict: "Allow", Tier: "Default", Reason: "no-policy", SideDoor: &sideDoorJSON{Door: "dot", Verdict: "Pass",
				Reason: "resolver exempted by dnsBypass.resolvers of ClusterFirewallPolicy/own-resolver", Policy: "ClusterFirewallPolicy/own-resolver"}}},
		{"dnsBypass.resolvers: other resolvers still redirected", []string{"--from", "dns/unbound-0", "--to-ip", "8.8.8.8", "--port", "53", "--protocol", "udp"},
			explainJSON{Verdict: "Redirect", Policy: "ClusterFirewallPolicy/own-resolver", Reason: "dns-redirect", SideDoor: &sideDoorJSON{Door: "dns", Verdict: "Redirected",
				Reason: "plain DNS to another resolver is redirected to egressd (dnsBypass Redirect of ClusterFirewallPolicy/own-resolver)", Policy: "ClusterFirewallPolicy/own-resolver", To: "169.254.20.10:53"}}},
		{"exempt namespace", []string{"--from", "kube-system/coredns-0", "--to-ip", "8.8.8.8", "--port", "53", "--protocol", "udp"},
			explainJSON{Verdict: "Allow", Tier: "Default", Reason: "no-policy", SideDoor: &sideDoorJSON{Door: "dns", Verdict: "Pass",
				Reason: "dnsBypass Allow (node default Allow)"}}},
		{"no exempt namespaces", []string{"--from", "kube-system/coredns-0", "--to-ip", "8.8.8.8", "--port", "53", "--protocol", "udp", "--dns-bypass-exempt-namespaces", ""},
			explainJSON{Verdict: "Redirect", Reason: "dns-redirect", SideDoor: &sideDoorJSON{Door: "dns", Verdict: "Redirected",
				Reason: "plain DNS to another resolver is redirected to egressd (" + node + ")", To: "169.254.20.10:53"}}},
	})
	out, errOut, code := runCmd(t, "explain", "-f", pols, "--workloads", wls, "--from", "builds/runner-0", "--to-ip", "8.8.8.8", "--port", "53", "--protocol", "udp")
	if code != exitOK || !strings.HasPrefix(out, "Verdict:     Redirected to egressd (169.254.20.10:53)\n") || !strings.Contains(out, "original destination 8.8.8.8:53") {
		t.Errorf("text: code %d %q\n%s", code, errOut, out)
	}
	out, _, _ = runCmd(t, "explain", "-f", pols, "--workloads", wls, "--from", "builds/runner-0", "--to-ip", "1.1.1.1", "--port", "443")
	if !strings.HasPrefix(out, "Verdict:     Deny\n") || !strings.Contains(out, "1.1.1.1 is cloudflare-dns.com in the DoH list") {
		t.Errorf("text:\n%s", out)
	}
}

// TestDocsMatrixExamples: the matrix examples of docs/egressctl.md (run in
// cmd/egressctl/testdata/model) print what the command prints today.
func TestDocsMatrixExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/egressctl.md")
	if err != nil {
		t.Fatal(err)
	}
	examples := 0
	lines := strings.Split(string(doc), "\n")
	for i := 0; i < len(lines); i++ {
		cmdline, ok := strings.CutPrefix(lines[i], "$ egressctl matrix ")
		if !ok {
			continue
		}
		var want []string
		for j := i + 1; j < len(lines) && !strings.HasPrefix(lines[j], "$ ") && !strings.HasPrefix(lines[j], "```"); j++ {
			want = append(want, lines[j])
		}
		args := []string{"matrix"}
		for _, a := range strings.Fields(cmdline) {
			switch a {
			case "policies", "workloads.yaml":
				a = filepath.Join("testdata", "model", a)
			}
			args = append(args, a)
		}
		out, errOut, code := runCmd(t, args...)
		if code != exitOK {
			t.Fatalf("%s: code %d %s", cmdline, code, errOut)
		}
		got := strings.TrimRight(strings.ReplaceAll(errOut, "testdata/model/", "")+out, "\n")
		if w := strings.TrimRight(strings.Join(want, "\n"), "\n"); got != w {
			t.Errorf("docs/egressctl.md line %d: $ egressctl matrix %s\ngot:\n%s\nthe docs say:\n%s", i+1, cmdline, got, w)
		}
		examples++
	}
	if examples < 2 {
		t.Fatalf("%d matrix examples found", examples)
	}
}

// TestDocsHelpBlocks: the usage block of each command in docs/egressctl.md is
// the command's -h output (flags, defaults and text cannot drift).
func TestDocsHelpBlocks(t *testing.T) {
	doc, err := os.ReadFile("../../docs/egressctl.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"validate", "explain", "matrix", "convert"} {
		key := "## egressctl " + c + "\n\n```\n"
		i := strings.Index(string(doc), key)
		if i < 0 {
			t.Errorf("docs/egressctl.md has no section %q", "egressctl "+c)
			continue
		}
		block := string(doc[i+len(key):])
		block = block[:strings.Index(block, "```")]
		out, _, code := runCmd(t, c, "-h")
		if code != exitOK || out != block {
			t.Errorf("egressctl %s -h differs from docs/egressctl.md:\n%s\ndocs:\n%s", c, out, block)
		}
	}
}

// TestDeployExamples: deploy/examples holds three sets, validated one by one
// (docs/egressctl.md): the policies, the demo (which repeats deny-mining) and
// the invalid examples, each refused.
func TestDeployExamples(t *testing.T) {
	for _, p := range []string{"../../deploy/examples/policies", "../../deploy/examples/demo/policies.yaml"} {
		if out, _, code := runCmd(t, "validate", "-f", p); code != exitOK {
			t.Errorf("%s: code %d\n%s", p, code, out)
		}
	}
	invalid, _ := filepath.Glob("../../deploy/examples/invalid/*.yaml")
	if len(invalid) == 0 {
		t.Fatal("no invalid examples")
	}
	for _, f := range invalid {
		if out, _, code := runCmd(t, "validate", "-f", f); code != exitFail || !strings.Contains(out, "spec.") {
			t.Errorf("%s: code %d, want 1 with the field\n%s", f, code, out)
		}
	}
}

package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

const calicoWorkloads = "testdata/calico-workloads.yaml"

// convertModel converts Calico files with egressctl convert, checks the
// output is valid egressd input (validate), and loads it with the
// workloads.
func convertModel(t *testing.T, files ...string) *model {
	t.Helper()
	var args []string
	for _, f := range files {
		args = append(args, "-f", filepath.Join("testdata", "calico", f))
	}
	out, errOut, code := runCmd(t, append([]string{"convert"}, args...)...)
	if code != exitOK {
		t.Fatalf("convert %v: code %d\n%s", files, code, errOut)
	}
	path := filepath.Join(t.TempDir(), "converted.yaml")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	if vout, _, code := runCmd(t, "validate", "-f", path); code != exitOK {
		t.Fatalf("the converted policies do not validate:\n%s\n%s", vout, out)
	}
	m, problems, err := loadModel([]string{path}, calicoWorkloads, policy.Options{})
	if err != nil {
		t.Fatalf("%v %v", err, problems)
	}
	return m
}

type calicoCase struct {
	name     string
	src, dst string
	port     int32
	proto    policy.Protocol
	want     policy.Verdict
}

func checkCalico(t *testing.T, m *model, cases []calicoCase) {
	t.Helper()
	for _, c := range cases {
		c := c
		d := m.engine.Decide(policy.Connection{Src: netip.MustParseAddr(c.src), Dst: netip.MustParseAddr(c.dst), Port: c.port, Protocol: c.proto})
		if d.Verdict != c.want {
			t.Errorf("%s: got %s (egress %+v, ingress %+v), want %s (Calico)", c.name, d.Verdict, d.Egress.Outcome, d.Ingress.Outcome, c.want)
		}
	}
}

// Addresses of testdata/calico-workloads.yaml.
const (
	order   = "10.1.0.1"
	payment = "10.1.0.2"
	web     = "10.1.0.3"
	coredns = "10.1.9.1"
)

// TestConvertOrderToPayment: a Calico NetworkPolicy selecting
// payment-service for ingress allows order-service on TCP 8080; every other
// ingress of payment-service is dropped at the end of the tier; its egress
// and the other pods are not affected.
func TestConvertOrderToPayment(t *testing.T) {
	m := convertModel(t, "order-payment.yaml")
	checkCalico(t, m, []calicoCase{
		{"order → payment 8080", order, payment, 8080, policy.ProtocolTCP, policy.Allow},
		{"order → payment 8081", order, payment, 8081, policy.ProtocolTCP, policy.Deny},
		{"order → payment UDP 8080", order, payment, 8080, policy.ProtocolUDP, policy.Deny},
		{"web → payment 8080", web, payment, 8080, policy.ProtocolTCP, policy.Deny},
		{"payment → web (egress not in types)", payment, web, 80, policy.ProtocolTCP, policy.Allow},
		{"web → order (not selected)", web, order, 80, policy.ProtocolTCP, policy.Allow},
	})
}

// TestConvertDefaultDeny: the global default deny with
// has(projectcalico.org/name): every namespace but the system ones is denied
// both ways except DNS to kube-dns; kube-system is untouched.
func TestConvertDefaultDeny(t *testing.T) {
	m := convertModel(t, "default-deny.yaml")
	checkCalico(t, m, []calicoCase{
		{"web → kube-dns UDP 53", web, coredns, 53, policy.ProtocolUDP, policy.Allow},
		{"web → kube-dns TCP 53", web, coredns, 53, policy.ProtocolTCP, policy.Deny},
		{"web → internet", web, "203.0.113.9", 443, policy.ProtocolTCP, policy.Deny},
		{"web → order", web, order, 80, policy.ProtocolTCP, policy.Deny},
		{"coredns → internet (kube-system excluded)", coredns, "203.0.113.9", 53, policy.ProtocolUDP, policy.Allow},
		{"coredns → web (web's ingress denied)", coredns, web, 80, policy.ProtocolTCP, policy.Deny},
	})
	// With the order → payment policy (order 100, before the default deny's
	// unset order): order's egress is still denied by the default deny.
	m = convertModel(t, "order-payment.yaml", "default-deny.yaml")
	checkCalico(t, m, []calicoCase{
		{"order → payment 8080 (egress denied)", order, payment, 8080, policy.ProtocolTCP, policy.Deny},
		{"order → kube-dns", order, coredns, 53, policy.ProtocolUDP, policy.Allow},
	})
}

// TestConvertMiningPool: the mining-pool Deny with "*.minepool.com" in a
// tier of its own ending in Pass: Calico's * is one or more labels, so the
// lookups of a.minepool.com and a.b.minepool.com are denied, minepool.com and
// everything else is left to the next tier (none: allowed).
func TestConvertMiningPool(t *testing.T) {
	m := convertModel(t, "mining.yaml")
	w := policy.WorkloadKey{Namespace: "shop", Name: "web-0"}
	for name, want := range map[string]policy.Verdict{
		"pool.minepool.com": policy.Deny, "a.b.minepool.com": policy.Deny, "minepool.com": policy.Allow, "example.com": policy.Allow,
	} {
		if got := m.engine.DecideLookup(w, name); got.Verdict != want {
			t.Errorf("lookup %s: got %s (%+v), want %s", name, got.Verdict, got.Outcome, want)
		}
	}
	checkCalico(t, m, []calicoCase{{"web → internet", web, "203.0.113.9", 443, policy.ProtocolTCP, policy.Allow}})
}

// TestConvertRefusals: what has no egressd equivalent is refused with the
// document, the field and the reason, and the exit status is 1.
func TestConvertRefusals(t *testing.T) {
	out, errOut, code := runCmd(t, "convert", "-f", "testdata/calico/mining-xmr.yaml")
	if code != exitFail || out != "" || !strings.Contains(errOut, `testdata/calico/mining-xmr.yaml:1: GlobalNetworkPolicy/deny-xmr: spec.egress[0].destination.domains[0]: "xmr.*.com": Calico's * matches one or more labels`) {
		t.Errorf("xmr.*.com: code %d, out %q, stderr %q", code, out, errOut)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: a}
spec:
  selector: app == "x" || tier starts with "fr"
  egress:
  - action: Log
  - action: Allow
    protocol: ICMP
  - action: Allow
    protocol: TCP
    destination: {notPorts: [22], nets: [10.0.0.0/8], selector: a == "b"}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: feed}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: typo, namespace: x}
spec:
  selectr: all()
`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = runCmd(t, "convert", "-f", bad)
	for _, want := range []string{
		`bad.yaml:1: GlobalNetworkPolicy/a: spec.selector: selector "app == \"x\" || tier starts with \"fr\"": "starts with" has no label-selector equivalent`,
		"bad.yaml:1: GlobalNetworkPolicy/a: spec.egress[0].action: egressd has no Log action yet",
		"spec.egress[1].protocol: ICMP: egressd matches TCP, UDP and SCTP",
		"spec.egress[2].destination.notPorts: egressd matches ports positively only",
		"spec.egress[2].destination: Calico ANDs nets, selectors and domains",
		"bad.yaml:2: GlobalNetworkSet/feed: kind: egressd has no network sets yet",
		`bad.yaml:3: NetworkPolicy/x/typo: spec: unknown field "selectr"`,
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("missing %q in:\n%s", want, errOut)
		}
	}
	if code != exitFail {
		t.Errorf("code %d", code)
	}
}

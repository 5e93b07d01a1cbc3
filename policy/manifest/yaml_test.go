package manifest

import (
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
)

// The Kubernetes e2e model names a namespace "y": YAML 1.1 decoders turn an
// unquoted y into "true"; policies and workloads must keep it "y".
func TestUnquotedYStaysAString(t *testing.T) {
	objs, err := Decode("t", strings.NewReader(`apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: a, namespace: y}
spec:
  podSelector: {matchLabels: {ns: y, on: n}}
  ingress: []
`))
	if err != nil {
		t.Fatal(err)
	}
	p := objs[0].FirewallPolicy
	if p.Namespace != "y" || p.Spec.PodSelector.MatchLabels["ns"] != "y" || p.Spec.PodSelector.MatchLabels["on"] != "n" {
		t.Fatalf("got namespace %q labels %v", p.Namespace, p.Spec.PodSelector.MatchLabels)
	}
	ws, err := DecodeWorkloads("w", []byte("namespaces: [{name: y, labels: {ns: y}}]\npods: [{namespace: y, name: a, ips: [10.0.0.1], ports: [{name: http, port: 80}]}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if ws.Namespaces[0].Name != "y" || ws.Pods[0].Namespace != "y" || ws.Pods[0].Ports[0].Port != 80 {
		t.Fatalf("workloads: %+v", ws)
	}
}

func TestUnknownFieldsAreErrors(t *testing.T) {
	_, err := Decode("t", strings.NewReader("apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: a, namespace: x}\nspec: {podSelector: {}, egres: []}\n"))
	if err == nil || !strings.Contains(err.Error(), "egres") {
		t.Fatalf("want an unknown-field error naming egres, got %v", err)
	}
	var ws policy.Workloads
	if err := Unmarshal([]byte("pods: [{namespace: x, name: a, ip: [10.0.0.1]}]"), &ws, true); err == nil {
		t.Fatal("unknown workload field must be an error")
	}
}

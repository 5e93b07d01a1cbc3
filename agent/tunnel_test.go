package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/dnsproxy/tunnel"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

func TestTunnelDetectionFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want tunnel.Action
		err  bool
	}{
		{nil, tunnel.Alert, false},
		{[]string{"--tunnel-detection", "Off"}, tunnel.Off, false},
		{[]string{"--tunnel-detection=Block", "--tunnel-allow", "example.com"}, tunnel.Block, false},
		{[]string{"--tunnel-detection", "Maybe"}, tunnel.Off, true},
	} {
		c, err := ParseFlags(append([]string{"--policies", t.TempDir()}, tc.args...), nil)
		if tc.err {
			if err == nil {
				t.Errorf("%v: no error", tc.args)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if c.TunnelDetection != tc.want {
			t.Errorf("%v: %v, want %v", tc.args, c.TunnelDetection, tc.want)
		}
	}
}

// tunnelEngine is an engine whose policies set spec.tunnelDetection: Block for
// namespace shop, Off for batch/etl-0; everything else takes the node default.
func tunnelEngine(t testing.TB) *policy.Engine {
	t.Helper()
	const policies = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: quarantine-tunnels, namespace: shop}
spec:
  podSelector: {}
  tunnelDetection: Block
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: etl-no-detection, namespace: batch}
spec:
  podSelector: {matchLabels: {app: etl}}
  tunnelDetection: "Off"
`
	const workloads = `namespaces: [{name: shop}, {name: batch}]
pods:
- {namespace: shop, name: cart-0, ips: [10.0.0.2]}
- {namespace: batch, name: etl-0, labels: {app: etl}, ips: [10.0.0.3]}
- {namespace: batch, name: report-0, ips: [10.0.0.4]}
`
	objs, err := manifest.Decode("policies", strings.NewReader(policies))
	if err != nil {
		t.Fatal(err)
	}
	ws, err := manifest.DecodeWorkloads("workloads", []byte(workloads))
	if err != nil {
		t.Fatal(err)
	}
	store, err := manifest.LoadStore(objs, ws)
	if err != nil {
		t.Fatal(err)
	}
	return policy.NewEngine(store, policy.Options{})
}

// TestTunnelActionsFromPolicies: the detector's per-workload action comes from
// the policies' spec.tunnelDetection; workloads without one and clients that
// are not workloads take the node default; the lookup does not allocate.
func TestTunnelActionsFromPolicies(t *testing.T) {
	f := dnsproxy.TunnelActions(tunnelEngine(t))
	for _, tc := range []struct {
		key  string
		want tunnel.Action
		set  bool
	}{
		{"shop/cart-0", tunnel.Block, true},
		{"batch/etl-0", tunnel.Off, true},
		{"batch/report-0", tunnel.Off, false},
		{"other/unknown", tunnel.Off, false},
		{"client:10.9.9.9", tunnel.Off, false}, // a client that is no workload
	} {
		got, ok := f(tc.key)
		if ok != tc.set || (ok && got != tc.want) {
			t.Errorf("%s: %v %v, want %v %v", tc.key, got, ok, tc.want, tc.set)
		}
	}
	if n := testing.AllocsPerRun(1000, func() { f("shop/cart-0"); f("batch/report-0") }); n != 0 {
		t.Errorf("per-workload action lookup allocates %.1f times", n)
	}

	// The agent's detector with the node default Alert: the same tunnel is
	// quarantined for shop/cart-0 only, alerted for batch/report-0, and not
	// tracked for batch/etl-0.
	d := tunnel.New(tunnel.Config{Action: tunnel.Alert, ActionSet: true, ActionFor: f})
	for _, wl := range []string{"shop/cart-0", "batch/report-0", "batch/etl-0"} {
		var v tunnel.Verdict
		at := 0
		for i := 1; i <= 10 && at == 0; i++ {
			name := fmt.Sprintf("%064x.%064x.%d.t.c2-example.com.", i*7919, i*104729, i)
			if v = d.Observe(wl, name, 16, 0, 200); v.Suspected {
				at = i
			}
		}
		blocked, _ := d.Blocked(wl, "x.t.c2-example.com.")
		switch wl {
		case "shop/cart-0":
			if at == 0 || !blocked {
				t.Errorf("%s: suspected at %d, blocked %v; want both", wl, at, blocked)
			}
		case "batch/report-0":
			if at == 0 || blocked {
				t.Errorf("%s: suspected at %d, blocked %v; want alert only", wl, at, blocked)
			}
		case "batch/etl-0":
			if at != 0 || blocked || v.Score != 0 {
				t.Errorf("%s: suspected at %d, blocked %v, score %v; want nothing (Off)", wl, at, blocked, v.Score)
			}
		}
	}
}

// TestTunnelDetectionExample: deploy/examples/policies/tunnel-detection.yaml
// sets Block for namespace payments and Off for ops/prometheus-0; the other
// workloads take the node default.
func TestTunnelDetectionExample(t *testing.T) {
	objs, err := manifest.DecodeFile("../deploy/examples/policies/tunnel-detection.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := manifest.LoadWorkloads("../deploy/examples/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	store, err := manifest.LoadStore(objs, ws)
	if err != nil {
		t.Fatal(err)
	}
	f := dnsproxy.TunnelActions(policy.NewEngine(store, policy.Options{}))
	for key, want := range map[string]string{
		"payments/gateway-0": "Block", "payments/orders-0": "Block",
		"ops/prometheus-0": "Off", "builds/runner-0": "default",
	} {
		got := "default"
		if a, ok := f(key); ok {
			got = a.String()
		}
		if got != want {
			t.Errorf("%s: %s, want %s", key, got, want)
		}
	}
}

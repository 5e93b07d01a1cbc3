package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

// throughputPolicy is a FirewallPolicy of the synthetic cluster of
// TestThroughput (the shape of egress/bench_test.go's): pods app<k> of
// namespace ns<i> accept app<k+1> of their namespace on 8080 and the next
// namespace on 9090, and reach their namespace and 10.0.0.0/8 except
// 10.96.0.0/12 on 443.
func throughputPolicy(i, k, nsCount int) string {
	return fmt.Sprintf(`apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: app%[2]d, namespace: ns%[1]d}
spec:
  podSelector: {matchLabels: {app: app%[2]d}}
  ingress:
  - action: Allow
    from: [{pods: {podSelector: {matchLabels: {app: app%[3]d}}}}]
    ports: [{port: 8080}]
  - action: Allow
    from: [{namespaces: {matchLabels: {team: t%[4]d}}}]
    ports: [{port: 9090}]
  egress:
  - action: Allow
    to: [{namespaces: {matchLabels: {team: t%[1]d}}}]
  - action: Allow
    to: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
    ports: [{port: 443}]
`, i, k, (k+1)%10, (i+1)%nsCount)
}

const throughputAdmin = `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-metadata}
spec:
  tier: Admin
  priority: 10
  subject: {namespaceSelector: {}}
  egress:
  - action: Deny
    to: [{cidr: 169.254.169.254/32}]
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: pass-pods}
spec:
  tier: Admin
  priority: 20
  subject: {namespaceSelector: {}}
  egress:
  - action: Pass
    to: [{cidr: 10.100.0.0/14}]
`

// TestThroughput measures iperf3 TCP throughput between two pods (client
// ns0/app3 → server ns0/app2:8080, forwarded by the node namespace) with one
// policy loaded (the server's FirewallPolicy ns0/app2) and with 1,002 (1,000
// FirewallPolicies over 10,000 synthetic workloads plus the two pods, among
// them the policies selecting the two pods, and two Admin
// ClusterFirewallPolicies). It asserts only that the traffic flows and that
// the policies are enforced (a pod the policies do not allow is refused); the
// throughputs and their ratio (the budget: ≥ 90%) are logged. Runs of
// EGRESSD_IPERF_RUNS (default 3) alternate between the two rule sets; the
// medians are compared.
func TestThroughput(t *testing.T) {
	requireKernel(t)
	testenv.RequireTools(t, "iperf3")
	if testing.Short() {
		t.Skip("testing.Short(): throughput measurement")
	}
	node := netmodel.NewTestNode(t, netmodel.Options{Ports: []int{80}})
	pods, err := node.AddPodSpecs(
		netmodel.PodSpec{Name: "ns0/client", Labels: map[string]string{"app": "app3"}},
		netmodel.PodSpec{Name: "ns0/server", Labels: map[string]string{"app": "app2"}},
		netmodel.PodSpec{Name: "ns0/other", Labels: map[string]string{"app": "app5"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	client, server, other := pods[0], pods[1], pods[2]

	const nsCount, perNS = 100, 100
	ws := &policy.Workloads{}
	for i := 0; i < nsCount; i++ {
		ws.Namespaces = append(ws.Namespaces, policy.Namespace{Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i)}})
		for j := 0; j < perNS; j++ {
			n := i*perNS + j
			ws.Pods = append(ws.Pods, policy.Workload{Namespace: fmt.Sprintf("ns%d", i), Name: fmt.Sprintf("p%d", j),
				Labels: map[string]string{"app": fmt.Sprintf("app%d", j%10)},
				IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, byte(100 + n>>16), byte(n >> 8), byte(n)})}})
		}
	}
	for _, p := range pods {
		ws.Pods = append(ws.Pods, policy.Workload{Namespace: p.Namespace, Name: p.PodName, Labels: p.Labels, IPs: []netip.Addr{p.IPv4, p.IPv6}})
	}
	plans := map[string]*policy.Plan{}
	var many []string
	for i := 0; i < nsCount; i++ {
		for k := 0; k < 10; k++ {
			many = append(many, throughputPolicy(i, k, nsCount))
		}
	}
	many = append(many, throughputAdmin)
	for name, docs := range map[string][]string{"1": {throughputPolicy(0, 2, nsCount)}, "1000": many} {
		objs, err := manifest.Decode(name, strings.NewReader(strings.Join(docs, "---\n")))
		if err != nil {
			t.Fatal(err)
		}
		st, err := manifest.LoadStore(objs, ws)
		if err != nil {
			t.Fatal(err)
		}
		plans[name], _ = policy.NewCompiler(st, policy.Options{}).Compile()
	}
	if n := len(plans["1000"].Policies); n != 1002 {
		t.Fatalf("%d policies in the large plan", n)
	}

	enf, err := egress.New(egress.WithNetNS(node.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enf.Close() })
	ctx := context.Background()

	srv := exec.Command("ip", "netns", "exec", server.NetNSName(), "iperf3", "-s", "-p", "8080")
	if err := srv.Start(); err != nil {
		t.Fatalf("iperf3 server: %v", err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })

	runIperf := func() (float64, error) {
		var lastErr error
		for attempt := 0; attempt < 20; attempt++ { // the server may still be starting
			out, err := client.Exec(ctx, "", "iperf3", "-c", server.IPv4.String(), "-p", "8080", "-t", "3", "-J")
			if err == nil {
				var res struct {
					End struct {
						SumReceived struct {
							BitsPerSecond float64 `json:"bits_per_second"`
						} `json:"sum_received"`
					} `json:"end"`
				}
				if err := json.Unmarshal(out, &res); err != nil {
					return 0, fmt.Errorf("iperf3 output: %v: %s", err, out)
				}
				return res.End.SumReceived.BitsPerSecond, nil
			}
			lastErr = fmt.Errorf("%v: %s", err, out)
			time.Sleep(100 * time.Millisecond)
		}
		return 0, lastErr
	}

	runs := 3
	if v := testenvInt("EGRESSD_IPERF_RUNS"); v > 0 {
		runs = v
	}
	results := map[string][]float64{}
	for r := 0; r < runs; r++ {
		for _, name := range []string{"1", "1000"} {
			if err := enf.Apply(ctx, plans[name], policy.Changes{Full: true}); err != nil {
				t.Fatalf("apply %s: %v", name, err)
			}
			// The rule set is enforced: a pod the server's policy does not
			// allow cannot connect.
			pr := &netmodel.Prober{Timeout: 300 * time.Millisecond}
			if ok, _ := pr.Probe(ctx, other, server.IPv4, 80, netmodel.TCP, 0); ok {
				t.Fatalf("%s policies: ns0/other reaches the server", name)
			}
			bps, err := runIperf()
			if err != nil {
				t.Fatalf("%s policies: iperf3: %v", name, err)
			}
			if bps <= 0 {
				t.Fatalf("%s policies: no traffic", name)
			}
			results[name] = append(results[name], bps)
		}
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	one, thousand := med(results["1"]), med(results["1000"])
	t.Logf("iperf3 TCP ns0/client → ns0/server through the node: 1 policy %.2f Gbit/s %v, 1,002 policies %.2f Gbit/s %v; ratio %.1f%% (budget ≥ 90%%)",
		one/1e9, gbits(results["1"]), thousand/1e9, gbits(results["1000"]), 100*thousand/one)
}

func gbits(xs []float64) []string {
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprintf("%.2f", x/1e9))
	}
	return out
}

func testenvInt(name string) int {
	v, err := strconv.Atoi(os.Getenv(name))
	if err != nil {
		return 0
	}
	return v
}

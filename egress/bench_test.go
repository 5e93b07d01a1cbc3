package egress_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// throwawayNetNS returns the fd of a new, unnamed network namespace (gone when
// the fd is closed); the test's own namespace is untouched.
func throwawayNetNS(tb testing.TB) int {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root (network namespaces)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		tb.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ns.Close() })
	return int(ns)
}

// benchStore builds nsCount namespaces of podsPerNS pods (label app=app<j%10>)
// and, per namespace, 10 FirewallPolicies (one per app: ingress from the next
// app of the namespace on 8080 and from the next namespace on 9090; egress to
// the namespace and to 10.0.0.0/8 except 10.96.0.0/12 on 443), plus two
// ClusterFirewallPolicies (Admin deny of the metadata address, Admin pass of
// the pod CIDR): 10,000 workloads and 1,002 policies by default.
func benchStore(tb testing.TB, nsCount, podsPerNS int) *policy.Store {
	tb.Helper()
	ws := &policy.Workloads{}
	for i := 0; i < nsCount; i++ {
		ns := fmt.Sprintf("ns%d", i)
		ws.Namespaces = append(ws.Namespaces, policy.Namespace{Name: ns, Labels: map[string]string{"team": fmt.Sprintf("t%d", i)}})
		for j := 0; j < podsPerNS; j++ {
			n := i*podsPerNS + j
			ws.Pods = append(ws.Pods, policy.Workload{
				Namespace: ns, Name: fmt.Sprintf("p%d", j),
				Labels: map[string]string{"app": fmt.Sprintf("app%d", j%10)},
				IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, byte(100 + n>>16), byte(n >> 8), byte(n)})},
			})
		}
	}
	var docs []string
	for i := 0; i < nsCount; i++ {
		for k := 0; k < 10; k++ {
			docs = append(docs, benchPolicy(i, k, nsCount, 8080))
		}
	}
	docs = append(docs, `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: deny-metadata}
spec:
  tier: Admin
  priority: 10
  subject: {namespaceSelector: {}}
  egress:
  - action: Deny
    to: [{cidr: 169.254.169.254/32}]
`, `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: pass-pods}
spec:
  tier: Admin
  priority: 20
  subject: {namespaceSelector: {}}
  egress:
  - action: Pass
    to: [{cidr: 10.100.0.0/14}]
`)
	objs, err := manifest.Decode("bench", strings.NewReader(strings.Join(docs, "---\n")))
	if err != nil {
		tb.Fatal(err)
	}
	st, err := manifest.LoadStore(objs, ws)
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

func benchPolicy(i, k, nsCount, port int) string {
	return fmt.Sprintf(`apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: app%[2]d, namespace: ns%[1]d}
spec:
  podSelector: {matchLabels: {app: app%[2]d}}
  ingress:
  - action: Allow
    from: [{pods: {podSelector: {matchLabels: {app: app%[3]d}}}}]
    ports: [{port: %[5]d}]
  - action: Allow
    from: [{namespaces: {matchLabels: {team: t%[4]d}}}]
    ports: [{port: 9090}]
  egress:
  - action: Allow
    to: [{namespaces: {matchLabels: {team: t%[1]d}}}]
  - action: Allow
    to: [{cidr: 10.0.0.0/8, except: [10.96.0.0/12]}]
    ports: [{port: 443}]
`, i, k, (k+1)%10, (i+1)%nsCount, port)
}

func benchSize() (nsCount, pods int) {
	if testing.Short() {
		return 10, 100
	}
	return 100, 100
}

// BenchmarkApplyFull: the whole table (10,000 workloads, 1,002 policies) in one
// transaction: first-ms into an empty namespace, p50/p99/max adopting the table
// of the previous iteration.
func BenchmarkApplyFull(b *testing.B) {
	fd := throwawayNetNS(b)
	nsCount, pods := benchSize()
	st := benchStore(b, nsCount, pods)
	plan, _ := policy.NewCompiler(st, policy.Options{}).Compile()
	e, err := egress.New(egress.WithNetNS(fd))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	t0 := time.Now()
	if err := e.Apply(ctx, plan, policy.Changes{Full: true}); err != nil {
		b.Fatal(err)
	}
	first := time.Since(t0)
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := time.Now()
		if err := e.Apply(ctx, plan, policy.Changes{Full: true}); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(t))
	}
	b.StopTimer()
	reportPercentiles(b, ds)
	// After ResetTimer (which drops metrics reported before it).
	b.ReportMetric(float64(first.Microseconds())/1000, "first-ms")
}

// BenchmarkApplyIncremental: one policy change (a port), one pod added and one
// removed, each compiled and applied as a difference.
func BenchmarkApplyIncremental(b *testing.B) {
	fd := throwawayNetNS(b)
	nsCount, pods := benchSize()
	st := benchStore(b, nsCount, pods)
	comp := policy.NewCompiler(st, policy.Options{})
	plan, ch := comp.Compile()
	e, err := egress.New(egress.WithNetNS(fd))
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	if err := e.Apply(ctx, plan, ch); err != nil {
		b.Fatal(err)
	}
	var applyD, compileD []time.Duration
	step := func(i int) {
		switch i % 3 {
		case 0: // a policy changes its port
			port := 8080 + (i/3)%2 + 1
			objs, err := manifest.Decode("bench", strings.NewReader(benchPolicy(i%nsCount, i%10, nsCount, port)))
			if err != nil {
				b.Fatal(err)
			}
			if err := objs[0].Apply(st); err != nil {
				b.Fatal(err)
			}
		case 1: // a pod appears
			n := nsCount*pods + i
			if err := st.UpsertWorkload(policy.Workload{Namespace: fmt.Sprintf("ns%d", i%nsCount), Name: fmt.Sprintf("new%d", i),
				Labels: map[string]string{"app": fmt.Sprintf("app%d", i%10)},
				IPs:    []netip.Addr{netip.AddrFrom4([4]byte{10, byte(100 + n>>16), byte(n >> 8), byte(n)})}}); err != nil {
				b.Fatal(err)
			}
		case 2: // and goes away
			st.DeleteWorkload(policy.WorkloadKey{Namespace: fmt.Sprintf("ns%d", (i-1)%nsCount), Name: fmt.Sprintf("new%d", i-1)})
		}
		t := time.Now()
		plan, ch := comp.Compile()
		tc := time.Now()
		if err := e.Apply(ctx, plan, ch); err != nil {
			b.Fatal(err)
		}
		compileD = append(compileD, tc.Sub(t))
		applyD = append(applyD, time.Since(tc))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		step(i)
	}
	b.StopTimer()
	reportPercentiles(b, applyD)
	slices.Sort(compileD)
	if len(compileD) > 0 {
		b.ReportMetric(float64(compileD[len(compileD)*99/100].Microseconds())/1000, "compile-p99-ms")
	}
}

func reportPercentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(ds[len(ds)/2]), "p50-ms")
	b.ReportMetric(ms(ds[len(ds)*99/100]), "p99-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), "max-ms")
}

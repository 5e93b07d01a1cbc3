package dataplane

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/netmodel"
)

// TestKernelExemptionsMatchTheEngine (issue 14 §A.4): what the kernel lets
// through before any policy — a pod reaching itself, TCP and UDP to the node
// resolver — is what policy.Engine.Decide (egressctl explain and matrix)
// says, with real packets, for pods whose ingress and egress are both
// isolated: every cell of the pod-to-pod matrix (the loopback cells
// included, which the scenario conformance leaves out), DNS to the resolver
// over UDP and TCP, and another port of the resolver's address (not exempt).
func TestKernelExemptionsMatchTheEngine(t *testing.T) {
	requireKernel(t)
	ctx := context.Background()
	node := netmodel.NewTestNode(t, netmodel.Options{Ports: []int{80}})
	pods, err := node.AddPodSpecs(
		netmodel.PodSpec{Name: "x/a", Labels: map[string]string{"app": "a"}},
		netmodel.PodSpec{Name: "x/b", Labels: map[string]string{"app": "b"}},
		netmodel.PodSpec{Name: "y/c", Labels: map[string]string{"app": "c"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	res4, res6 := sdResolver4, sdResolver6
	sdAddNodeAddrs(t, node, res4.Addr(), res6.Addr())
	sdServeDNS(t, node.NS, res4, sdEgressdIP)
	sdServeDNS(t, node.NS, res6, sdEgressdIP)
	// Another port of the resolver's address, on the node.
	for _, a := range []netip.Addr{res4.Addr(), res6.Addr()} {
		ln, err := netmodel.ListenTCP(node.NS, netip.AddrPortFrom(a, 80).String())
		if err != nil {
			t.Fatal(err)
		}
		netmodel.ServeTCP(t, ln, func(c net.Conn) { c.Close() })
	}

	// x is isolated both ways (nothing allowed); y/c allows egress to x/b on 80.
	objs, err := manifest.Decode("exemptions", strings.NewReader(`apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: isolate, namespace: x}
spec: {podSelector: {}, ingress: [], egress: []}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: c-out, namespace: y}
spec:
  podSelector: {}
  egress: [{action: Allow, to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: b}}}}], ports: [{port: 80}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	ws := &policy.Workloads{Namespaces: []policy.Namespace{{Name: "x"}, {Name: "y"}}}
	for _, p := range pods {
		ws.Pods = append(ws.Pods, policy.Workload{Namespace: p.Namespace, Name: p.PodName, Labels: p.Labels, IPs: []netip.Addr{p.IPv4, p.IPv6}})
	}
	store, err := manifest.LoadStore(objs, ws)
	if err != nil {
		t.Fatal(err)
	}
	opts := policy.Options{NodeResolvers: []netip.AddrPort{res4, res6}}
	enf, err := egress.New(egress.WithNetNS(node.Fd()), egress.WithDNSExempt(res4, res6))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enf.Close() })
	plan, ch := policy.NewCompiler(store, opts).Compile()
	if err := enf.Apply(ctx, plan, ch); err != nil {
		t.Fatal(err)
	}
	eng := policy.NewEngine(store, opts)
	pr := &netmodel.Prober{Timeout: 300 * time.Millisecond, Recheck: true}

	var mismatches []string
	cells := 0
	for _, fam := range []netmodel.Family{netmodel.IPv4, netmodel.IPv6} {
		// The pod matrix, loopback cells included (egressctl matrix's cells).
		got, err := pr.Matrix(ctx, pods, []int{80}, []netmodel.Protocol{netmodel.TCP, netmodel.UDP}, fam)
		if err != nil {
			t.Fatal(err)
		}
		byName := map[string]*netmodel.Pod{}
		for _, p := range pods {
			byName[p.Name] = p
		}
		for c, ok := range got {
			d := eng.Decide(policy.Connection{Src: byName[c.From].Addr(fam), Dst: byName[c.To].Addr(fam), Port: int32(c.Port), Protocol: policy.Protocol(c.Proto)})
			cells++
			if ok != (d.Verdict == policy.Allow) {
				mismatches = append(mismatches, fmt.Sprintf("%v: kernel %v, engine %s (%s/%s)", c, ok, d.Verdict, d.Egress.Reason, d.Ingress.Reason))
			}
		}
		// The node resolver: DNS over UDP and TCP, and port 80 of its address.
		res := res4
		if fam == netmodel.IPv6 {
			res = res6
		}
		for _, p := range pods {
			for _, tcp := range []bool{false, true} {
				proto := policy.ProtocolUDP
				if tcp {
					proto = policy.ProtocolTCP
				}
				d := eng.Decide(policy.Connection{Src: p.Addr(fam), Dst: res.Addr(), Port: 53, Protocol: proto})
				_, ok := sdQuery(p, res, tcp)
				cells++
				if ok != (d.Verdict == policy.Allow) || d.Egress.Reason != policy.ReasonNodeResolver {
					mismatches = append(mismatches, fmt.Sprintf("%s → resolver %s %s: kernel %v, engine %s (%s)", p.Name, res, proto, ok, d.Verdict, d.Egress.Reason))
				}
			}
			d := eng.Decide(policy.Connection{Src: p.Addr(fam), Dst: res.Addr(), Port: 80, Protocol: policy.ProtocolTCP})
			ok := dialFrom(p, netip.AddrPortFrom(res.Addr(), 80))
			cells++
			if ok != (d.Verdict == policy.Allow) {
				mismatches = append(mismatches, fmt.Sprintf("%s → %s TCP/80: kernel %v, engine %s (%s)", p.Name, res.Addr(), ok, d.Verdict, d.Egress.Reason))
			}
		}
	}
	if len(mismatches) > 0 {
		out, _ := node.Exec(ctx, "", "nft", "list", "table", "inet", "egressd")
		t.Fatalf("%d of %d cells differ from the engine:\n%s\n%s", len(mismatches), cells, strings.Join(mismatches, "\n"), out)
	}
	t.Logf("%d cells agree with the engine (v4 and v6)", cells)
}

// dialFrom says whether a TCP connection from inside pod to ap is accepted.
func dialFrom(pod *netmodel.Pod, ap netip.AddrPort) bool {
	for attempt := 0; attempt < 2; attempt++ {
		err := pod.Do(func() error {
			c, err := net.DialTimeout("tcp", ap.String(), 400*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return true
		}
	}
	return false
}

package policy_test

import (
	"fmt"
	"math/rand"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/egressd/egressd/policy"
)

// The benchmark cluster: 100 namespaces × 100 pods, ~800 namespaced policies
// (FirewallPolicy and NetworkPolicy with pod/namespace selectors, ports, named
// ports, ranges, CIDRs, some FQDN rules) and 200 ClusterFirewallPolicies (150
// Admin, 50 Baseline).
const (
	benchNamespaces = 100
	benchPods       = 100
)

func benchNS(i int) string  { return fmt.Sprintf("ns-%02d", i) }
func benchPod(j int) string { return fmt.Sprintf("pod-%02d", j) }

func benchIPs(i, j int) []netip.Addr {
	return []netip.Addr{
		netip.AddrFrom4([4]byte{10, byte(i), byte(j / 256), byte(j % 256)}),
		netip.MustParseAddr(fmt.Sprintf("fd00::%x:%x", i, j)),
	}
}

func benchWorkload(i, j int, app string) policy.Workload {
	return policy.Workload{
		Namespace: benchNS(i), Name: benchPod(j),
		Labels: map[string]string{"app": app, "tier": []string{"web", "db", "cache", "batch"}[j%4]},
		IPs:    benchIPs(i, j),
		Ports:  []policy.NamedPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}},
	}
}

func intPort(n int32) *intstr.IntOrString { v := intstr.FromInt32(n); return &v }
func namedPort(s string) *intstr.IntOrString {
	v := intstr.FromString(s)
	return &v
}

func labelsSel(kv ...string) *metav1.LabelSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: m}
}

// benchStore builds the benchmark cluster.
func benchStore(tb testing.TB) *policy.Store {
	tb.Helper()
	r := rand.New(rand.NewSource(1))
	s := policy.NewStore()
	must := func(err error) {
		if err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < benchNamespaces; i++ {
		must(s.UpsertNamespace(policy.Namespace{Name: benchNS(i), Labels: map[string]string{"team": fmt.Sprintf("t%d", i%10), "env": []string{"prod", "dev"}[i%2]}}))
		for j := 0; j < benchPods; j++ {
			must(s.UpsertWorkload(benchWorkload(i, j, fmt.Sprintf("app%d", j%20))))
		}
	}
	// 8 namespaced policies per namespace: 800.
	for i := 0; i < benchNamespaces; i++ {
		for k := 0; k < 8; k++ {
			app := fmt.Sprintf("app%d", (k*3+i)%20)
			from := fmt.Sprintf("app%d", r.Intn(20))
			name := fmt.Sprintf("p%d", k)
			if k%2 == 0 {
				np := benchNetworkPolicy(benchNS(i), name, app, from, r)
				must(s.UpsertNetworkPolicy(np))
				continue
			}
			fp := &policy.FirewallPolicy{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNS(i)},
				Spec: policy.FirewallPolicySpec{
					PodSelector: *labelsSel("app", app),
					Ingress: []policy.Rule{
						{Action: policy.ActionAllow, From: []policy.Peer{{Pods: &policy.PodsPeer{PodSelector: *labelsSel("app", from)}}}, Ports: []policy.PortRule{{Port: namedPort("http")}, {Port: intPort(9000), EndPort: func() *int32 { v := int32(9100); return &v }()}}},
						{Action: policy.ActionDeny, From: []policy.Peer{{Namespaces: labelsSel("env", "dev")}}},
					},
					Egress: []policy.Rule{
						{Action: policy.ActionAllow, To: []policy.Peer{{Pods: &policy.PodsPeer{PodSelector: *labelsSel("tier", "db"), NamespaceSelector: labelsSel("team", fmt.Sprintf("t%d", r.Intn(10)))}}}, Ports: []policy.PortRule{{Port: intPort(5432)}}},
						{Action: policy.ActionAllow, To: []policy.Peer{{CIDR: "10.0.0.0/8", Except: []string{fmt.Sprintf("10.%d.0.0/16", r.Intn(100))}}}, Ports: []policy.PortRule{{Port: intPort(443)}}},
					},
				},
			}
			if k == 3 {
				fp.Spec.Egress = append(fp.Spec.Egress, policy.Rule{Action: policy.ActionAllow,
					To:    []policy.Peer{{FQDN: &policy.FQDNPeer{MatchName: fmt.Sprintf("api%d.example.com", i)}}, {FQDN: &policy.FQDNPeer{MatchPattern: "*.s3.amazonaws.com"}}},
					Ports: []policy.PortRule{{Port: intPort(443)}}})
			}
			must(s.UpsertFirewallPolicy(fp))
		}
	}
	// 200 cluster policies.
	for k := 0; k < 200; k++ {
		tier := policy.TierAdmin
		if k >= 150 {
			tier = policy.TierBaseline
		}
		cp := &policy.ClusterFirewallPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("c%03d", k)},
			Spec: policy.ClusterFirewallPolicySpec{
				Tier: tier, Priority: int32(r.Intn(100)),
				Subject: policy.Subject{NamespaceSelector: *labelsSel("team", fmt.Sprintf("t%d", k%10))},
				Ingress: []policy.Rule{
					{Action: policy.ActionDeny, From: []policy.Peer{{CIDR: fmt.Sprintf("192.168.%d.0/24", k)}}},
					{Action: policy.ActionAllow, From: []policy.Peer{{Namespaces: labelsSel("team", fmt.Sprintf("t%d", r.Intn(10)))}}, Ports: []policy.PortRule{{Port: namedPort("metrics")}}},
				},
				Egress: []policy.Rule{
					{Action: policy.ActionDeny, To: []policy.Peer{{CIDR: "169.254.169.254/32"}}},
					{Action: policy.ActionDeny, To: []policy.Peer{{FQDN: &policy.FQDNPeer{MatchPattern: fmt.Sprintf("*.pool%d.example", k)}}}},
				},
			},
		}
		if tier == policy.TierAdmin && k%5 == 0 {
			cp.Spec.Ingress = append([]policy.Rule{{Action: policy.ActionPass, From: []policy.Peer{{Pods: &policy.PodsPeer{PodSelector: *labelsSel("tier", "web")}}}}}, cp.Spec.Ingress...)
		}
		must(s.UpsertClusterFirewallPolicy(cp))
	}
	return s
}

func benchNetworkPolicy(ns, name, app, from string, r *rand.Rand) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	udp := corev1.ProtocolUDP
	end := int32(9100)
	return &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: *labelsSel("app", app),
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{
					{PodSelector: labelsSel("app", from)},
					{NamespaceSelector: labelsSel("team", fmt.Sprintf("t%d", r.Intn(10))), PodSelector: labelsSel("tier", "web")},
				},
				Ports: []networkingv1.NetworkPolicyPort{{Port: namedPort("http"), Protocol: &tcp}, {Port: intPort(9000), EndPort: &end, Protocol: &udp}},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{
				{To: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: labelsSel("env", "prod")}}, Ports: []networkingv1.NetworkPolicyPort{{Port: intPort(8080)}}},
				{To: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "0.0.0.0/0", Except: []string{"10.0.0.0/8", "169.254.0.0/16"}}}}},
			},
		},
	}
}

func BenchmarkCompileFull(b *testing.B) {
	s := benchStore(b)
	c := policy.NewCompiler(s, policy.Options{})
	c.Compile()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.Recompile()
	}
}

func BenchmarkCompileIncrementalPodLabel(b *testing.B) {
	s := benchStore(b)
	c := policy.NewCompiler(s, policy.Options{})
	c.Compile()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		app := "app3"
		if i%2 == 0 {
			app = "app7"
		}
		if err := s.UpsertWorkload(benchWorkload(42, 17, app)); err != nil {
			b.Fatal(err)
		}
		if _, ch := c.Compile(); ch.Full {
			b.Fatal("full compile")
		}
	}
}

func BenchmarkCompileIncrementalPolicy(b *testing.B) {
	s := benchStore(b)
	c := policy.NewCompiler(s, policy.Options{})
	c.Compile()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fp := &policy.FirewallPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: benchNS(42)},
			Spec: policy.FirewallPolicySpec{
				PodSelector: *labelsSel("app", fmt.Sprintf("app%d", i%20)),
				Ingress:     []policy.Rule{{Action: policy.ActionAllow, From: []policy.Peer{{Pods: &policy.PodsPeer{PodSelector: *labelsSel("app", "app1")}}}, Ports: []policy.PortRule{{Port: namedPort("http")}}}},
			},
		}
		if err := s.UpsertFirewallPolicy(fp); err != nil {
			b.Fatal(err)
		}
		if _, ch := c.Compile(); ch.Full {
			b.Fatal("full compile")
		}
	}
}

func BenchmarkDecide(b *testing.B) {
	s := benchStore(b)
	e := policy.NewEngine(s, policy.Options{})
	conns := []policy.Connection{
		{Src: benchIPs(3, 5)[0], Dst: benchIPs(13, 8)[0], Port: 8080, Protocol: policy.ProtocolTCP},
		{Src: benchIPs(7, 50)[0], Dst: benchIPs(7, 60)[0], Port: 9090, Protocol: policy.ProtocolTCP},
		{Src: benchIPs(99, 99)[1], Dst: benchIPs(0, 1)[1], Port: 5432, Protocol: policy.ProtocolTCP},
		{Src: benchIPs(21, 3)[0], Dst: netip.MustParseAddr("169.254.169.254"), Port: 80, Protocol: policy.ProtocolTCP},
	}
	for _, c := range conns {
		e.Decide(c) // warm the per-workload cache
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.Decide(conns[i%len(conns)])
	}
}

// BenchmarkDecideLookup decides lookups for a workload that 10,000 FQDN
// patterns apply to (on top of the benchmark cluster).
func BenchmarkDecideLookup(b *testing.B) {
	s := benchStore(b)
	w := policy.WorkloadKey{Namespace: benchNS(5), Name: benchPod(5)}
	var rules []policy.Rule
	for r := 0; r < 10; r++ {
		rule := policy.Rule{Action: policy.ActionAllow, Ports: []policy.PortRule{{Port: intPort(443)}}}
		for k := 0; k < 1000; k++ {
			n := r*1000 + k
			var f policy.FQDNPeer
			switch n % 10 {
			case 0, 1, 2, 3, 4, 5:
				f.MatchName = fmt.Sprintf("svc%d.example%d.com", n, n%97)
			case 6, 7, 8:
				f.MatchPattern = fmt.Sprintf("*.cdn%d.example.net", n)
			default:
				f.MatchPattern = fmt.Sprintf("**.zone%d.example.org", n)
			}
			rule.To = append(rule.To, policy.Peer{FQDN: &f})
		}
		rules = append(rules, rule)
	}
	fp := &policy.FirewallPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "fqdn-10k", Namespace: benchNS(5)},
		Spec:       policy.FirewallPolicySpec{PodSelector: *labelsSel("app", "app5"), Lookups: policy.LookupsEnforce, Egress: rules},
	}
	if err := s.UpsertFirewallPolicy(fp); err != nil {
		b.Fatal(err)
	}
	e := policy.NewEngine(s, policy.Options{})
	names := []string{"svc4002.example25.com", "a.cdn7.example.net", "x.y.zone9.example.org", "unknown.example.com", "kubernetes.default.svc.cluster.local", "a.pool3.example"}
	want := []bool{false, false, false, true, false, true}
	for i, n := range names {
		if got := e.DecideLookup(w, n).Blocked(); got != want[i] {
			b.Fatalf("%s: blocked=%v, want %v", n, got, want[i])
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.DecideLookup(w, names[i%len(names)])
	}
}

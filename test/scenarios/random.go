package scenarios

import (
	"fmt"
	"math/rand"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/policy"
)

// Random returns a valid random policy set over the model, determined by seed:
// one to six policies of all three kinds (NetworkPolicy with every policyTypes
// form, FirewallPolicy with present, empty and absent directions, ClusterFirewall-
// Policy in both tiers with colliding priorities, Allow/Deny/Pass, Audit mode),
// label selectors with matchLabels and every matchExpressions operator, numeric,
// named and ranged ports of every protocol, CIDRs with except over the pod
// addresses, FQDN peers, plus the external peer and a few recorded lookups so that
// FQDN rules match. Expect is nil: the engine computes the expected tables
// (Actual), and the dataplane is checked against them.
func Random(seed int64) Scenario {
	g := &gen{r: rand.New(rand.NewSource(seed)), name: fmt.Sprintf("random-%d", seed)}
	s := Scenario{Name: g.name, Externals: []External{DefaultExternal}}
	n := 1 + g.r.Intn(6)
	for i := 0; i < n; i++ {
		var obj any
		switch g.r.Intn(3) {
		case 0:
			obj = g.networkPolicy(i)
		case 1:
			obj = g.firewallPolicy(i)
		default:
			obj = g.clusterPolicy(i)
		}
		b, err := yaml.Marshal(obj)
		if err != nil {
			panic(err) // plain structs always marshal
		}
		s.Policies = append(s.Policies, string(b))
	}
	for i, k := 0, 2+g.r.Intn(4); i < k; i++ {
		from := PodKeys()[g.r.Intn(9)]
		name := g.pick(fqdnNames)
		var ips []netip.Addr
		if name.ext {
			ips = []netip.Addr{DefaultExternal.IPv4, DefaultExternal.IPv6}
		} else {
			ips = []netip.Addr{PodIPv4(name.ns, name.pod), PodIPv6(name.ns, name.pod)}
		}
		s.Lookups = append(s.Lookups, Lookup{Workload: from, Name: name.name, IPs: ips})
	}
	return s
}

type fqdnName struct {
	name    string
	ns, pod string
	ext     bool
}

var fqdnNames = []fqdnName{
	{name: "a.y.example.org", ns: "y", pod: "a"},
	{name: "b.y.example.org", ns: "y", pod: "b"},
	{name: "c.z.example.org", ns: "z", pod: "c"},
	{name: "x.b.x.example.org", ns: "x", pod: "b"},
	{name: "api.example.com", ext: true},
	{name: "xmr-pool.com", ext: true},
}

var fqdnPeers = []policy.FQDNPeer{
	{MatchPattern: "*.y.example.org"},
	{MatchPattern: "**.example.org"},
	{MatchName: "c.z.example.org"},
	{MatchName: "api.example.com"},
	{MatchPattern: "xmr-*.com"},
	{MatchPattern: "*"},
}

type cidr struct {
	cidr   string
	except []string
}

var cidrs = []cidr{
	{"10.244.0.0/16", []string{"10.244.2.0/24"}},
	{"10.244.1.0/24", []string{"10.244.1.2/32"}},
	{"10.244.3.3/32", nil},
	{"0.0.0.0/0", []string{"10.244.0.0/16"}},
	{"192.0.2.0/24", nil},
	{"fd00:244::/64", []string{"fd00:244::3:0/112"}},
	{"fd00:244::1:0/112", []string{"fd00:244::1:1/128", "fd00:244::1:3/128"}},
	{"::/0", []string{"fd00:244::2:0/112"}},
}

type gen struct {
	r    *rand.Rand
	name string
}

func pickOf[T any](g *gen, xs []T) T { return xs[g.r.Intn(len(xs))] }

func (g *gen) pick(xs []fqdnName) fqdnName { return pickOf(g, xs) }

func (g *gen) chance(pct int) bool { return g.r.Intn(100) < pct }

func (g *gen) podSelector() *metav1.LabelSelector {
	return pickOf(g, []func() *metav1.LabelSelector{
		func() *metav1.LabelSelector { return &metav1.LabelSelector{} },
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchLabels: map[string]string{"pod": pickOf(g, PodNames)}}
		},
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", pickOf(g, PodNames)}}}}
		},
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpNotIn, Values: []string{pickOf(g, PodNames)}}}}
		},
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpExists}}}
		},
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpDoesNotExist}}}
		},
	})()
}

func (g *gen) nsSelector() *metav1.LabelSelector {
	return pickOf(g, []func() *metav1.LabelSelector{
		func() *metav1.LabelSelector { return &metav1.LabelSelector{} },
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchLabels: map[string]string{"ns": pickOf(g, Namespaces)}}
		},
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchLabels: map[string]string{policy.NamespaceNameLabel: pickOf(g, Namespaces)}}
		},
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: policy.NamespaceNameLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{pickOf(g, Namespaces)}}}}
		},
		func() *metav1.LabelSelector {
			return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "ns", Operator: metav1.LabelSelectorOpIn, Values: []string{pickOf(g, Namespaces), pickOf(g, Namespaces)}}}}
		},
	})()
}

// portRule returns one port rule in the project's form.
func (g *gen) portRule() policy.PortRule {
	num := func(n int) *intstr.IntOrString { v := intstr.FromInt32(int32(n)); return &v }
	name := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	end := func(n int32) *int32 { return &n }
	proto := pickOf(g, Protocols)
	switch g.r.Intn(6) {
	case 0:
		return policy.PortRule{Port: num(80)}
	case 1:
		return policy.PortRule{Port: num(int(pickOf(g, Ports))), Protocol: proto}
	case 2:
		return policy.PortRule{Protocol: proto}
	case 3:
		return policy.PortRule{Port: name(PortName(pickOf(g, Ports), proto)), Protocol: proto}
	case 4:
		return policy.PortRule{Port: num(79), EndPort: end(80), Protocol: proto}
	default:
		return policy.PortRule{Port: num(81), EndPort: end(1000), Protocol: proto}
	}
}

func (g *gen) portRules() []policy.PortRule {
	if g.chance(40) {
		return nil
	}
	out := []policy.PortRule{g.portRule()}
	if g.chance(30) {
		out = append(out, g.portRule())
	}
	return out
}

func (g *gen) peer(dir policy.Direction, namespaced bool) policy.Peer {
	k := g.r.Intn(5)
	if k == 4 && dir == policy.Ingress {
		k = g.r.Intn(4)
	}
	switch k {
	case 0:
		p := &policy.PodsPeer{PodSelector: *g.podSelector()}
		if !namespaced || g.chance(50) {
			if g.chance(70) {
				p.NamespaceSelector = g.nsSelector()
			}
		}
		return policy.Peer{Pods: p}
	case 1:
		return policy.Peer{Namespaces: g.nsSelector()}
	case 2, 3:
		c := pickOf(g, cidrs)
		return policy.Peer{CIDR: c.cidr, Except: c.except}
	default:
		f := pickOf(g, fqdnPeers)
		return policy.Peer{FQDN: &f}
	}
}

func (g *gen) rules(dir policy.Direction, tier policy.Tier) []policy.Rule {
	var out []policy.Rule
	for i, n := 0, g.r.Intn(4); i < n; i++ {
		r := policy.Rule{Action: policy.ActionAllow, Ports: g.portRules()}
		switch x := g.r.Intn(10); {
		case x < 4 && tier != policy.TierNamespaced:
			r.Action = policy.ActionDeny
		case x < 2:
			r.Action = policy.ActionDeny
		case x == 9 && tier == policy.TierAdmin:
			r.Action = policy.ActionPass
		}
		if g.chance(25) {
			r.Name = fmt.Sprintf("r%d", i)
		}
		for j, m := 0, g.r.Intn(3); j < m; j++ {
			p := g.peer(dir, tier == policy.TierNamespaced)
			if dir == policy.Ingress {
				r.From = append(r.From, p)
			} else {
				r.To = append(r.To, p)
			}
		}
		out = append(out, r)
	}
	return out
}

// direction returns nil (absent), an empty list (isolate, nothing allowed) or rules.
func (g *gen) direction(dir policy.Direction, tier policy.Tier) []policy.Rule {
	switch g.r.Intn(4) {
	case 0:
		return nil
	case 1:
		return []policy.Rule{}
	}
	if rs := g.rules(dir, tier); len(rs) > 0 {
		return rs
	}
	return []policy.Rule{}
}

func (g *gen) mode() policy.Mode {
	switch g.r.Intn(6) {
	case 0:
		return policy.ModeAudit
	case 1:
		return policy.ModeEnforce
	}
	return ""
}

func (g *gen) clusterPolicy(i int) *policy.ClusterFirewallPolicy {
	tier := policy.TierAdmin
	if g.chance(40) {
		tier = policy.TierBaseline
	}
	p := &policy.ClusterFirewallPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: policy.APIVersion, Kind: policy.KindClusterFirewallPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", g.name, i)},
		Spec: policy.ClusterFirewallPolicySpec{
			Tier:     tier,
			Priority: pickOf(g, []int32{0, 1, 1, 2, 5}),
			Mode:     g.mode(),
			Subject:  policy.Subject{NamespaceSelector: *g.nsSelector()},
		},
	}
	if g.chance(50) {
		p.Spec.Subject.PodSelector = g.podSelector()
	}
	p.Spec.Ingress = g.rules(policy.Ingress, tier)
	p.Spec.Egress = g.rules(policy.Egress, tier)
	if len(p.Spec.Ingress)+len(p.Spec.Egress) == 0 {
		p.Spec.Egress = []policy.Rule{{Action: policy.ActionDeny, Ports: []policy.PortRule{g.portRule()}}}
	}
	return p
}

func (g *gen) firewallPolicy(i int) *policy.FirewallPolicy {
	p := &policy.FirewallPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: policy.APIVersion, Kind: policy.KindFirewallPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", g.name, i), Namespace: pickOf(g, Namespaces)},
		Spec: policy.FirewallPolicySpec{
			Mode:        g.mode(),
			PodSelector: *g.podSelector(),
			Ingress:     g.direction(policy.Ingress, policy.TierNamespaced),
			Egress:      g.direction(policy.Egress, policy.TierNamespaced),
		},
	}
	if g.chance(30) {
		p.Spec.Lookups = policy.LookupsEnforce
	}
	return p
}

func (g *gen) networkPolicy(i int) *networkingv1.NetworkPolicy {
	p := &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: policy.KindNetworkPolicy},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", g.name, i), Namespace: pickOf(g, Namespaces)},
		Spec:       networkingv1.NetworkPolicySpec{PodSelector: *g.podSelector()},
	}
	switch g.r.Intn(4) {
	case 1:
		p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	case 2:
		p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	case 3:
		p.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	}
	for j, n := 0, g.r.Intn(3); j < n; j++ {
		var r networkingv1.NetworkPolicyIngressRule
		r.From, r.Ports = g.netpolPeers(), g.netpolPorts()
		p.Spec.Ingress = append(p.Spec.Ingress, r)
	}
	for j, n := 0, g.r.Intn(3); j < n; j++ {
		var r networkingv1.NetworkPolicyEgressRule
		r.To, r.Ports = g.netpolPeers(), g.netpolPorts()
		p.Spec.Egress = append(p.Spec.Egress, r)
	}
	return p
}

func (g *gen) netpolPeers() []networkingv1.NetworkPolicyPeer {
	var out []networkingv1.NetworkPolicyPeer
	for i, n := 0, g.r.Intn(3); i < n; i++ {
		switch g.r.Intn(4) {
		case 0:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.podSelector()})
		case 1:
			out = append(out, networkingv1.NetworkPolicyPeer{NamespaceSelector: g.nsSelector()})
		case 2:
			out = append(out, networkingv1.NetworkPolicyPeer{PodSelector: g.podSelector(), NamespaceSelector: g.nsSelector()})
		default:
			c := pickOf(g, cidrs)
			out = append(out, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c.cidr, Except: c.except}})
		}
	}
	return out
}

func (g *gen) netpolPorts() []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, pr := range g.portRules() {
		np := networkingv1.NetworkPolicyPort{Port: pr.Port, EndPort: pr.EndPort}
		if pr.Protocol != "" {
			proto := corev1.Protocol(pr.Protocol)
			np.Protocol = &proto
		}
		out = append(out, np)
	}
	return out
}

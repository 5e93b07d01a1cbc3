package policy_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"text/template"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/network-policy-api/conformance"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// hostNetworkPorts stand for the suite's free host ports (its templates'
// .HostNetworkPorts).
var hostNetworkPorts = []int{34345, 34346, 34347, 34348, 34349, 34350, 34351, 34352}

// upstreamFile returns a file of the conformance suite embedded in
// sigs.k8s.io/network-policy-api v0.3.0 with its template applied, as the
// suite applies it.
func upstreamFile(t *testing.T, name string) string {
	t.Helper()
	b, err := conformance.Manifests.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := template.New(name).Parse(string(b))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := tpl.Execute(&out, struct{ HostNetworkPorts []int }{hostNetworkPorts}); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// upstreamModel is the suite's base/manifests.yaml as workloads: five
// namespaces, two pods per StatefulSet with the template's labels and named
// container ports; the host-network StatefulSet's pods are the nodes (their
// address is a node's, labelled kubernetes.io/os: linux as nodes are).
type upstreamModel struct {
	ws *policy.Workloads
	ip map[string]netip.Addr // "namespace/pod" → address
}

func loadUpstreamModel(t *testing.T) *upstreamModel {
	m := &upstreamModel{ws: &policy.Workloads{}, ip: map[string]netip.Addr{}}
	for i, doc := range manifest.SplitDocuments([]byte(upstreamFile(t, "base/manifests.yaml"))) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind == "" {
			continue
		}
		switch meta.Kind {
		case "Namespace":
			var ns corev1.Namespace
			if err := yaml.Unmarshal(doc, &ns); err != nil {
				t.Fatal(err)
			}
			m.ws.Namespaces = append(m.ws.Namespaces, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
		case "StatefulSet":
			var sts appsv1.StatefulSet
			if err := yaml.Unmarshal(doc, &sts); err != nil {
				t.Fatal(err)
			}
			for r := 0; r < int(*sts.Spec.Replicas); r++ {
				name := fmt.Sprintf("%s-%d", sts.Name, r)
				key := sts.Namespace + "/" + name
				if sts.Spec.Template.Spec.HostNetwork {
					ip := netip.AddrFrom4([4]byte{192, 168, 0, byte(r + 1)})
					m.ip[key] = ip
					m.ws.Nodes = append(m.ws.Nodes, policy.Node{Name: fmt.Sprintf("node-%d", r), Labels: map[string]string{"kubernetes.io/os": "linux"}, IPs: []netip.Addr{ip}})
					continue
				}
				ip := netip.AddrFrom4([4]byte{10, byte(i), 0, byte(r + 1)})
				m.ip[key] = ip
				w := policy.Workload{Namespace: sts.Namespace, Name: name, Labels: sts.Spec.Template.Labels, IPs: []netip.Addr{ip}}
				for _, c := range sts.Spec.Template.Spec.Containers {
					for _, p := range c.Ports {
						if p.Name != "" {
							w.Ports = append(w.Ports, policy.NamedPort{Name: p.Name, Port: p.ContainerPort, Protocol: policy.Protocol(p.Protocol)})
						}
					}
				}
				m.ws.Pods = append(m.ws.Pods, w)
			}
		}
	}
	if len(m.ws.Pods) != 8 || len(m.ws.Nodes) != 2 {
		t.Fatalf("model: %d pods, %d nodes; want 8 and 2", len(m.ws.Pods), len(m.ws.Nodes))
	}
	return m
}

// poke is one kubernetes.PokeServer of the suite: from pod ("house/pod"),
// to pod, protocol, port, whether the connection must succeed.
type poke struct {
	from, to string
	proto    policy.Protocol
	port     int32
	want     bool
}

// step is one t.Run of a suite test: a change to the applied objects (the
// suite's PatchClusterNetworkPolicy or a delete), then its pokes.
type step struct {
	name   string
	mutate func(t *testing.T, objs []manifest.Object) []manifest.Object
	pokes  []poke
}

var houses = map[string]string{
	"harry-potter": "gryffindor", "draco-malfoy": "slytherin", "cedric-diggory": "hufflepuff",
	"luna-lovegood": "ravenclaw", "centaur": "forbidden-forrest",
}

func (m *upstreamModel) addr(t *testing.T, pod string) netip.Addr {
	t.Helper()
	house := houses[pod[:strings.LastIndexByte(pod, '-')]]
	ip, ok := m.ip["network-policy-conformance-"+house+"/"+pod]
	if !ok {
		t.Fatalf("no pod %s", pod)
	}
	return ip
}

func cnpOf(t *testing.T, objs []manifest.Object, name string) *manifest.Object {
	for i := range objs {
		if o := objs[i].ClusterNetworkPolicy; o != nil && o.Name == name {
			return &objs[i]
		}
	}
	t.Fatalf("no ClusterNetworkPolicy %s", name)
	return nil
}

func swapEgress(name string, i, j int) func(*testing.T, []manifest.Object) []manifest.Object {
	return func(t *testing.T, objs []manifest.Object) []manifest.Object {
		e := cnpOf(t, objs, name).ClusterNetworkPolicy.Spec.Egress
		e[i], e[j] = e[j], e[i]
		return objs
	}
}

// TestCNPUpstreamConformance runs test cases of upstream's conformance suite
// (conformance/tests of sigs.k8s.io/network-policy-api v0.3.0) against the
// engine: the manifests are the suite's own files (conformance.Manifests),
// the steps and expected results are those of the named tests.
func TestCNPUpstreamConformance(t *testing.T) {
	m := loadUpstreamModel(t)
	hp := hostNetworkPorts
	cases := []struct {
		test     string // upstream ShortName
		manifest string
		steps    []step
	}{
		{"CNPAdminTierEgressTCP", "base/admin_tier/standard-egress-tcp-rules.yaml", []step{
			{name: "allow-egress, rule order", pokes: []poke{
				{"harry-potter-0", "luna-lovegood-0", "TCP", 80, true}, {"harry-potter-1", "luna-lovegood-0", "TCP", 8080, true}}},
			{name: "allow-egress at the port", pokes: []poke{
				{"harry-potter-0", "cedric-diggory-1", "TCP", 8080, true}, {"harry-potter-1", "cedric-diggory-1", "TCP", 80, false}}},
			{name: "ingress unaffected", pokes: []poke{
				{"luna-lovegood-0", "harry-potter-0", "TCP", 80, true}, {"draco-malfoy-0", "harry-potter-1", "TCP", 80, true}}},
			{name: "deny-egress, rule order (swap 0,1)", mutate: swapEgress("egress-tcp", 0, 1), pokes: []poke{
				{"harry-potter-0", "luna-lovegood-1", "TCP", 80, false}, {"harry-potter-1", "luna-lovegood-1", "TCP", 8080, false}}},
			{name: "deny-egress at the port", pokes: []poke{
				{"harry-potter-0", "draco-malfoy-0", "TCP", 80, false}, {"harry-potter-1", "draco-malfoy-0", "TCP", 8080, true}}},
			{name: "pass-egress, rule order (swap 0,2)", mutate: swapEgress("egress-tcp", 0, 2), pokes: []poke{
				{"harry-potter-0", "luna-lovegood-0", "TCP", 80, true}, {"harry-potter-1", "luna-lovegood-0", "TCP", 8080, true}}},
			{name: "pass-egress at the port (swap 3,4)", mutate: swapEgress("egress-tcp", 3, 4), pokes: []poke{
				{"harry-potter-0", "draco-malfoy-0", "TCP", 80, true}, {"harry-potter-1", "draco-malfoy-0", "TCP", 8080, true}}},
		}},
		{"CNPAdminTierIntegration", "base/api_integration/standard-anp-np-banp.yaml", []step{
			{name: "deny from slytherin", pokes: []poke{
				{"draco-malfoy-0", "harry-potter-0", "TCP", 80, false}, {"draco-malfoy-1", "harry-potter-0", "TCP", 8080, false}}},
			{name: "deny to slytherin", pokes: []poke{
				{"harry-potter-0", "draco-malfoy-0", "TCP", 80, false}, {"harry-potter-1", "draco-malfoy-0", "TCP", 8080, false}}},
			{name: "pass-ingress, NetworkPolicy decides", mutate: func(t *testing.T, objs []manifest.Object) []manifest.Object {
				cnpOf(t, objs, "pass-example").ClusterNetworkPolicy.Spec.Ingress[0].Action = "Pass"
				return objs
			}, pokes: []poke{
				{"draco-malfoy-0", "harry-potter-0", "TCP", 80, true}, {"draco-malfoy-1", "harry-potter-0", "TCP", 8080, true}}},
			{name: "pass-egress, NetworkPolicy decides", mutate: func(t *testing.T, objs []manifest.Object) []manifest.Object {
				cnpOf(t, objs, "pass-example").ClusterNetworkPolicy.Spec.Egress[0].Action = "Pass"
				return objs
			}, pokes: []poke{
				{"harry-potter-0", "draco-malfoy-0", "TCP", 80, true}, {"harry-potter-1", "draco-malfoy-0", "TCP", 8080, true}}},
			{name: "pass-ingress, Baseline decides (NetworkPolicy deleted)", mutate: func(t *testing.T, objs []manifest.Object) []manifest.Object {
				var out []manifest.Object
				for _, o := range objs {
					if o.NetworkPolicy == nil {
						out = append(out, o)
					}
				}
				return out
			}, pokes: []poke{
				{"draco-malfoy-0", "harry-potter-0", "TCP", 80, false}, {"draco-malfoy-1", "harry-potter-0", "TCP", 8080, false}}},
			{name: "pass-egress, Baseline decides", pokes: []poke{
				{"harry-potter-0", "draco-malfoy-0", "TCP", 80, false}, {"harry-potter-1", "draco-malfoy-0", "TCP", 8080, false}}},
		}},
		{"CNPAdminTierPriorityField", "base/admin_tier/standard-priority-field.yaml", []step{
			{name: "deny from slytherin", pokes: []poke{
				{"draco-malfoy-0", "harry-potter-0", "TCP", 80, false}, {"draco-malfoy-1", "harry-potter-0", "TCP", 8080, false}}},
			{name: "deny to slytherin", pokes: []poke{
				{"harry-potter-0", "draco-malfoy-0", "TCP", 80, false}, {"harry-potter-1", "draco-malfoy-0", "TCP", 8080, false}}},
			{name: "priority 60 → 40: Pass to Baseline Accept", mutate: func(t *testing.T, objs []manifest.Object) []manifest.Object {
				cnpOf(t, objs, "old-priority-60-new-priority-40-example").ClusterNetworkPolicy.Spec.Priority = 40
				return objs
			}, pokes: []poke{
				{"draco-malfoy-0", "harry-potter-0", "TCP", 80, true}, {"draco-malfoy-1", "harry-potter-0", "TCP", 8080, true},
				{"harry-potter-0", "draco-malfoy-0", "TCP", 80, true}, {"harry-potter-1", "draco-malfoy-0", "TCP", 8080, true}}},
		}},
		{"CNPAdminTierEgressNodePeers", "base/admin_tier/experimental-egress-selector-rules.yaml", []step{
			{name: "allow-egress to nodes", pokes: []poke{{"harry-potter-1", "centaur-1", "TCP", int32(hp[0]), true}}},
			{name: "pass-egress to nodes", pokes: []poke{{"harry-potter-1", "centaur-1", "UDP", int32(hp[2]), true}}},
			{name: "deny-egress to nodes", pokes: []poke{
				{"harry-potter-1", "centaur-1", "TCP", int32(hp[1]), false},
				{"harry-potter-1", "centaur-1", "UDP", int32(hp[4]), false},
				{"harry-potter-1", "centaur-1", "SCTP", int32(hp[6]), false}}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.test, func(t *testing.T) {
			objs, err := manifest.Decode(tc.manifest, strings.NewReader(upstreamFile(t, tc.manifest)))
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range tc.steps {
				if st.mutate != nil {
					objs = st.mutate(t, objs)
				}
				s, err := manifest.LoadStore(objs, m.ws)
				if err != nil {
					t.Fatalf("%s: %v", st.name, err)
				}
				e := policy.NewEngine(s, policy.Options{})
				for _, p := range st.pokes {
					d := e.Decide(policy.Connection{Src: m.addr(t, p.from), Dst: m.addr(t, p.to), Port: p.port, Protocol: p.proto})
					if got := d.Verdict == policy.Allow; got != p.want {
						t.Errorf("%s: %s -> %s %s/%d allowed=%v, want %v (%+v)", st.name, p.from, p.to, p.proto, p.port, got, p.want, d.Deciding())
					}
				}
			}
		})
	}
}

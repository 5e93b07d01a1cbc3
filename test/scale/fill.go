// Package scale is the scale harness of docs/scale.md: it fills a real
// kube-apiserver (test/kubeapi) with many Nodes, namespaces, pods and policies,
// runs agents for some of the nodes and measures what one agent costs. The
// `make scale` target (cmd/scale) prints the figures; the tests of this package
// run a small version that fails when an agent's work or the policy status
// writes grow with the cluster instead of with the node.
package scale

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/kube"
)

// Spec is the size of the cluster the harness builds.
type Spec struct {
	Nodes, Namespaces, Pods, Policies int
	// Workers is the number of concurrent API writers (default 16).
	Workers int
}

// Node is the name of node i.
func Node(i int) string { return fmt.Sprintf("node-%d", i) }

// Namespace is the name of namespace i.
func Namespace(i int) string { return fmt.Sprintf("ns-%d", i) }

// PodName is the name of pod i.
func PodName(i int) string { return fmt.Sprintf("pod-%d", i) }

// PodPlace returns the namespace and node of pod i: pods are spread round-robin
// over the namespaces and the nodes.
func (s Spec) PodPlace(i int) (ns, node string) {
	return Namespace(i % s.Namespaces), Node(i % s.Nodes)
}

// PodIP is the address of pod i (10.0.0.0/8, 16M pods).
func PodIP(i int) netip.Addr {
	n := i + 1
	return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)})
}

// PodLabels are the labels of pod i: one of 50 apps and one of 4 tiers.
func PodLabels(i int) map[string]string {
	return map[string]string{"app": fmt.Sprintf("app-%d", i%50), "tier": fmt.Sprintf("tier-%d", i%4)}
}

// NamespaceLabels are the labels of namespace i: one of 20 teams.
func NamespaceLabels(i int) map[string]string {
	return map[string]string{"team": fmt.Sprintf("team-%d", i%20)}
}

// LocalPods returns the indexes of the pods of node.
func (s Spec) LocalPods(node string) []int {
	var out []int
	for i := 0; i < s.Pods; i++ {
		if _, n := s.PodPlace(i); n == node {
			out = append(out, i)
		}
	}
	return out
}

// Fill creates the cluster of spec: Nodes, labelled namespaces, running pods
// with their addresses (set through the status subresource, no kubelet runs)
// and policies: a third NetworkPolicies (ingress from an app of a team), a
// third FirewallPolicies with FQDN rules, a third ClusterFirewallPolicies
// (Admin tier, FQDN Deny rules for one team). progress, if not nil, is called
// with a line now and then.
func Fill(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, spec Spec, progress func(string)) error {
	if progress == nil {
		progress = func(string) {}
	}
	if spec.Workers <= 0 {
		spec.Workers = 16
	}
	step := func(what string, n int, f func(i int) error) error {
		var next atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, spec.Workers)
		for range spec.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= n || ctx.Err() != nil {
						return
					}
					if err := f(i); err != nil {
						errc <- fmt.Errorf("%s %d: %w", what, i, err)
						return
					}
					if (i+1)%5000 == 0 {
						progress(fmt.Sprintf("%s: %d/%d", what, i+1, n))
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			return err
		}
		return ctx.Err()
	}
	if err := step("nodes", spec.Nodes, func(i int) error {
		_, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: Node(i)}}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	if err := step("namespaces", spec.Namespaces, func(i int) error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: Namespace(i), Labels: NamespaceLabels(i)}}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return err
	}
	if err := step("pods", spec.Pods, func(i int) error {
		ns, node := spec.PodPlace(i)
		return CreatePod(ctx, cs, ns, PodName(i), node, PodLabels(i), PodIP(i))
	}); err != nil {
		return err
	}
	return step("policies", spec.Policies, func(i int) error {
		return CreatePolicy(ctx, cs, dyn, spec, i)
	})
}

// CreatePod creates a running pod with one container with a named port and
// sets its address through the status subresource.
func CreatePod(ctx context.Context, cs kubernetes.Interface, ns, name, node string, labels map[string]string, ip netip.Addr) error {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1.0",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	p, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = ip.String()
	p.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
	_, err = cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

// CreatePolicy creates policy i of spec (see Fill).
func CreatePolicy(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, spec Spec, i int) error {
	ns := Namespace(i % spec.Namespaces)
	app := fmt.Sprintf("app-%d", i%50)
	switch i % 3 {
	case 0:
		tcp := corev1.ProtocolTCP
		np := &networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("np-%d", i)},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("team-%d", i%20)}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", (i+1)%50)}},
					}},
					Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &intstr.IntOrString{Type: intstr.String, StrVal: "http"}}},
				}},
			},
		}
		_, err := cs.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{})
		return err
	case 1:
		return createUnstructured(ctx, dyn, kube.FirewallPolicies, ns, map[string]any{
			"apiVersion": policy.APIVersion, "kind": policy.KindFirewallPolicy,
			"metadata": map[string]any{"name": fmt.Sprintf("fwp-%d", i), "namespace": ns},
			"spec": map[string]any{
				"podSelector": map[string]any{"matchLabels": map[string]any{"app": app}},
				"egress": []any{
					map[string]any{"action": "Allow", "to": []any{
						map[string]any{"fqdn": map[string]any{"matchName": fmt.Sprintf("api-%d.example.com", i)}},
						map[string]any{"fqdn": map[string]any{"matchPattern": fmt.Sprintf("*.cdn-%d.example.net", i%100)}},
					}, "ports": []any{map[string]any{"port": int64(443), "protocol": "TCP"}}},
					map[string]any{"action": "Allow", "to": []any{
						map[string]any{"pods": map[string]any{"podSelector": map[string]any{"matchLabels": map[string]any{"tier": fmt.Sprintf("tier-%d", i%4)}}}},
					}},
				},
			},
		})
	default:
		return createUnstructured(ctx, dyn, kube.ClusterFirewallPolicies, "", map[string]any{
			"apiVersion": policy.APIVersion, "kind": policy.KindClusterFirewallPolicy,
			"metadata": map[string]any{"name": fmt.Sprintf("cfwp-%d", i)},
			"spec": map[string]any{
				"tier": "Admin", "priority": int64(i % 1000),
				"subject": map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"team": fmt.Sprintf("team-%d", i%20)}}},
				"egress": []any{map[string]any{"action": "Deny", "to": []any{
					map[string]any{"fqdn": map[string]any{"matchPattern": fmt.Sprintf("*.mining-%d.example", i)}},
				}}},
			},
		})
	}
}

func createUnstructured(ctx context.Context, dyn dynamic.Interface, gvr schema.GroupVersionResource, ns string, obj map[string]any) error {
	u := &unstructured.Unstructured{Object: obj}
	var ri dynamic.ResourceInterface = dyn.Resource(gvr)
	if ns != "" {
		ri = dyn.Resource(gvr).Namespace(ns)
	}
	_, err := ri.Create(ctx, u, metav1.CreateOptions{})
	return err
}

package kube

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/egressd/egressd/policy"
)

func TestPodWorkload(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Labels: map[string]string{"app": "x"}},
		Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Ports: []corev1.ContainerPort{
			{Name: "http", ContainerPort: 8080}, {ContainerPort: 9}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}}}},
		Status: corev1.PodStatus{PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}},
	}
	w := PodWorkload(p)
	if w.Node != "n1" || w.Labels["app"] != "x" || len(w.IPs) != 2 || w.IPs[0] != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("%+v", w)
	}
	if len(w.Ports) != 2 || w.Ports[0] != (policy.NamedPort{Name: "http", Port: 8080, Protocol: policy.ProtocolTCP}) || w.Ports[1].Protocol != policy.ProtocolUDP {
		t.Fatalf("ports %+v", w.Ports)
	}
	p.Spec.HostNetwork = true
	if w := PodWorkload(p); len(w.IPs) != 0 {
		t.Fatalf("host-network pod has the node's IPs: %+v", w.IPs)
	}
	tp, _ := trimPod(p.DeepCopy())
	if w2 := PodWorkload(tp.(*corev1.Pod)); len(w2.Ports) != 2 || w2.Node != "n1" {
		t.Fatalf("trimmed pod lost data: %+v", w2)
	}
}

func TestDesiredConditions(t *testing.T) {
	bad := &policy.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "x"}}
	bad.Spec.Egress = []policy.Rule{{Action: "Allow", To: []policy.Peer{{CIDR: "10.0.0.1/8"}}}}
	err := policy.ValidateFirewallPolicy(bad)
	if err == nil {
		t.Fatal("want invalid")
	}
	cs := DesiredConditions(3, err)
	inv := cs[1]
	if inv.Type != policy.ConditionInvalid || inv.Status != metav1.ConditionTrue || inv.Reason != "FieldValueInvalid" ||
		!strings.Contains(inv.Message, "spec.egress[0].to[0].cidr") || inv.ObservedGeneration != 3 {
		t.Fatalf("%+v", inv)
	}
	if cs[0].Type != policy.ConditionAccepted || cs[0].Status != metav1.ConditionFalse {
		t.Fatalf("%+v", cs[0])
	}
	ok := DesiredConditions(4, nil)
	if ok[0].Status != metav1.ConditionTrue || ok[1].Status != metav1.ConditionFalse {
		t.Fatalf("%+v", ok)
	}
}

// TestSlimCaches: the informer transforms keep what the source reads (key,
// labels, generation; a pod's workload; a policy's spec and status) and drop
// managed fields, annotations, owners and finalizers.
func TestSlimCaches(t *testing.T) {
	fat := metav1.ObjectMeta{Namespace: "ns", Name: "x", Generation: 3, ResourceVersion: "7",
		Labels:          map[string]string{"app": "x"},
		Annotations:     map[string]string{"kubectl.kubernetes.io/last-applied-configuration": strings.Repeat("x", 4096)},
		ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		OwnerReferences: []metav1.OwnerReference{{Name: "rs"}}, Finalizers: []string{"f"}}
	check := func(what string, m metav1.ObjectMeta) {
		t.Helper()
		if m.Name != "x" || m.Generation != 3 || m.ResourceVersion != "7" || m.Labels["app"] != "x" {
			t.Errorf("%s: lost metadata: %+v", what, m)
		}
		if m.Annotations != nil || m.ManagedFields != nil || m.OwnerReferences != nil || m.Finalizers != nil {
			t.Errorf("%s: kept %+v", what, m)
		}
	}
	p := &corev1.Pod{ObjectMeta: *fat.DeepCopy(), Spec: corev1.PodSpec{NodeName: "n1",
		Containers: []corev1.Container{{Name: "c", Image: "img", Command: []string{"run"}, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 80}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}}, Conditions: []corev1.PodCondition{{Type: "Ready"}}}}
	want := PodWorkload(p)
	tp, _ := trimPod(p.DeepCopy())
	slim := tp.(*corev1.Pod)
	check("pod", slim.ObjectMeta)
	if got := PodWorkload(slim); got.Node != want.Node || len(got.IPs) != 1 || len(got.Ports) != 1 || got.Labels["app"] != "x" {
		t.Errorf("pod workload %+v, want %+v", got, want)
	}
	if slim.Spec.Containers[0].Image != "" || slim.Status.Conditions != nil || slim.Status.Phase != corev1.PodRunning {
		t.Errorf("pod kept %+v", slim)
	}
	tn, _ := trimNamespace(&corev1.Namespace{ObjectMeta: *fat.DeepCopy(), Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}})
	check("namespace", tn.(*corev1.Namespace).ObjectMeta)
	np := &networkingv1.NetworkPolicy{ObjectMeta: *fat.DeepCopy(), Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{"Ingress"}}}
	tnp, _ := trimMeta(np)
	check("networkpolicy", tnp.(*networkingv1.NetworkPolicy).ObjectMeta)
	if len(tnp.(*networkingv1.NetworkPolicy).Spec.PolicyTypes) != 1 {
		t.Error("networkpolicy lost its spec")
	}
	u := &unstructured.Unstructured{Object: map[string]any{
		"metadata": map[string]any{"name": "x", "annotations": map[string]any{"a": "b"}, "managedFields": []any{map[string]any{"manager": "m"}}},
		"spec":     map[string]any{"mode": "Enforce"},
		"status":   map[string]any{"conditions": []any{}},
	}}
	tu, _ := trimMeta(u)
	md := tu.(*unstructured.Unstructured).Object["metadata"].(map[string]any)
	if _, has := md["managedFields"]; has || md["annotations"] != nil || tu.(*unstructured.Unstructured).Object["status"] == nil {
		t.Errorf("custom resource after trim: %v", tu)
	}
}

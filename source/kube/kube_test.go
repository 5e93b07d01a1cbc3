package kube

import (
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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

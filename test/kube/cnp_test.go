package kube_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/kube"
	"github.com/egressd/egressd/test/kubeapi"
)

// cnpGVR is the ClusterNetworkPolicy resource egressd reads.
var cnpGVR = schema.GroupVersionResource{Group: "policy.networking.k8s.io", Version: "v1alpha2", Resource: "clusternetworkpolicies"}

const cnpDenyNodesAndWeb = `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: platform}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {matchLabels: {team: shop}}}
  egress:
  - name: deny-linux-nodes
    action: Deny
    to: [{nodes: {matchLabels: {kubernetes.io/os: linux}}}]
  - name: deny-db
    action: Deny
    to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}]
`

// TestClusterNetworkPolicy: ClusterNetworkPolicies applied to the real API
// server (the upstream experimental CRD from deploy/crds) are enforced, follow
// a pod relabel and a node's addresses, and get egressd's own status
// conditions without touching another implementation's.
func TestClusterNetworkPolicy(t *testing.T) {
	e := newEnv(t)
	e.namespace("shop", map[string]string{"team": "shop"})
	e.namespace("other", nil)
	e.pod("shop", "web-1", "node-1", map[string]string{"app": "web"}, "10.244.1.10")
	e.pod("other", "db-1", "node-2", map[string]string{"app": "db"}, "10.244.2.20")
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"kubernetes.io/os": "linux"}}}
	node, err := e.cs.CoreV1().Nodes().Create(e.ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.10.1"}, {Type: corev1.NodeHostName, Address: "node-1"}}
	if _, err := e.cs.CoreV1().Nodes().UpdateStatus(e.ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Another implementation's condition, written before egressd's.
	applyCNP(t, e, cnpDenyNodesAndWeb)
	foreign := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
		"metadata": map[string]any{"name": "platform"},
		"status": map[string]any{"conditions": []any{map[string]any{
			"type": "Accepted", "status": "True", "reason": "OtherImpl", "message": "owned by another implementation",
			"lastTransitionTime": metav1.Now().UTC().Format(time.RFC3339)}}},
	}}
	if _, err := e.dyn.Resource(cnpGVR).ApplyStatus(e.ctx, "platform", foreign, metav1.ApplyOptions{FieldManager: "other-impl", Force: true}); err != nil {
		t.Fatal(err)
	}

	e.waitVerdict("10.244.1.10", "10.244.2.20", 5432, policy.Deny, "CNP Deny to the db pod")
	e.waitVerdict("10.244.1.10", "192.168.10.1", 10250, policy.Deny, "CNP Deny to the linux node's address")
	c := e.waitCondition(cnpGVR, "", "platform", kube.CNPConditionAccepted, "True")
	if c["reason"] != kube.ReasonValid {
		t.Errorf("egressd.io/Accepted: %v", c)
	}
	waitFor(t, 20*time.Second, "egressd.io/Programmed on platform", func() bool {
		u, err := e.dyn.Resource(cnpGVR).Get(e.ctx, "platform", metav1.GetOptions{})
		if err != nil {
			return false
		}
		c := condition(u, kube.CNPConditionProgrammed)
		msg, _ := c["message"].(string)
		return c != nil && strings.HasPrefix(msg, "programmed on ")
	})
	u, err := e.dyn.Resource(cnpGVR).Get(e.ctx, "platform", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if other := condition(u, "Accepted"); other == nil || other["reason"] != "OtherImpl" {
		t.Errorf("the other implementation's Accepted condition was changed: %v", other)
	}

	// A relabel is followed; a node address change too.
	e.relabel("other", "db-1", map[string]string{"app": "cache"})
	e.waitVerdict("10.244.1.10", "10.244.2.20", 5432, policy.Allow, "db-1 relabelled away from app=db")
	node, _ = e.cs.CoreV1().Nodes().Get(e.ctx, "node-1", metav1.GetOptions{})
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.168.10.2"}}
	if _, err := e.cs.CoreV1().Nodes().UpdateStatus(e.ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitVerdict("10.244.1.10", "192.168.10.2", 10250, policy.Deny, "the node's new address")
	e.waitVerdict("10.244.1.10", "192.168.10.1", 10250, policy.Allow, "the node's old address")

	// An invalid policy (the CRD admits domainNames in a Deny rule; upstream
	// documents them for Accept rules only) is reported with the field.
	applyCNP(t, e, `
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-names}
spec:
  tier: Admin
  priority: 11
  subject: {namespaces: {}}
  egress:
  - {action: Deny, to: [{domainNames: [evil.example]}]}
`)
	inv := e.waitCondition(cnpGVR, "", "deny-names", kube.CNPConditionInvalid, "True")
	if msg, _ := inv["message"].(string); !strings.Contains(msg, "spec.egress[0].to[0].domainNames") {
		t.Errorf("egressd.io/Invalid message %q does not name the field", msg)
	}
	e.waitCondition(cnpGVR, "", "deny-names", kube.CNPConditionAccepted, "False")

	// Deleting the policy lifts it.
	if err := e.dyn.Resource(cnpGVR).Delete(e.ctx, "platform", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitVerdict("10.244.1.10", "192.168.10.2", 10250, policy.Allow, "platform deleted")
}

func applyCNP(t *testing.T, e *env, doc string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := e.dyn.Resource(cnpGVR).Create(e.ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create %s: %v", u.GetName(), err)
	}
}

// syncBuffer is a log sink read while the source writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestClusterNetworkPolicyCRDAbsent: without the ClusterNetworkPolicy CRD the
// source syncs anyway and says so in its log; once an administrator installs
// the CRD, its policies are enforced without a restart.
func TestClusterNetworkPolicyCRDAbsent(t *testing.T) {
	cp := kubeapi.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	if err := kubeapi.ApplyCRDs(ctx, dyn, kubeapi.RepoFiles("deploy/crds/egressd.io_*.yaml")); err != nil {
		t.Fatal(err)
	}
	store := policy.NewStore()
	var logs syncBuffer
	src, err := kube.New(cp.Config, store, kube.Options{NoDNSService: true, CNPProbeInterval: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := src.Run(ctx, nil); err != nil && ctx.Err() == nil {
			t.Errorf("source: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, 30*time.Second, "source synced without the CRD", src.Synced)
	if !strings.Contains(logs.String(), "ClusterNetworkPolicy CRD (policy.networking.k8s.io clusternetworkpolicies) is not installed") {
		t.Errorf("no log line about the missing CRD:\n%s", logs.String())
	}
	if err := kubeapi.ApplyCRDs(ctx, dyn, kubeapi.RepoFiles("deploy/crds/policy.networking.k8s.io_*.yaml")); err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(cnpDenyNodesAndWeb), &u.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := dyn.Resource(cnpGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ref := policy.PolicyRef{Kind: policy.KindClusterNetworkPolicy, Name: "platform"}
	waitFor(t, 30*time.Second, "the CNP in the store after the CRD appeared", func() bool {
		for _, r := range store.Policies() {
			if r == ref {
				return true
			}
		}
		return false
	})
}

package kube_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/kube"
	"github.com/egressd/egressd/test/kubeapi"
)

// startNodeSource runs a source for node that, like the agent after each kernel
// apply, reports the policy generations it compiled. It returns a stop function.
func startNodeSource(t *testing.T, cfg *rest.Config, node string) (*kube.Source, func()) {
	t.Helper()
	store := policy.NewStore()
	compiler := policy.NewCompiler(store, policy.Options{DefaultVerdict: policy.Allow})
	src, err := kube.New(cfg, store, kube.Options{
		NodeName: node,
		Status: kube.StatusOptions{Enabled: true, LeaseNamespace: "default", Identity: node,
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond,
			// Long: a pending count is never rewritten during the test, so the
			// writes per edit do not depend on timing.
			NodeLeaseDuration: 2 * time.Second, ProgressInterval: time.Hour},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := src.Run(ctx, func() {
			gens := src.StoreGenerations()
			compiler.Compile() // what the agent programs; the report follows the apply
			src.ReportProgrammed(gens)
		})
		if err != nil && ctx.Err() == nil {
			t.Errorf("source %s: %v", node, err)
		}
	}()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return src, stop
}

// TestProgrammedCondition: two agents (node-1, node-2) against the real API
// server publish what they programmed on their own agent Leases (never in the
// policy); the lease-holding writer sets Programmed "programmed on 2/2 nodes".
// Per-node entries an earlier version left in status.nodes are removed. An
// update bumps the generation and the condition follows with at most two
// writes to the policy (Pending, then Programmed); an invalid generation is
// Programmed=False/Invalid and the nodes keep the version in force; when
// node-2's agent is gone (its Lease expires) the policy is programmed on 1/1
// nodes.
func TestProgrammedCondition(t *testing.T) {
	cp := kubeapi.Start(t)
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	applyCRDs(t, ctx, dyn)
	e := &env{t: t, ctx: ctx, dyn: dyn, cs: cs}
	e.namespace("shop", nil)
	ri := dyn.Resource(kube.FirewallPolicies).Namespace("shop")
	get := func() *unstructured.Unstructured {
		u, err := ri.Get(ctx, "restrict-web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}

	// An earlier version's per-node entry, under that node's field manager.
	e.mustApply(fmt.Sprintf(restrictWeb, "10.244.2.0/24"))
	old := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": policy.APIVersion, "kind": policy.KindFirewallPolicy,
		"metadata": map[string]any{"name": "restrict-web", "namespace": "shop"},
		"status": map[string]any{"nodes": []any{map[string]any{
			"nodeName": "node-9", "observedGeneration": int64(1), "lastProgrammedTime": "2026-01-01T00:00:00Z"}}},
	}}
	if _, err := ri.ApplyStatus(ctx, "restrict-web", old, metav1.ApplyOptions{FieldManager: "egressd/node-9", Force: true}); err != nil {
		t.Fatal(err)
	}
	if len(nodeEntries(get())) != 1 {
		t.Fatal("status.nodes not stored")
	}

	src1, _ := startNodeSource(t, cp.Config, "node-1")
	src2, stop2 := startNodeSource(t, cp.Config, "node-2")
	waitFor(t, 30*time.Second, "sources synced", func() bool { return src1.Synced() && src2.Synced() })

	waitProgrammed := func(status, reason, msg string) *unstructured.Unstructured {
		t.Helper()
		var last map[string]any
		var u *unstructured.Unstructured
		waitFor(t, 30*time.Second, fmt.Sprintf("Programmed=%s/%s %q", status, reason, msg), func() bool {
			u = get()
			last = condition(u, policy.ConditionProgrammed)
			return last != nil && last["status"] == status && last["reason"] == reason &&
				last["message"] == msg && last["observedGeneration"] == u.GetGeneration()
		})
		t.Logf("Programmed: %v %v %q", last["status"], last["reason"], last["message"])
		return u
	}
	u := waitProgrammed("True", kube.ReasonProgrammed, "programmed on 2/2 nodes")
	waitFor(t, 30*time.Second, "status.nodes removed", func() bool { return nodeEntries(get()) == nil })

	// An update: count the writes to the policy until it is programmed.
	w, err := ri.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=restrict-web", ResourceVersion: u.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	e.mustApply(fmt.Sprintf(restrictWeb, "10.244.3.0/24"))
	u = waitProgrammed("True", kube.ReasonProgrammed, "programmed on 2/2 nodes")
	if u.GetGeneration() != 2 {
		t.Fatalf("generation %d after an update, want 2", u.GetGeneration())
	}
	writes := -1 // the update itself
	for rv := ""; rv != u.GetResourceVersion(); {
		ev := <-w.ResultChan()
		if o, ok := ev.Object.(*unstructured.Unstructured); ok {
			rv = o.GetResourceVersion()
			writes++
		}
	}
	t.Logf("status writes for one edit with 2 nodes: %d", writes)
	if writes > 2 {
		t.Errorf("%d status writes for one edit, want at most 2 (Pending, Programmed)", writes)
	}
	if _, has, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "nodes"); has {
		t.Errorf("status.nodes written again: %v", u.Object["status"])
	}

	// An invalid generation: the nodes keep programming generation 2.
	e.mustApply(`
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: restrict-web, namespace: shop}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: Near, values: [web]}]
`)
	waitProgrammed("False", kube.ReasonInvalid, "programmed on 2/2 nodes")
	e.mustApply(fmt.Sprintf(restrictWeb, "10.244.4.0/24"))
	waitProgrammed("True", kube.ReasonProgrammed, "programmed on 2/2 nodes")

	// node-2's agent goes away: its Lease expires.
	stop2()
	waitProgrammed("True", kube.ReasonProgrammed, "programmed on 1/1 nodes")
	l, err := cs.CoordinationV1().Leases("default").Get(ctx, kube.AgentLeaseName("node-1"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := src1.ProgrammedDigest(); l.Annotations[kube.AnnotationProgrammedDigest] != d || d == "" {
		t.Errorf("node-1's Lease annotations %v, want the digest %q", l.Annotations, d)
	}
}

// nodeEntries returns status.nodes (nil when absent).
func nodeEntries(u *unstructured.Unstructured) []any {
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "nodes")
	return list
}

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
			NodeLeaseDuration: 2 * time.Second},
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

func nodeGens(u *unstructured.Unstructured) map[string]int64 {
	out := map[string]int64{}
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "nodes")
	for _, e := range list {
		m := e.(map[string]any)
		g, _ := m["observedGeneration"].(int64)
		out[fmt.Sprint(m["nodeName"])] = g
	}
	return out
}

// TestProgrammedCondition: two agents (node-1, node-2) against the real API server
// each report the generation they programmed in status.nodes (their own field
// manager); the lease-holding writer sets Programmed "programmed on 2/2 nodes", an
// update bumps the generation and the condition follows, an invalid generation is
// Programmed=False/Invalid, and when node-2's agent is gone (its agent Lease
// expires) its entry is pruned and the policy is programmed on 1/1 nodes.
func TestProgrammedCondition(t *testing.T) {
	cp := kubeapi.Start(t)
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	applyCRDs(t, ctx, dyn)
	e := &env{t: t, ctx: ctx, dyn: dyn, cs: cs}
	e.namespace("shop", nil)
	src1, _ := startNodeSource(t, cp.Config, "node-1")
	src2, stop2 := startNodeSource(t, cp.Config, "node-2")
	waitFor(t, 30*time.Second, "sources synced", func() bool { return src1.Synced() && src2.Synced() })

	get := func() *unstructured.Unstructured {
		u, err := dyn.Resource(kube.FirewallPolicies).Namespace("shop").Get(ctx, "restrict-web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	waitProgrammed := func(status, reason, msg string) {
		t.Helper()
		var last map[string]any
		waitFor(t, 30*time.Second, fmt.Sprintf("Programmed=%s/%s %q", status, reason, msg), func() bool {
			u := get()
			last = condition(u, policy.ConditionProgrammed)
			return last != nil && last["status"] == status && last["reason"] == reason &&
				last["message"] == msg && last["observedGeneration"] == u.GetGeneration()
		})
		t.Logf("Programmed: %v %v %q; status.nodes %v", last["status"], last["reason"], last["message"], nodeGens(get()))
	}

	e.mustApply(fmt.Sprintf(restrictWeb, "10.244.2.0/24"))
	waitProgrammed("True", kube.ReasonProgrammed, "programmed on 2/2 nodes")
	if g := nodeGens(get()); g["node-1"] != 1 || g["node-2"] != 1 || len(g) != 2 {
		t.Fatalf("status.nodes = %v, want node-1 and node-2 at generation 1", g)
	}

	e.mustApply(fmt.Sprintf(restrictWeb, "10.244.3.0/24"))
	waitProgrammed("True", kube.ReasonProgrammed, "programmed on 2/2 nodes")
	u := get()
	if u.GetGeneration() != 2 {
		t.Fatalf("generation %d after an update, want 2", u.GetGeneration())
	}
	if g := nodeGens(u); g["node-1"] != 2 || g["node-2"] != 2 {
		t.Fatalf("status.nodes = %v, want both at generation 2", g)
	}
	// Each node writes only its own entry, under its own field manager.
	managers := map[string]bool{}
	for _, mf := range u.GetManagedFields() {
		managers[mf.Manager] = true
	}
	if !managers["egressd/node-1"] || !managers["egressd/node-2"] || !managers["egressd"] {
		t.Errorf("field managers %v, want egressd, egressd/node-1, egressd/node-2", managers)
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
	waitProgrammed("False", kube.ReasonInvalid, "programmed on 0/2 nodes")
	e.mustApply(fmt.Sprintf(restrictWeb, "10.244.4.0/24"))
	waitProgrammed("True", kube.ReasonProgrammed, "programmed on 2/2 nodes")

	// node-2's agent goes away: its Lease expires, its entry is pruned.
	w1, w2 := src1.NodeStatusWrites(), src2.NodeStatusWrites()
	stop2()
	waitProgrammed("True", kube.ReasonProgrammed, "programmed on 1/1 nodes")
	waitFor(t, 30*time.Second, "node-2 entry pruned", func() bool {
		g := nodeGens(get())
		_, has := g["node-2"]
		return !has && g["node-1"] == get().GetGeneration()
	})
	t.Logf("status.nodes writes: node-1 %d, node-2 %d (3 valid generations each)", w1, w2)
	if w1 > 4 || w2 > 4 {
		t.Errorf("node status writes %d/%d for 3 programmed generations: nodes rewrite unchanged entries", w1, w2)
	}
}

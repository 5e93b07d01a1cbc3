package scale_test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/kube"
	"github.com/egressd/egressd/test/kubeapi"
	"github.com/egressd/egressd/test/scale"
	"github.com/egressd/egressd/test/testenv"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.RemoveBuilds()
	os.Exit(code)
}

// smallSpec is the small version of the scale harness that runs in make test.
var smallSpec = scale.Spec{Nodes: 20, Namespaces: 40, Pods: 2000, Policies: 60}

// agent is an in-process agent for one node: the Kubernetes source, a store
// and a node-scoped compiler (what cmd/egressd runs in cluster mode, without
// a dataplane), recording every compile.
type agent struct {
	node  string
	store *policy.Store
	src   *kube.Source

	mu       sync.Mutex
	plan     *policy.Plan
	compiles []compile
}

type compile struct {
	storeGen uint64
	changes  policy.Changes
}

func startAgent(t *testing.T, cfg *rest.Config, node string) *agent {
	t.Helper()
	a := &agent{node: node, store: policy.NewStore()}
	compiler := policy.NewCompiler(a.store, policy.Options{}, policy.ForNode(node))
	src, err := kube.New(cfg, a.store, kube.Options{NodeName: node,
		Status: kube.StatusOptions{Enabled: true, LeaseNamespace: "default", Identity: node,
			// A pending count is never rewritten during the test: the writes
			// per edit do not depend on timing.
			ProgressInterval: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	a.src = src
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := src.Run(ctx, func() {
			gens := src.StoreGenerations()
			gen := a.store.Generation() // the source's one worker is the only writer
			plan, ch := compiler.Compile()
			a.mu.Lock()
			a.plan = plan
			a.compiles = append(a.compiles, compile{gen, ch})
			a.mu.Unlock()
			src.ReportProgrammed(gens)
		})
		if err != nil && ctx.Err() == nil {
			t.Errorf("source %s: %v", node, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

func (a *agent) snapshot() (*policy.Plan, []compile) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.plan, append([]compile(nil), a.compiles...)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNodeScopedAgents is the small version of the scale harness: a real API
// server with 20 Nodes, 40 namespaces, 2,000 pods and 60 policies, and three
// agents (node-0, node-1, node-2). Each agent's plan holds its node's pods
// only (100 of the 2,000), and relabelling a pod of another node (one that
// moves between peer sets) is compiled without a full compile and without
// touching any of the agent's workloads. A policy edit causes at most two
// writes to that policy (Pending, then Programmed on 3/3 nodes) and none to
// the others, and no policy carries per-node entries.
func TestNodeScopedAgents(t *testing.T) {
	cp := kubeapi.Start(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	if err := kubeapi.ApplyCRDs(ctx, dyn, scale.CRDFiles()); err != nil {
		t.Fatal(err)
	}
	if err := scale.Fill(ctx, cs, dyn, smallSpec, nil); err != nil {
		t.Fatal(err)
	}
	var agents []*agent
	for i := range 3 {
		agents = append(agents, startAgent(t, cp.Config, scale.Node(i)))
	}
	for _, a := range agents {
		waitFor(t, 2*time.Minute, a.node+" synced and compiled", func() bool {
			p, _ := a.snapshot()
			return a.src.Synced() && p != nil
		})
		plan, _ := a.snapshot()
		if want := len(smallSpec.LocalPods(a.node)); len(plan.Workloads) != want {
			t.Errorf("%s: the plan holds %d workloads, want the node's %d (of %d pods)", a.node, len(plan.Workloads), want, smallSpec.Pods)
		}
		if w, p := a.store.Counts(); w != smallSpec.Pods || p != smallSpec.Policies {
			t.Errorf("%s: store holds %d workloads and %d policies, want %d and %d (peers of every node)", a.node, w, p, smallSpec.Pods, smallSpec.Policies)
		}
	}

	// Relabel a pod of node-5 into app-46: NetworkPolicy np-45 (namespace ns-5)
	// admits app-46 pods of team-5 namespaces, and pod-5 lives in ns-5 (team-5),
	// so the pod enters that rule's peers.
	a := agents[0]
	victim := 5 // on node-5
	ns, node := smallSpec.PodPlace(victim)
	if node != scale.Node(5) {
		t.Fatalf("pod %d is on %s", victim, node)
	}
	key := policy.WorkloadKey{Namespace: ns, Name: scale.PodName(victim)}
	g0 := a.store.Generation()
	patch := `{"metadata":{"labels":{"app":"app-46"}}}`
	if _, err := cs.CoreV1().Pods(ns).Patch(ctx, key.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the relabel in node-0's store", func() bool {
		w, ok := a.store.Workload(key)
		return ok && w.Labels["app"] == "app-46"
	})
	g1 := a.store.Generation()
	var after []compile
	waitFor(t, time.Minute, "node-0 compiled the relabel", func() bool {
		_, cs := a.snapshot()
		after = after[:0]
		seen := false
		for _, c := range cs {
			if c.storeGen > g0 {
				after = append(after, c)
				seen = seen || c.storeGen >= g1
			}
		}
		return seen
	})
	rules := 0
	for _, c := range after {
		if c.changes.Full || len(c.changes.Workloads) > 0 {
			t.Errorf("a remote relabel: full=%v, workloads %v (want an incremental compile of rules only)", c.changes.Full, c.changes.Workloads)
		}
		rules += len(c.changes.Rules)
	}
	if rules == 0 {
		t.Errorf("a remote relabel changed no rule: the pod's peer sets did not follow (compiles %+v)", after)
	}
	t.Logf("remote relabel: %d compile(s), %d rule(s) changed", len(after), rules)

	// A policy edit with three agents.
	ri := dyn.Resource(kube.FirewallPolicies).Namespace(scale.Namespace(1))
	other := dyn.Resource(kube.FirewallPolicies).Namespace(scale.Namespace(4))
	programmed := func(u *unstructured.Unstructured) string {
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m := c.(map[string]any); m["type"] == policy.ConditionProgrammed && m["observedGeneration"] == u.GetGeneration() {
				return fmt.Sprint(m["status"], " ", m["message"])
			}
		}
		return ""
	}
	var u *unstructured.Unstructured
	waitFor(t, 2*time.Minute, "fwp-1 and fwp-4 programmed on 3/3 nodes", func() bool {
		var err error
		u, err = ri.Get(ctx, "fwp-1", metav1.GetOptions{})
		if err != nil {
			return false
		}
		o, err := other.Get(ctx, "fwp-4", metav1.GetOptions{})
		return err == nil && programmed(u) == "True programmed on 3/3 nodes" && programmed(o) == "True programmed on 3/3 nodes"
	})
	o, _ := other.Get(ctx, "fwp-4", metav1.GetOptions{})
	w, err := ri.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=fwp-1", ResourceVersion: u.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := ri.Patch(ctx, "fwp-1", types.MergePatchType, []byte(`{"spec":{"egress":[{"action":"Allow","to":[{"fqdn":{"matchName":"edited.example.com"}}]}]}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "the edit programmed on 3/3 nodes", func() bool {
		var err error
		u, err = ri.Get(ctx, "fwp-1", metav1.GetOptions{})
		return err == nil && u.GetGeneration() == 2 && programmed(u) == "True programmed on 3/3 nodes"
	})
	writes := -1 // the edit itself
	for rv := ""; rv != u.GetResourceVersion(); {
		ev := <-w.ResultChan()
		if obj, ok := ev.Object.(*unstructured.Unstructured); ok {
			rv = obj.GetResourceVersion()
			writes++
		}
	}
	t.Logf("one edit with 3 agents: %d status writes, status %d bytes", writes, len(fmt.Sprint(u.Object["status"])))
	if writes > 2 {
		t.Errorf("%d status writes for one edit with 3 agents, want at most 2", writes)
	}
	if _, has, _ := unstructured.NestedFieldNoCopy(u.Object, "status", "nodes"); has {
		t.Errorf("per-node entries in the policy's status: %v", u.Object["status"])
	}
	if o2, err := other.Get(ctx, "fwp-4", metav1.GetOptions{}); err != nil || o2.GetResourceVersion() != o.GetResourceVersion() {
		t.Errorf("an edit of fwp-1 rewrote fwp-4 (resourceVersion %s → %s, %v)", o.GetResourceVersion(), o2.GetResourceVersion(), err)
	}
}

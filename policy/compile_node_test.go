package policy_test

import (
	"math/rand"
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/scenarios"
)

// TestNodeScopedCompile: a compiler scoped to one node (policy.ForNode) holds
// exactly the workloads of that node, with the programs a cluster-wide compile
// gives them, and the same policies and rules (remote workloads stay peers),
// after every step of random workload, namespace and policy changes; a step
// that changes only remote workloads names no workload in Changes and is
// never a full compile.
func TestNodeScopedCompile(t *testing.T) {
	var pool []manifest.Object
	for seed := int64(0); seed < 40; seed++ {
		rs := scenarios.Random(seed)
		objs, err := rs.Objects()
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, objs...)
	}
	const node = "node-a"
	for run := int64(0); run < 20; run++ {
		r := rand.New(rand.NewSource(run))
		s := policy.NewStore()
		if err := s.LoadWorkloads(scenarios.Workloads()); err != nil {
			t.Fatal(err)
		}
		// Half the pods on this node, half elsewhere; the pods the model adds
		// later have no node (remote too).
		for i, k := range s.Workloads() {
			w, _ := s.Workload(k)
			w.Node = []string{node, "node-b"}[i%2]
			if err := s.UpsertWorkload(w); err != nil {
				t.Fatal(err)
			}
		}
		m := &changeModel{r: r, s: s, pool: pool}
		for i := 0; i < 5; i++ {
			m.must(t, pool[r.Intn(len(pool))].Apply(s))
		}
		c := policy.NewCompiler(s, policy.Options{}, policy.ForNode(node))
		prev, _ := c.Compile()
		var history []string
		for step := 0; step < 40; step++ {
			before := map[policy.WorkloadKey]policy.Workload{}
			for _, k := range s.Workloads() {
				before[k], _ = s.Workload(k)
			}
			var ops []string
			for i, n := 0, 1+r.Intn(3); i < n; i++ {
				ops = append(ops, m.step(t))
			}
			history = append(history, ops...)
			plan, ch := c.Compile()
			full, _ := policy.NewCompiler(s, policy.Options{}).Recompile()
			want := renderPlan(nodePlan(full, node))
			got := renderPlan(plan)
			if d := planDiff(want, got); d != "" {
				t.Fatalf("run %d step %d: node-scoped plan differs from the cluster-wide compile after %v:\n%s", run, step, history, d)
			}
			if !ch.Full {
				checkChangesNamed(t, renderPlan(prev), got, ch, history)
			}
			if remoteOnly(ops, before, s, node) {
				if ch.Full || len(ch.Workloads) > 0 {
					t.Errorf("run %d step %d: remote changes %v: full=%v workloads=%v", run, step, ops, ch.Full, ch.Workloads)
				}
			}
			prev = plan
		}
	}
}

// nodePlan is the part of a cluster-wide plan that node enforces: its
// workloads, every policy, and in ingress rules the named-port targets of its
// own workloads only (ingress is enforced at the destination, on its node).
func nodePlan(full *policy.Plan, node string) *policy.Plan {
	out := *full
	out.Workloads = map[policy.WorkloadKey]*policy.PlanWorkload{}
	local := map[netip.Addr]bool{}
	for k, w := range full.Workloads {
		if w.Node == node {
			out.Workloads[k] = w
			for _, ip := range w.IPs {
				local[ip] = true
			}
		}
	}
	out.Policies = map[policy.PolicyRef]*policy.PlanPolicy{}
	for ref, pp := range full.Policies {
		cp := *pp
		cp.Ingress = nil
		for _, r := range pp.Ingress {
			nr := *r
			nr.NamedPorts = nil
			for _, t := range r.NamedPorts {
				if local[t.Addr] {
					nr.NamedPorts = append(nr.NamedPorts, t)
				}
			}
			cp.Ingress = append(cp.Ingress, &nr)
		}
		out.Policies[ref] = &cp
	}
	return &out
}

// remoteOnly reports whether every op changed a workload that is not on node,
// before and after.
func remoteOnly(ops []string, before map[policy.WorkloadKey]policy.Workload, s *policy.Store, node string) bool {
	for _, op := range ops {
		verb, key, _ := strings.Cut(op, " ")
		switch verb {
		case "relabel", "ports", "add", "delete":
		default:
			return false
		}
		ns, name, ok := strings.Cut(key, "/")
		if !ok || strings.Contains(name, "/") || strings.ToLower(ns) != ns {
			return false // a policy: Kind/[namespace/]name
		}
		k := policy.WorkloadKey{Namespace: ns, Name: name}
		if w, ok := before[k]; ok && w.Node == node {
			return false
		}
		if w, ok := s.Workload(k); ok && w.Node == node {
			return false
		}
	}
	return true
}

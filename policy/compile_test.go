package policy_test

import (
	"fmt"
	"math/rand"
	"net/netip"
	"sort"
	"strings"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/scenarios"
)

// renderPlan turns a plan into one canonical text per policy and workload, so
// that plans compare with a readable diff.
func renderPlan(p *policy.Plan) map[string]string {
	out := map[string]string{}
	for ref, pp := range p.Policies {
		var b strings.Builder
		fmt.Fprintf(&b, "%s tier=%s priority=%d\n", ref, pp.Tier, pp.Priority)
		for _, dir := range policy.Directions {
			for _, r := range pp.Rules(dir) {
				fmt.Fprintf(&b, "  %s id=%s %s %s tier=%s anyPeer=%v fqdn=%v patterns=%v anyPort=%v ports=%v prefixes=%v named=%v\n",
					r.Ref, r.ID, r.Direction, r.Action, r.Tier, r.AnyPeer, r.FQDN, r.Patterns, r.AnyPort, r.Ports, r.Prefixes, r.NamedPorts)
			}
		}
		out["policy "+ref.String()] = b.String()
	}
	for key, w := range p.Workloads {
		out["workload "+key.String()] = fmt.Sprintf("%s ips=%v node=%s ingress=%s egress=%s", w.Key, w.IPs, w.Node, w.Ingress.Key(), w.Egress.Key())
	}
	return out
}

// planDiff describes how two rendered plans differ ("" when equal).
func planDiff(want, got map[string]string) string {
	var keys []string
	for k := range want {
		keys = append(keys, k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		w, okw := want[k]
		g, okg := got[k]
		switch {
		case !okw:
			fmt.Fprintf(&b, "unexpected %s:\n%s\n", k, g)
		case !okg:
			fmt.Fprintf(&b, "missing %s:\n%s\n", k, w)
		case w != g:
			fmt.Fprintf(&b, "%s differs:\nwant %s\ngot  %s\n", k, w, g)
		}
	}
	return b.String()
}

// changeModel applies random changes to the x/y/z model: pod labels, addresses,
// named ports, new and deleted pods, namespace labels, and random policies
// (scenarios.Random) added, replaced and deleted.
type changeModel struct {
	r      *rand.Rand
	s      *policy.Store
	pool   []manifest.Object
	extras int
}

func (m *changeModel) step(t *testing.T) string {
	t.Helper()
	keys := m.s.Workloads()
	op := m.r.Intn(9)
	if len(keys) < 3 && op != 5 && op < 6 {
		op = 3
	}
	switch op {
	case 0, 1: // relabel a pod
		k := keys[m.r.Intn(len(keys))]
		w, _ := m.s.Workload(k)
		w.Labels = map[string]string{"pod": scenarios.PodNames[m.r.Intn(3)]}
		if m.r.Intn(3) == 0 {
			w.Labels["team"] = "t"
		}
		m.must(t, m.s.UpsertWorkload(w))
		return "relabel " + k.String()
	case 2: // drop or restore named ports
		k := keys[m.r.Intn(len(keys))]
		w, _ := m.s.Workload(k)
		if len(w.Ports) > 0 {
			w.Ports = w.Ports[:m.r.Intn(len(w.Ports))]
		} else {
			w.Ports = scenarios.NamedPorts()
		}
		m.must(t, m.s.UpsertWorkload(w))
		return "ports " + k.String()
	case 3: // new pod or change of address
		m.extras++
		ns := scenarios.Namespaces[m.r.Intn(3)]
		w := policy.Workload{Namespace: ns, Name: fmt.Sprintf("e%d", m.extras), Labels: map[string]string{"pod": scenarios.PodNames[m.r.Intn(3)]},
			IPs:   []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(1 + m.r.Intn(3)), byte(100 + m.extras%100)})},
			Ports: scenarios.NamedPorts()[:m.r.Intn(6)]}
		if _, taken := m.s.WorkloadByIP(w.IPs[0]); taken {
			w.IPs = nil
		}
		m.must(t, m.s.UpsertWorkload(w))
		return "add " + w.Key().String()
	case 4: // delete a pod
		k := keys[m.r.Intn(len(keys))]
		m.s.DeleteWorkload(k)
		return "delete " + k.String()
	case 5: // namespace labels
		ns := scenarios.Namespaces[m.r.Intn(3)]
		l := map[string]string{"ns": scenarios.Namespaces[m.r.Intn(3)]}
		m.must(t, m.s.UpsertNamespace(policy.Namespace{Name: ns, Labels: l}))
		return "namespace " + ns
	case 6: // delete a policy
		refs := m.s.Policies()
		if len(refs) == 0 {
			return "nothing"
		}
		ref := refs[m.r.Intn(len(refs))]
		m.s.DeletePolicy(ref)
		return "delete " + ref.String()
	default: // add or replace a policy
		o := m.pool[m.r.Intn(len(m.pool))]
		m.must(t, o.Apply(m.s))
		return "upsert " + o.Ref().String()
	}
}

func (m *changeModel) must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestIncrementalCompileEqualsFullCompile applies random sequences of workload,
// namespace and policy changes and checks after every incremental compile that
// the plan equals a fresh full compile, and that Changes names every policy,
// rule and workload whose compiled form changed.
func TestIncrementalCompileEqualsFullCompile(t *testing.T) {
	var pool []manifest.Object
	for seed := int64(0); seed < 60; seed++ {
		rs := scenarios.Random(seed)
		objs, err := rs.Objects()
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, objs...)
	}
	for _, s := range scenarios.All() {
		objs, err := s.Objects()
		if err != nil {
			t.Fatal(err)
		}
		pool = append(pool, objs...)
	}
	for run := int64(0); run < 25; run++ {
		r := rand.New(rand.NewSource(run))
		s := policy.NewStore()
		if err := s.LoadWorkloads(scenarios.Workloads()); err != nil {
			t.Fatal(err)
		}
		m := &changeModel{r: r, s: s, pool: pool}
		for i := 0; i < 5; i++ {
			m.must(t, pool[r.Intn(len(pool))].Apply(s))
		}
		c := policy.NewCompiler(s, policy.Options{})
		prev, ch := c.Compile()
		if !ch.Full {
			t.Fatal("first compile is not full")
		}
		var history []string
		for step := 0; step < 40; step++ {
			for i, n := 0, 1+r.Intn(3); i < n; i++ {
				history = append(history, m.step(t))
			}
			plan, ch := c.Compile()
			full, _ := policy.NewCompiler(s, policy.Options{}).Recompile()
			want := renderPlan(full)
			got := renderPlan(plan)
			if d := planDiff(want, got); d != "" {
				t.Fatalf("run %d step %d: incremental plan differs from full compile after %v:\n%s", run, step, history, d)
			}
			if plan.Generation != prev.Generation+1 {
				t.Errorf("generation %d after %d", plan.Generation, prev.Generation)
			}
			if !ch.Full {
				checkChangesNamed(t, renderPlan(prev), got, ch, history)
			}
			prev = plan
		}
		if _, ch := c.Compile(); !ch.Empty() {
			t.Errorf("run %d: compile without changes reports %+v", run, ch)
		}
	}
}

// checkChangesNamed checks that every difference between two plans is named
// in ch.
func checkChangesNamed(t *testing.T, before, after map[string]string, ch policy.Changes, history []string) {
	t.Helper()
	named := map[string]bool{}
	for _, p := range ch.Policies {
		named["policy "+p.String()] = true
	}
	for _, w := range ch.Workloads {
		named["workload "+w.String()] = true
	}
	rules := map[string]bool{}
	for _, r := range ch.Rules {
		rules[r.String()] = true
	}
	keys := map[string]bool{}
	for k := range before {
		keys[k] = true
	}
	for k := range after {
		keys[k] = true
	}
	for k := range keys {
		if before[k] == after[k] || named[k] {
			continue
		}
		if strings.HasPrefix(k, "workload ") {
			t.Errorf("after %v: %s changed but Changes.Workloads does not name it:\nbefore %s\nafter  %s", history[max(0, len(history)-3):], k, before[k], after[k])
			continue
		}
		// A policy that did not change itself: each changed rule must be named.
		b, a := strings.Split(before[k], "\n"), strings.Split(after[k], "\n")
		if len(a) != len(b) {
			t.Errorf("after %v: %s changed shape but is not in Changes.Policies", history[max(0, len(history)-3):], k)
			continue
		}
		for i := range a {
			if a[i] != b[i] {
				ref := strings.Fields(a[i])[0]
				if !rules[ref] {
					t.Errorf("after %v: rule %s changed but Changes.Rules does not name it:\nbefore %s\nafter  %s", history[max(0, len(history)-3):], ref, b[i], a[i])
				}
			}
		}
	}
}

// TestCompileChangesNameWhatChanged checks Changes for single, known edits.
func TestCompileChangesNameWhatChanged(t *testing.T) {
	s := policy.NewStore()
	if err := s.LoadWorkloads(scenarios.Workloads()); err != nil {
		t.Fatal(err)
	}
	sc := scenarios.Upstream()[2] // x/a allows ingress from x/b
	objs, err := sc.Objects()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if err := o.Apply(s); err != nil {
			t.Fatal(err)
		}
	}
	c := policy.NewCompiler(s, policy.Options{})
	c.Compile()
	ref := objs[0].Ref()
	xa := policy.WorkloadKey{Namespace: "x", Name: "a"}
	xc := policy.WorkloadKey{Namespace: "x", Name: "c"}

	// x/c gets label pod=b: it joins the rule's peers; x/a's program is unchanged.
	w, _ := s.Workload(xc)
	w.Labels = map[string]string{"pod": "b"}
	if err := s.UpsertWorkload(w); err != nil {
		t.Fatal(err)
	}
	plan, ch := c.Compile()
	if ch.Full || len(ch.Policies) != 0 || len(ch.Rules) != 1 || ch.Rules[0].Policy != ref || len(ch.Workloads) != 0 {
		t.Errorf("relabel x/c: changes %+v", ch)
	}
	if got := plan.Policies[ref].Ingress[0].Prefixes; len(got) != 4 {
		t.Errorf("rule prefixes after relabel: %v", got)
	}

	// x/c becomes pod=a: it is now selected by the policy (its program changes).
	w.Labels = map[string]string{"pod": "a"}
	if err := s.UpsertWorkload(w); err != nil {
		t.Fatal(err)
	}
	plan, ch = c.Compile()
	if len(ch.Workloads) != 1 || ch.Workloads[0] != xc || len(ch.Rules) != 1 {
		t.Errorf("x/c selected: changes %+v", ch)
	}
	if !plan.Workloads[xc].Ingress.Isolated || !plan.Workloads[xa].Ingress.Isolated {
		t.Errorf("programs: %+v %+v", plan.Workloads[xc].Ingress, plan.Workloads[xa].Ingress)
	}

	// Deleting the policy names it and both workloads.
	s.DeletePolicy(ref)
	plan, ch = c.Compile()
	if len(ch.Policies) != 1 || ch.Policies[0] != ref || len(ch.Workloads) != 2 {
		t.Errorf("delete policy: changes %+v", ch)
	}
	if _, ok := plan.Policies[ref]; ok {
		t.Error("deleted policy still in plan")
	}

	// An Audit-mode policy never reaches the plan.
	audit := scenarios.Project()[15] // audit-mode-changes-no-verdict
	aobjs, err := audit.Objects()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range aobjs {
		if err := o.Apply(s); err != nil {
			t.Fatal(err)
		}
	}
	plan, _ = c.Compile()
	for _, o := range aobjs {
		_, in := plan.Policies[o.Ref()]
		isAudit := (o.ClusterFirewallPolicy != nil && o.ClusterFirewallPolicy.Spec.Mode == policy.ModeAudit) || (o.FirewallPolicy != nil && o.FirewallPolicy.Spec.Mode == policy.ModeAudit)
		if in == isAudit {
			t.Errorf("%s: in plan %v, audit %v", o.Ref(), in, isAudit)
		}
	}

	// Deleting a workload names it and drops it.
	s.DeleteWorkload(xa)
	plan, ch = c.Compile()
	if _, ok := plan.Workloads[xa]; ok || len(ch.Workloads) != 1 || ch.Workloads[0] != xa {
		t.Errorf("delete workload: changes %+v", ch)
	}
}

// Package dataplane holds the kernel conformance tests of the enforcer: plans
// applied to a node network namespace (test/netmodel) must give the
// reachability that policy.Engine.Decide computes, measured with real TCP and
// UDP packets between pod namespaces.
package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/nftset"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/scenarios"
	"github.com/egressd/egressd/test/testenv"
)

// harness is one node with the model's nine pods and the default external peer.
type harness struct {
	t      testing.TB
	node   *netmodel.Node
	pods   []*netmodel.Pod // scenarios.Endpoints order, external last
	byName map[string]*netmodel.Pod
	enf    *egress.Enforcer
	sets   *nftset.Manager
	pr     *netmodel.Prober
	// eng is the engine of the plan applied last: the enforcer's revocation
	// (conntrack cleanup) asks it, as the agent asks its engine.
	eng *policy.Engine
}

// decide is the revocation callback: the current engine's verdict.
func (h *harness) decide(c policy.Connection) policy.Verdict {
	if h.eng == nil {
		return policy.Allow
	}
	return h.eng.Decide(c).Verdict
}

func requireKernel(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "nft")
}

func newHarness(t testing.TB, opts ...egress.Option) *harness {
	t.Helper()
	requireKernel(t)
	node := netmodel.NewTestNode(t, netmodel.Options{Ports: []int{80, 81}})
	var specs []netmodel.PodSpec
	for _, ep := range scenarios.Endpoints() {
		specs = append(specs, netmodel.PodSpec{Name: ep.Name, IPv4: ep.IPv4, IPv6: ep.IPv6})
	}
	pods, err := node.AddPodSpecs(specs...)
	if err != nil {
		t.Fatalf("pods: %v", err)
	}
	ext, err := node.AddExternal(netmodel.ExternalSpec{
		Name: scenarios.DefaultExternal.Name,
		IPv4: netip.PrefixFrom(scenarios.DefaultExternal.IPv4, 24),
		IPv6: netip.PrefixFrom(scenarios.DefaultExternal.IPv6, 64),
	})
	if err != nil {
		t.Fatalf("external: %v", err)
	}
	h := &harness{t: t, node: node, pods: append(pods, ext), byName: map[string]*netmodel.Pod{},
		pr: &netmodel.Prober{Timeout: 200 * time.Millisecond, Workers: 192}}
	for _, p := range h.pods {
		h.byName[p.Name] = p
	}
	h.enf = h.newEnforcer(append([]egress.Option{egress.WithRevocation(h.decide)}, opts...)...)
	m, err := nftset.New(nftset.WithNetNS(node.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	h.sets = m
	t.Cleanup(func() { m.Close() })
	return h
}

func (h *harness) newEnforcer(opts ...egress.Option) *egress.Enforcer {
	e, err := egress.New(append([]egress.Option{egress.WithNetNS(h.node.Fd())}, opts...)...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { e.Close() })
	return e
}

// ruleset lists the node's whole nftables ruleset.
func (h *harness) ruleset() string {
	out, err := h.node.Exec(context.Background(), "", "nft", "list", "ruleset")
	if err != nil {
		return fmt.Sprintf("nft list ruleset: %v: %s", err, out)
	}
	return string(out)
}

// writeLookups fills the FQDN sets of plan with the lookups (workload address,
// answer address) for every FQDN rule the engine says the name is for; the
// sets are emptied first.
func (h *harness) writeLookups(ctx context.Context, eng *policy.Engine, plan *policy.Plan, lookups []scenarios.Lookup) error {
	ruleIDs := map[policy.RuleRef]string{}
	var ops []ipset.Op
	var specs []ipset.Spec
	for _, pp := range plan.Policies {
		for _, r := range pp.Egress {
			ruleIDs[r.Ref] = r.ID
			if r.FQDN && !r.AnyPeer {
				for _, f := range []ipset.Family{ipset.IPv4, ipset.IPv6} {
					specs = append(specs, egress.FQDNSetSpec(r.ID, f))
					ops = append(ops, ipset.Op{Kind: ipset.OpFlush, Set: egress.FQDNSetName(r.ID, f)})
				}
			}
		}
	}
	if len(specs) == 0 {
		return nil
	}
	if err := h.sets.Ensure(ctx, specs...); err != nil {
		return err
	}
	for _, l := range lookups {
		k, err := policy.ParseWorkloadKey(l.Workload)
		if err != nil {
			return err
		}
		w, ok := eng.Store().Workload(k)
		if !ok {
			return fmt.Errorf("lookup by unknown workload %s", k)
		}
		for _, ref := range eng.FQDNRules(k, l.Name) {
			id, ok := ruleIDs[ref]
			if !ok {
				continue
			}
			for _, ans := range l.IPs {
				f := ipset.FamilyOf(ans)
				for _, wip := range w.IPs {
					if ipset.FamilyOf(wip) == f {
						ops = append(ops, ipset.Op{Kind: ipset.OpAdd, Set: egress.FQDNSetName(id, f), Elements: []ipset.Element{ipset.Pair(wip, ans, 10*time.Minute)}})
					}
				}
			}
		}
	}
	return h.sets.Apply(ctx, ops...)
}

// measure probes every pair of endpoints on ports 80 and 81 over TCP and UDP
// for a family, without loopback cells.
func (h *harness) measure(ctx context.Context, fam scenarios.Family, pods []*netmodel.Pod) (scenarios.Reachability, error) {
	nf := netmodel.IPv4
	if fam == scenarios.IPv6 {
		nf = netmodel.IPv6
	}
	r, err := h.pr.Matrix(ctx, pods, []int{80, 81}, []netmodel.Protocol{netmodel.TCP, netmodel.UDP}, nf)
	out := scenarios.Reachability{}
	for c, v := range r {
		if c.From == c.To {
			continue
		}
		out[scenarios.Cell{From: c.From, To: c.To, Port: int32(c.Port), Protocol: policy.Protocol(c.Proto), Family: fam}] = v
	}
	return out, err
}

// expect computes the engine's matrix over the same cells.
func expect(eng *policy.Engine, fam scenarios.Family, externals []scenarios.External) scenarios.Reachability {
	return scenarios.WithoutLoopback(scenarios.Matrix(eng, []int32{80, 81}, []policy.Protocol{policy.ProtocolTCP, policy.ProtocolUDP}, fam, externals...))
}

// podsFor returns the probe endpoints of a scenario (the model's pods plus its
// externals, which must be the default external).
func (h *harness) podsFor(externals []scenarios.External) ([]*netmodel.Pod, error) {
	pods := h.pods[:9:9]
	for _, x := range externals {
		if x != scenarios.DefaultExternal {
			return nil, fmt.Errorf("external %v is not on the test network", x)
		}
		pods = append(pods, h.byName[x.Name])
	}
	return pods, nil
}

// session keeps one store and compiler across scenarios so that consecutive
// scenarios reach the kernel as incremental changes.
type session struct {
	store    *policy.Store
	comp     *policy.Compiler
	opts     policy.Options
	objs     []manifest.Object
	needFull bool
}

func newSession(opts policy.Options) (*session, error) {
	st, err := manifest.LoadStore(nil, scenarios.Workloads())
	if err != nil {
		return nil, err
	}
	return &session{store: st, comp: policy.NewCompiler(st, opts), opts: opts, needFull: true}, nil
}

// load replaces the session's policies and lookups with the scenario's and
// compiles.
func (s *session) load(sc *scenarios.Scenario) (*policy.Plan, policy.Changes, *policy.Engine, error) {
	objs, err := sc.Objects()
	if err != nil {
		return nil, policy.Changes{}, nil, err
	}
	for _, o := range s.objs {
		s.store.DeletePolicy(o.Ref())
	}
	for _, o := range objs {
		if err := o.Apply(s.store); err != nil {
			return nil, policy.Changes{}, nil, err
		}
	}
	s.objs = objs
	for _, k := range s.store.Workloads() {
		s.store.ForgetLookups(k)
	}
	for _, l := range sc.Lookups {
		k, _ := policy.ParseWorkloadKey(l.Workload)
		s.store.RecordLookup(k, l.Name, l.IPs...)
	}
	plan, ch := s.comp.Compile()
	if s.needFull {
		ch.Full = true
		s.needFull = false
	}
	return plan, ch, policy.NewEngine(s.store, s.opts), nil
}

// check applies nothing; it measures and compares, and reports mismatches with
// the rendered ruleset.
func (h *harness) check(ctx context.Context, t testing.TB, name string, eng *policy.Engine, plan *policy.Plan, externals []scenarios.External, fams ...scenarios.Family) bool {
	t.Helper()
	pods, err := h.podsFor(externals)
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return false
	}
	ok := true
	for _, fam := range fams {
		want := expect(eng, fam, externals)
		got, err := h.measure(ctx, fam, pods)
		if err != nil {
			t.Errorf("%s: probes: %v", name, err)
			return false
		}
		// Cells that differ are probed again, alone and with a longer timeout, to
		// rule out a loaded machine (a false "denied").
		for _, c := range scenarios.Diff(want, got) {
			from, to := h.byName[c.From], h.byName[c.To]
			addr := to.IPv4
			if c.Family == scenarios.IPv6 {
				addr = to.IPv6
			}
			ok, err := h.pr.Probe(ctx, from, addr, int(c.Port), netmodel.Protocol(c.Protocol), time.Second)
			if err == nil {
				got[c] = ok
			}
		}
		if d := scenarios.Diff(want, got); len(d) > 0 {
			eps := scenarios.Endpoints(externals...)
			t.Errorf("%s %v: %d cell(s) differ from the engine; first %v\n%s\nrendered:\n%s", name, fam, len(d), d[0],
				scenarios.Format(want, got, eps), h.enf.Render(plan))
			ok = false
		}
	}
	return ok
}

// nftHost lists the host namespace's ruleset (read-only), or "" when nft is
// missing.
func nftHost() string {
	out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		return "error: " + err.Error() + ": " + string(out)
	}
	return string(out)
}

// sctpSignature counts, per chain, the rules that match SCTP and, per set, the
// SCTP elements, in nft's text output (the kernel's listing or Render's).
func sctpSignature(text string) map[string]int {
	sig := map[string]int{}
	var block string
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && (f[0] == "chain" || f[0] == "set" || f[0] == "map") && strings.HasSuffix(strings.TrimSpace(l), "{") {
			block = f[0] + " " + f[1]
			continue
		}
		if block == "" {
			continue
		}
		if i := strings.Index(l, " comment \""); i >= 0 {
			l = l[:i]
		}
		if strings.HasPrefix(block, "chain") {
			if strings.Contains(l, "sctp") {
				sig[block]++
			}
			continue
		}
		sig[block] += strings.Count(l, ". sctp .")
	}
	for k, v := range sig {
		if v == 0 {
			delete(sig, k)
		}
	}
	return sig
}

// checkSCTP compares the SCTP rules and set elements programmed in the kernel
// with the rendering of the plan (the kernel has no SCTP sockets to probe with;
// the rendering's TCP/UDP twins are probed with real packets).
func (h *harness) checkSCTP(t testing.TB, name string, plan *policy.Plan) {
	t.Helper()
	out, err := h.node.Exec(context.Background(), "", "nft", "-s", "list", "table", "inet", h.enf.Table())
	if err != nil {
		t.Errorf("%s: nft list: %v %s", name, err, out)
		return
	}
	want := sctpSignature(h.enf.Render(plan))
	got := sctpSignature(string(out))
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Errorf("%s: SCTP rules/elements in the kernel %v, rendered %v\nkernel:\n%s", name, got, want, out)
	}
}

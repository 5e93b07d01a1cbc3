package policy

import (
	"maps"
	"net/netip"
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/labels"
)

// Compiler turns the Store into Plans, incrementally: after the first full
// compile, a workload or policy change recomputes only the rules and workloads
// it touches, and Changes names them. A Compiler is not safe for concurrent
// use; one goroutine (the agent's sync loop) owns it.
type Compiler struct {
	store *Store
	opts  Options
	plan  *Plan
	// policies are the enforced compiled policies the plan was built from.
	policies map[PolicyRef]*compiledPolicy
	// selected[w] are the enforced policies selecting w; members is the reverse.
	selected map[WorkloadKey]map[PolicyRef]*compiledPolicy
	members  map[PolicyRef]map[WorkloadKey]bool
}

// NewCompiler returns a compiler over store; the first Compile is full.
func NewCompiler(store *Store, opts Options) *Compiler {
	return &Compiler{store: store, opts: opts.withDefaults()}
}

// Plan returns the last compiled plan (nil before the first Compile).
func (c *Compiler) Plan() *Plan { return c.plan }

// Compile brings the plan up to date with the store and returns it with what
// changed since the previous compile.
func (c *Compiler) Compile() (*Plan, Changes) {
	s := c.store
	s.mu.Lock()
	defer s.mu.Unlock()
	pending := s.pending
	s.pending.reset()
	if c.plan == nil || pending.all || len(pending.namespaces) > 0 {
		return c.fullLocked()
	}
	return c.incrementalLocked(&pending)
}

// Recompile throws the incremental state away and compiles everything.
func (c *Compiler) Recompile() (*Plan, Changes) {
	s := c.store
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending.reset()
	return c.fullLocked()
}

func (c *Compiler) fullLocked() (*Plan, Changes) {
	s := c.store
	gen := uint64(1)
	if c.plan != nil {
		gen = c.plan.Generation + 1
	}
	plan := &Plan{
		DefaultVerdict: c.opts.DefaultVerdict,
		Policies:       make(map[PolicyRef]*PlanPolicy, len(s.policies)),
		Workloads:      make(map[WorkloadKey]*PlanWorkload, len(s.workloads)),
		Generation:     gen,
	}
	c.policies = map[PolicyRef]*compiledPolicy{}
	c.selected = make(map[WorkloadKey]map[PolicyRef]*compiledPolicy, len(s.workloads))
	c.members = map[PolicyRef]map[WorkloadKey]bool{}
	for ref, cp := range s.policies {
		if cp.audit {
			continue
		}
		c.policies[ref] = cp
		plan.Policies[ref] = c.planPolicyLocked(cp)
		c.selectLocked(cp)
	}
	for key, w := range s.workloads {
		plan.Workloads[key] = c.planWorkloadLocked(w)
	}
	c.plan = plan
	return plan, Changes{Full: true}
}

func (c *Compiler) incrementalLocked(pending *changeLog) (*Plan, Changes) {
	s := c.store
	old := c.plan
	plan := &Plan{
		DefaultVerdict: old.DefaultVerdict,
		Policies:       maps.Clone(old.Policies),
		Workloads:      maps.Clone(old.Workloads),
		Generation:     old.Generation + 1,
	}
	var ch Changes
	dirty := map[WorkloadKey]bool{}

	// Policies: drop the old selection, compile and select anew.
	for ref := range pending.policies {
		ch.Policies = append(ch.Policies, ref)
		if _, ok := c.policies[ref]; ok {
			for w := range c.members[ref] {
				delete(c.selected[w], ref)
				dirty[w] = true
			}
			delete(c.members, ref)
			delete(c.policies, ref)
			delete(plan.Policies, ref)
		}
		cp, ok := s.policies[ref]
		if !ok || cp.audit {
			continue
		}
		c.policies[ref] = cp
		plan.Policies[ref] = c.planPolicyLocked(cp)
		for w := range c.selectLocked(cp) {
			dirty[w] = true
		}
	}

	// Workloads: reselect, and recompute the rules whose peers or named ports
	// involve the old or the new version.
	var touched []*Workload
	for key, before := range pending.workloads {
		dirty[key] = true
		for ref := range c.selected[key] {
			delete(c.members[ref], key)
		}
		delete(c.selected, key)
		now := s.workloads[key]
		if now != nil {
			ns := s.namespaceLocked(now.Namespace)
			for _, cp := range c.policies {
				if cp.selects(now, ns) {
					c.addSelection(cp, key)
				}
			}
			touched = append(touched, now)
		}
		if before != nil {
			touched = append(touched, before)
		}
	}
	if len(touched) > 0 {
		for ref, cp := range c.policies {
			if pending.policies[ref] {
				continue // compiled above against the current workloads
			}
			if pp := c.refreshRulesLocked(cp, plan.Policies[ref], touched, &ch); pp != nil {
				plan.Policies[ref] = pp
			}
		}
	}

	for key := range dirty {
		w := s.workloads[key]
		if w == nil {
			if _, ok := plan.Workloads[key]; ok {
				delete(plan.Workloads, key)
				ch.Workloads = append(ch.Workloads, key)
			}
			continue
		}
		pw := c.planWorkloadLocked(w)
		if prev, ok := plan.Workloads[key]; ok && samePlanWorkload(prev, pw) {
			continue
		}
		plan.Workloads[key] = pw
		ch.Workloads = append(ch.Workloads, key)
	}
	sort.Slice(ch.Policies, func(i, j int) bool { return ch.Policies[i].String() < ch.Policies[j].String() })
	sort.Slice(ch.Rules, func(i, j int) bool { return ch.Rules[i].String() < ch.Rules[j].String() })
	sort.Slice(ch.Workloads, func(i, j int) bool { return ch.Workloads[i].String() < ch.Workloads[j].String() })
	c.plan = plan
	return plan, ch
}

func samePlanWorkload(a, b *PlanWorkload) bool {
	return a.Node == b.Node && slices.Equal(a.IPs, b.IPs) &&
		a.Ingress.Key() == b.Ingress.Key() && a.Egress.Key() == b.Egress.Key()
}

func (c *Compiler) addSelection(cp *compiledPolicy, w WorkloadKey) {
	if c.selected[w] == nil {
		c.selected[w] = map[PolicyRef]*compiledPolicy{}
	}
	c.selected[w][cp.ref] = cp
	if c.members[cp.ref] == nil {
		c.members[cp.ref] = map[WorkloadKey]bool{}
	}
	c.members[cp.ref][w] = true
}

// selectLocked records the workloads cp selects and returns them.
func (c *Compiler) selectLocked(cp *compiledPolicy) map[WorkloadKey]bool {
	s := c.store
	visit := func(ws map[WorkloadKey]*Workload) {
		for key, w := range ws {
			if cp.podSel.Matches(labels.Set(w.Labels)) {
				c.addSelection(cp, key)
			}
		}
	}
	if cp.namespace != "" {
		visit(s.byNS[cp.namespace])
	} else {
		for ns, ws := range s.byNS {
			if cp.nsSel.Matches(labels.Set(s.namespaceLocked(ns).Labels)) {
				visit(ws)
			}
		}
	}
	return c.members[cp.ref]
}

func (c *Compiler) planWorkloadLocked(w *Workload) *PlanWorkload {
	sel := make([]*compiledPolicy, 0, len(c.selected[w.Key()]))
	for _, cp := range c.selected[w.Key()] {
		sel = append(sel, cp)
	}
	return &PlanWorkload{
		Key:     w.Key(),
		IPs:     slices.Clone(w.IPs),
		Node:    w.Node,
		Ingress: buildProgram(sel, Ingress),
		Egress:  buildProgram(sel, Egress),
	}
}

func (c *Compiler) planPolicyLocked(cp *compiledPolicy) *PlanPolicy {
	pp := &PlanPolicy{Ref: cp.ref, Tier: cp.tier, Priority: cp.priority}
	for _, r := range cp.rules[dirIndex(Ingress)] {
		pp.Ingress = append(pp.Ingress, c.planRuleLocked(r))
	}
	for _, r := range cp.rules[dirIndex(Egress)] {
		pp.Egress = append(pp.Egress, c.planRuleLocked(r))
	}
	return pp
}

// refreshRulesLocked recomputes the rules of cp that involve a touched
// workload; it returns a new PlanPolicy when some rule changed, else nil.
func (c *Compiler) refreshRulesLocked(cp *compiledPolicy, pp *PlanPolicy, touched []*Workload, ch *Changes) *PlanPolicy {
	s := c.store
	var out *PlanPolicy
	for _, dir := range Directions {
		for i, r := range cp.rules[dirIndex(dir)] {
			if !ruleInvolves(r, touched, s) {
				continue
			}
			nr := c.planRuleLocked(r)
			prev := pp.Rules(dir)[i]
			if slices.Equal(prev.Prefixes, nr.Prefixes) && slices.Equal(prev.NamedPorts, nr.NamedPorts) {
				continue
			}
			if out == nil {
				cp := *pp
				cp.Ingress, cp.Egress = slices.Clone(pp.Ingress), slices.Clone(pp.Egress)
				out = &cp
			}
			if dir == Ingress {
				out.Ingress[i] = nr
			} else {
				out.Egress[i] = nr
			}
			ch.Rules = append(ch.Rules, nr.Ref)
		}
	}
	return out
}

// ruleInvolves reports whether a peer or named port of r concerns one of ws.
func ruleInvolves(r *compiledRule, ws []*Workload, s *Store) bool {
	for _, w := range ws {
		ns := s.namespaceLocked(w.Namespace)
		for i := range r.peers {
			if r.peers[i].matchesWorkload(w, ns) {
				return true
			}
		}
		for _, p := range r.ports {
			if p.name == "" {
				continue
			}
			if _, ok := w.namedPort(p.name, p.protocol); ok {
				return true
			}
		}
	}
	return false
}

func (c *Compiler) planRuleLocked(r *compiledRule) *PlanRule {
	s := c.store
	ref := r.ref()
	pr := &PlanRule{
		Ref: ref, ID: RuleID(ref), Direction: r.direction, Action: r.action, Tier: r.policy.tier,
		AnyPeer: r.anyPeer, AnyPort: r.anyPort, FQDN: r.hasFQDN,
	}
	var prefixes []netip.Prefix
	for i := range r.peers {
		p := &r.peers[i]
		switch p.kind {
		case peerCIDR:
			prefixes = append(prefixes, p.prefixes...)
		case peerFQDN:
			pr.Patterns = append(pr.Patterns, p.pattern.String())
		case peerPods, peerNamespaces:
			visit := func(ws map[WorkloadKey]*Workload) {
				for _, w := range ws {
					if p.kind == peerPods && !p.podSel.Matches(labels.Set(w.Labels)) {
						continue
					}
					for _, ip := range w.IPs {
						prefixes = append(prefixes, netip.PrefixFrom(ip, ip.BitLen()))
					}
				}
			}
			if p.namespace != "" {
				visit(s.byNS[p.namespace])
				continue
			}
			for ns, ws := range s.byNS {
				if p.nsSel.Matches(labels.Set(s.namespaceLocked(ns).Labels)) {
					visit(ws)
				}
			}
		}
	}
	pr.Prefixes = mergePrefixes(prefixes)
	for _, p := range r.ports {
		switch {
		case p.all:
			pr.Ports = append(pr.Ports, PortRange{Protocol: p.protocol, All: true})
		case p.name != "":
			for _, w := range s.workloads {
				if port, ok := w.namedPort(p.name, p.protocol); ok {
					for _, ip := range w.IPs {
						pr.NamedPorts = append(pr.NamedPorts, NamedPortTarget{Addr: ip, Protocol: p.protocol, Port: uint16(port)})
					}
				}
			}
		default:
			pr.Ports = append(pr.Ports, PortRange{Protocol: p.protocol, First: uint16(p.first), Last: uint16(p.last)})
		}
	}
	sort.Slice(pr.NamedPorts, func(i, j int) bool {
		a, b := pr.NamedPorts[i], pr.NamedPorts[j]
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c < 0
		}
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		return a.Port < b.Port
	})
	pr.NamedPorts = slices.Compact(pr.NamedPorts)
	return pr
}

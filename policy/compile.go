package policy

import (
	"encoding/binary"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Compiler turns the Store into Plans, incrementally: after the first full
// compile, a workload or policy change recomputes only the rules and workloads
// it touches, and Changes names them. A Compiler is not safe for concurrent
// use; one goroutine (the agent's sync loop) owns it.
type Compiler struct {
	store *Store
	opts  Options
	// node, when set, scopes the compiler to the workloads of that node (see
	// ForNode); "" compiles every workload (standalone, egressctl).
	node   string
	scoped bool
	plan   *Plan
	// policies are the enforced compiled policies the plan was built from.
	policies map[PolicyRef]*compiledPolicy
	// selected[w] are the enforced policies selecting w; members is the reverse.
	selected map[WorkloadKey]map[PolicyRef]*compiledPolicy
	members  map[PolicyRef]map[WorkloadKey]bool
	// peers memoizes, for the duration of one compile, the workloads and
	// addresses a pods or namespaces peer selects (many rules share selectors).
	peers map[string]*peerSelection
	// named memoizes, for one compile, the named-port targets of the members
	// of a subject (policies with equal subjects share them).
	named map[string][]NamedPortTarget
}

// peerSelection is what one pods or namespaces peer selects.
type peerSelection struct {
	workloads []*Workload
	// prefixes are the workloads' addresses, sorted, shared read-only by rules.
	prefixes []netip.Prefix
}

// CompilerOption configures a Compiler.
type CompilerOption func(*Compiler)

// ForNode scopes the compiler to one node (docs/scale.md "Span"): the plan's
// Workloads and the policies' selections hold only the workloads whose Node is
// node, so their cost follows the node's pods, not the cluster's. Remote
// workloads still count as peers (the rules' address sets and egress named
// ports), and a change of a remote workload recomputes only the rules whose
// peers it enters, leaves or moves in. An empty node leaves the compiler
// unscoped. Every consumer of the plan enforces only node's workloads anyway
// (egress.WithNode).
func ForNode(node string) CompilerOption {
	return func(c *Compiler) { c.node, c.scoped = node, node != "" }
}

// NewCompiler returns a compiler over store; the first Compile is full.
func NewCompiler(store *Store, opts Options, copts ...CompilerOption) *Compiler {
	c := &Compiler{store: store, opts: opts.withDefaults()}
	for _, o := range copts {
		o(c)
	}
	return c
}

// local reports whether w is compiled into the plan's workloads.
func (c *Compiler) local(w *Workload) bool { return !c.scoped || w.Node == c.node }

// localWorkloadsLocked returns the workloads the plan holds.
func (c *Compiler) localWorkloadsLocked() map[WorkloadKey]*Workload {
	if !c.scoped {
		return c.store.workloads
	}
	return c.store.byNode[c.node]
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
	locals := c.localWorkloadsLocked()
	plan := &Plan{
		DefaultVerdict: c.opts.DefaultVerdict,
		Policies:       make(map[PolicyRef]*PlanPolicy, len(s.policies)),
		Workloads:      make(map[WorkloadKey]*PlanWorkload, len(locals)),
		Generation:     gen,
	}
	c.policies = map[PolicyRef]*compiledPolicy{}
	c.selected = make(map[WorkloadKey]map[PolicyRef]*compiledPolicy, len(locals))
	c.members = map[PolicyRef]map[WorkloadKey]bool{}
	c.peers, c.named = map[string]*peerSelection{}, map[string][]NamedPortTarget{}
	defer func() { c.peers, c.named = nil, nil }()
	// Selections are gathered in slices and turned into exactly sized maps
	// afterwards: a full compile makes hundreds of thousands of them.
	sels := make(map[WorkloadKey][]*compiledPolicy, len(locals))
	// sigs[w] lists the ordinals of the policies selecting w: workloads with
	// equal signatures share their programs.
	sigs := make(map[WorkloadKey][]byte, len(locals))
	ordinal := uint64(0)
	for ref, cp := range s.policies {
		if cp.audit {
			continue
		}
		c.policies[ref] = cp
		keys := c.matchLocked(cp)
		m := make(map[WorkloadKey]bool, len(keys))
		for _, k := range keys {
			m[k] = true
			sels[k] = append(sels[k], cp)
			sigs[k] = binary.AppendUvarint(sigs[k], ordinal)
		}
		ordinal++
		c.members[ref] = m // before planning: ingress named ports resolve on members
		plan.Policies[ref] = c.planPolicyLocked(cp)
	}
	programs := map[string]*[2]Program{}
	for key, w := range locals {
		list := sels[key]
		if len(list) > 0 {
			sel := make(map[PolicyRef]*compiledPolicy, len(list))
			for _, cp := range list {
				sel[cp.ref] = cp
			}
			c.selected[key] = sel
		}
		progs := programs[string(sigs[key])]
		if progs == nil {
			progs = &[2]Program{buildProgram(list, Ingress), buildProgram(list, Egress)}
			programs[string(sigs[key])] = progs
		}
		plan.Workloads[key] = &PlanWorkload{Key: key, IPs: slices.Clone(w.IPs), Node: w.Node, Ingress: progs[0], Egress: progs[1],
			DNSBypass: dnsBypassOf(list)}
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
	c.peers, c.named = map[string]*peerSelection{}, map[string][]NamedPortTarget{}
	defer func() { c.peers, c.named = nil, nil }()

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
		for w := range c.selectLocked(cp) {
			dirty[w] = true
		}
		plan.Policies[ref] = c.planPolicyLocked(cp)
	}

	// Workloads: reselect, and recompute the rules whose peers or named ports
	// involve the old or the new version.
	var touched []workloadChange
	for key, before := range pending.workloads {
		dirty[key] = true
		for ref := range c.selected[key] {
			delete(c.members[ref], key)
		}
		delete(c.selected, key)
		now := s.workloads[key]
		if now != nil && c.local(now) {
			ns := s.namespaceLocked(now.Namespace)
			for _, cp := range c.policies {
				if cp.selects(now, ns) {
					c.addSelection(cp, key)
				}
			}
		}
		touched = append(touched, workloadChange{before: before, now: now})
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
		if w == nil || !c.local(w) {
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
		a.Ingress.Key() == b.Ingress.Key() && a.Egress.Key() == b.Egress.Key() &&
		a.DNSBypass.Equal(b.DNSBypass)
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
	keys := c.matchLocked(cp)
	// Sized maps: a full compile makes hundreds of thousands of selections.
	m := c.members[cp.ref]
	if m == nil {
		m = make(map[WorkloadKey]bool, len(keys))
		c.members[cp.ref] = m
	}
	for _, key := range keys {
		sel := c.selected[key]
		if sel == nil {
			sel = make(map[PolicyRef]*compiledPolicy, 8)
			c.selected[key] = sel
		}
		sel[cp.ref] = cp
		m[key] = true
	}
	return m
}

// matchLocked returns the workloads cp selects.
func (c *Compiler) matchLocked(cp *compiledPolicy) []WorkloadKey {
	s := c.store
	var keys []WorkloadKey
	visit := func(ws map[WorkloadKey]*Workload) {
		for key, w := range ws {
			if cp.podSel.Matches(labels.Set(w.Labels)) {
				keys = append(keys, key)
			}
		}
	}
	switch {
	case c.scoped:
		// The node's workloads only: O(pods of the node) per policy.
		for key, w := range s.byNode[c.node] {
			if cp.selects(w, s.namespaceLocked(w.Namespace)) {
				keys = append(keys, key)
			}
		}
	case cp.namespace != "":
		visit(s.byNS[cp.namespace])
	default:
		for ns, ws := range s.byNS {
			if cp.nsSel.Matches(labels.Set(s.namespaceLocked(ns).Labels)) {
				visit(ws)
			}
		}
	}
	return keys
}

func (c *Compiler) planWorkloadLocked(w *Workload) *PlanWorkload {
	sel := make([]*compiledPolicy, 0, len(c.selected[w.Key()]))
	for _, cp := range c.selected[w.Key()] {
		sel = append(sel, cp)
	}
	return newPlanWorkload(w, sel)
}

// newPlanWorkload builds the programs of w from the policies selecting it.
func newPlanWorkload(w *Workload, sel []*compiledPolicy) *PlanWorkload {
	return &PlanWorkload{
		Key:     w.Key(),
		IPs:     slices.Clone(w.IPs),
		Node:    w.Node,
		Ingress: buildProgram(sel, Ingress),
		Egress:  buildProgram(sel, Egress),

		DNSBypass: dnsBypassOf(sel),
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
func (c *Compiler) refreshRulesLocked(cp *compiledPolicy, pp *PlanPolicy, touched []workloadChange, ch *Changes) *PlanPolicy {
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

// workloadChange is a workload before and after a change (nil when absent).
type workloadChange struct{ before, now *Workload }

// ruleInvolves reports whether the compiled form of r (its addresses or its
// resolved named ports) can differ because of one of the changes: a pods or
// namespaces peer's match or the matched addresses changed, or the named-port
// targets the workload contributes changed.
func ruleInvolves(r *compiledRule, changes []workloadChange, s *Store) bool {
	for _, ch := range changes {
		w := ch.now
		if w == nil {
			w = ch.before
		}
		if w == nil {
			continue // added and deleted again since the last compile
		}
		ns := s.namespaceLocked(w.Namespace)
		sameIPs := ch.before != nil && ch.now != nil && slices.Equal(ch.before.IPs, ch.now.IPs)
		for i := range r.peers {
			p := &r.peers[i]
			if p.kind != peerPods && p.kind != peerNamespaces {
				continue
			}
			was := ch.before != nil && p.matchesWorkload(ch.before, ns)
			is := ch.now != nil && p.matchesWorkload(ch.now, ns)
			if was != is || (was && !sameIPs) {
				return true
			}
		}
		if len(r.ports) > 0 && !slices.Equal(namedPortTargets(r, ch.before, ns), namedPortTargets(r, ch.now, ns)) {
			return true
		}
	}
	return false
}

// namedPortDestination reports whether w can be the destination of traffic that
// r matches, so that its named ports must be resolved for r: for an ingress rule
// the workloads the policy selects; for an egress rule the workloads its peers
// select (every workload when a peer is a CIDR or FQDN, or when there are none).
func namedPortDestination(r *compiledRule, w *Workload, ns *Namespace) bool {
	if r.direction == Ingress {
		return r.policy.selects(w, ns)
	}
	if r.anyPeer {
		return true
	}
	for i := range r.peers {
		p := &r.peers[i]
		switch p.kind {
		case peerPods, peerNamespaces:
			if p.matchesWorkload(w, ns) {
				return true
			}
		default:
			return true
		}
	}
	return false
}

// namedPortTargets returns the named-port targets w contributes to r (nil when
// w is nil, not a destination of r, or defines none of r's names).
func namedPortTargets(r *compiledRule, w *Workload, ns *Namespace) []NamedPortTarget {
	if w == nil {
		return nil
	}
	var out []NamedPortTarget
	dest := -1
	for _, p := range r.ports {
		if p.name == "" {
			continue
		}
		port, ok := w.namedPort(p.name, p.protocol)
		if !ok {
			continue
		}
		if dest < 0 {
			dest = 0
			if namedPortDestination(r, w, ns) {
				dest = 1
			}
		}
		if dest == 0 {
			return nil
		}
		for _, ip := range w.IPs {
			out = append(out, NamedPortTarget{Addr: ip, Protocol: p.protocol, Port: uint16(port)})
		}
	}
	return out
}

// memberNamedPortsLocked resolves the named ports of an ingress rule on the
// members of its policy, memoized per subject and port for this compile.
func (c *Compiler) memberNamedPortsLocked(r *compiledRule) []NamedPortTarget {
	cp := r.policy
	var subject strings.Builder
	subject.WriteString(cp.namespace)
	subject.WriteByte(0)
	if cp.nsSel != nil {
		subject.WriteString(cp.nsSel.String())
	}
	subject.WriteByte(0)
	subject.WriteString(cp.podSel.String())
	var parts [][]NamedPortTarget
	for _, p := range r.ports {
		if p.name == "" {
			continue
		}
		key := subject.String() + "\x00" + p.name + "\x00" + string(p.protocol)
		ts, ok := c.named[key]
		if !ok || c.named == nil {
			for k := range c.members[cp.ref] {
				w := c.store.workloads[k]
				if w == nil {
					continue
				}
				if port, ok := w.namedPort(p.name, p.protocol); ok {
					for _, ip := range w.IPs {
						ts = append(ts, NamedPortTarget{Addr: ip, Protocol: p.protocol, Port: uint16(port)})
					}
				}
			}
			sortNamedPorts(ts)
			if c.named != nil {
				c.named[key] = ts
			}
		}
		parts = append(parts, ts)
	}
	if len(parts) == 1 {
		return parts[0] // shared, read-only
	}
	var out []NamedPortTarget
	for _, ts := range parts {
		out = append(out, ts...)
	}
	sortNamedPorts(out)
	return slices.Compact(out)
}

func sortNamedPorts(ts []NamedPortTarget) {
	slices.SortFunc(ts, func(a, b NamedPortTarget) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		if a.Protocol != b.Protocol {
			return strings.Compare(string(a.Protocol), string(b.Protocol))
		}
		return int(a.Port) - int(b.Port)
	})
}

// peerKey identifies what a pods or namespaces peer selects.
func peerKey(p *compiledPeer) string {
	var b strings.Builder
	b.WriteByte(byte('0' + p.kind))
	b.WriteString(p.namespace)
	b.WriteByte(0)
	if p.nsSel != nil {
		b.WriteString(p.nsSel.String())
	}
	b.WriteByte(0)
	if p.kind == peerPods && p.podSel != nil {
		b.WriteString(p.podSel.String())
	}
	return b.String()
}

// peerSelectionLocked returns (memoized for this compile) the workloads and
// addresses a pods or namespaces peer selects.
func (c *Compiler) peerSelectionLocked(p *compiledPeer) *peerSelection {
	key := peerKey(p)
	if ps, ok := c.peers[key]; ok && c.peers != nil {
		return ps
	}
	s := c.store
	ps := &peerSelection{}
	visit := func(ws map[WorkloadKey]*Workload) {
		for _, w := range ws {
			if p.kind == peerPods && !p.podSel.Matches(labels.Set(w.Labels)) {
				continue
			}
			ps.workloads = append(ps.workloads, w)
			for _, ip := range w.IPs {
				ps.prefixes = append(ps.prefixes, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	if p.namespace != "" {
		visit(s.byNS[p.namespace])
	} else {
		for ns, ws := range s.byNS {
			if p.nsSel.Matches(labels.Set(s.namespaceLocked(ns).Labels)) {
				visit(ws)
			}
		}
	}
	ps.prefixes = mergePrefixes(ps.prefixes)
	if c.peers != nil {
		c.peers[key] = ps
	}
	return ps
}

func (c *Compiler) planRuleLocked(r *compiledRule) *PlanRule {
	s := c.store
	ref := r.ref()
	pr := &PlanRule{
		Ref: ref, ID: RuleID(ref), Direction: r.direction, Action: r.action, Tier: r.policy.tier,
		AnyPeer: r.anyPeer, AnyPort: r.anyPort, FQDN: r.hasFQDN,
	}
	if r.action == ActionPass && r.policy.tier == TierBaseline {
		// A ClusterNetworkPolicy's Pass in the Baseline tier skips the rest
		// of the tier: the node default decides (Engine.baselinePass).
		pr.Action = ActionAllow
		if c.opts.DefaultVerdict == Deny {
			pr.Action = ActionDeny
		}
	}
	var sets [][]netip.Prefix
	var selections []*peerSelection
	allDestinations := r.anyPeer
	for i := range r.peers {
		p := &r.peers[i]
		switch p.kind {
		case peerCIDR:
			sets = append(sets, p.prefixes)
			allDestinations = true
		case peerFQDN:
			pr.Patterns = append(pr.Patterns, p.pattern.String())
			allDestinations = true
		case peerPods, peerNamespaces:
			sel := c.peerSelectionLocked(p)
			selections = append(selections, sel)
			sets = append(sets, sel.prefixes)
		case peerNodes:
			sets = append(sets, c.nodePrefixesLocked(p))
			allDestinations = true
		}
	}
	switch {
	case len(sets) == 1 && len(selections) == 1:
		pr.Prefixes = sets[0] // shared, read-only
	case len(sets) > 0:
		var all []netip.Prefix
		for _, ps := range sets {
			all = append(all, ps...)
		}
		pr.Prefixes = mergePrefixes(all)
	}
	hasNamed := false
	for _, p := range r.ports {
		switch {
		case p.all:
			pr.Ports = append(pr.Ports, PortRange{Protocol: p.protocol, All: true})
		case p.name != "":
			hasNamed = true
		default:
			pr.Ports = append(pr.Ports, PortRange{Protocol: p.protocol, First: uint16(p.first), Last: uint16(p.last)})
		}
	}
	if !hasNamed {
		return pr
	}
	// Named ports resolve on the rule's possible destinations only: the
	// policy's members for ingress, the peers' workloads for egress.
	resolve := func(w *Workload) {
		for _, p := range r.ports {
			if p.name == "" {
				continue
			}
			if port, ok := w.namedPort(p.name, p.protocol); ok {
				for _, ip := range w.IPs {
					pr.NamedPorts = append(pr.NamedPorts, NamedPortTarget{Addr: ip, Protocol: p.protocol, Port: uint16(port)})
				}
			}
		}
	}
	switch {
	case r.direction == Ingress:
		pr.NamedPorts = c.memberNamedPortsLocked(r)
		return pr
	case allDestinations:
		for _, w := range s.workloads {
			resolve(w)
		}
	default:
		for _, sel := range selections {
			for _, w := range sel.workloads {
				resolve(w)
			}
		}
	}
	sortNamedPorts(pr.NamedPorts)
	pr.NamedPorts = slices.Compact(pr.NamedPorts)
	return pr
}

// nodePrefixesLocked returns the addresses of the nodes a nodes peer selects.
func (c *Compiler) nodePrefixesLocked(p *compiledPeer) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range c.store.nodes {
		if p.nodeSel.Matches(labels.Set(n.Labels)) {
			for _, ip := range n.IPs {
				out = append(out, netip.PrefixFrom(ip, ip.BitLen()))
			}
		}
	}
	return mergePrefixes(out)
}

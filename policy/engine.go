package policy

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/egressd/egressd/policy/domain"
)

// Verdict is the outcome of a decision.
type Verdict string

const (
	Allow Verdict = "Allow"
	Deny  Verdict = "Deny"
)

// Options are the node-level settings of the engine.
type Options struct {
	// DefaultVerdict decides traffic of workloads that no tier decided (default Allow).
	DefaultVerdict Verdict
	// Lookups set to Enforce blocks, for every workload whose egress is
	// restricted, lookups that no Allow FQDN rule matches (a policy can also
	// turn this on for its pods).
	Lookups LookupMode
	// ClusterDomain is the cluster DNS domain (default "cluster.local"); names
	// inside it are never blocked by FQDN rules.
	ClusterDomain string
	// SearchDomains are extra suffixes whose names are never blocked by FQDN
	// rules (search-path expansions of the node).
	SearchDomains []string
	// NodeResolvers are the node resolver's addresses (egressd --listen) and
	// NodeProxies the L7 proxies' (--http-proxy, the transparent proxy's
	// listeners): the kernel accepts a pod's TCP and UDP to them before any
	// policy (chain egress_local, rule "node resolver"), so Decide allows
	// them with ReasonNodeResolver and ReasonNodeProxy.
	NodeResolvers, NodeProxies []netip.AddrPort
}

func (o Options) withDefaults() Options {
	if o.DefaultVerdict == "" {
		o.DefaultVerdict = Allow
	}
	if o.Lookups == "" {
		o.Lookups = LookupsObserve
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	return o
}

// Engine is the reference evaluator: the single source of truth for what is
// allowed. Everything that enforces (kernel rules, DNS answers, the L7 proxy)
// must agree with it.
type Engine struct {
	store  *Store
	opts   Options
	exempt []string // ".cluster.local" and search-domain suffixes
	cache  tierCache
	// tunnelCache memoizes TunnelDetection.
	tunnelCache tunnelCache
}

// NewEngine returns an engine evaluating over store.
func NewEngine(store *Store, opts Options) *Engine {
	opts = opts.withDefaults()
	e := &Engine{store: store, opts: opts}
	for _, d := range append([]string{opts.ClusterDomain}, opts.SearchDomains...) {
		if n, err := domain.NormalizeName(d); err == nil && n != "" {
			e.exempt = append(e.exempt, n)
		}
	}
	return e
}

// Store returns the engine's store.
func (e *Engine) Store() *Store { return e.store }

// Options returns the engine's options with defaults applied.
func (e *Engine) Options() Options { return e.opts }

// Connection is the first packet of a connection.
type Connection struct {
	Src, Dst netip.Addr
	Port     int32
	Protocol Protocol
}

// Reason values explain decisions.
const (
	ReasonRule          = "rule"              // a rule decided
	ReasonNotSelected   = "no-policy"         // no tier decided; node default
	ReasonIsolated      = "isolated"          // namespaced policies select it and no rule allows
	ReasonNotWorkload   = "not-a-workload"    // the endpoint is not a known workload
	ReasonSelf          = "self"              // a workload talking to itself is always allowed
	ReasonNodeResolver  = "node-resolver"     // TCP/UDP to the node resolver: accepted by the kernel before any policy
	ReasonNodeProxy     = "node-proxy"        // TCP/UDP to an egressd L7 proxy: accepted by the kernel before any policy
	ReasonClusterDomain = "cluster-domain"    // lookup of a name inside the cluster domain
	ReasonLookupsEnf    = "lookups-enforced"  // lookup not allowed by any FQDN rule
	ReasonInvalidName   = "invalid-name"      // lookup of an invalid name
	ReasonNoFQDNRule    = "no-matching-fqdn"  // lookup allowed: no FQDN rule decided
	ReasonAuditOnly     = "audit-would-block" // reported for Audit-mode policies
)

// Outcome is one verdict and why.
type Outcome struct {
	Verdict Verdict   `json:"verdict"`
	Tier    Tier      `json:"tier,omitempty"`
	Policy  PolicyRef `json:"-"`
	Rule    string    `json:"rule,omitempty"`
	Action  Action    `json:"action,omitempty"`
	Reason  string    `json:"reason"`
}

// DirectionDecision is the verdict of one direction.
type DirectionDecision struct {
	// Applies is false when the endpoint is not a known workload: the
	// direction is then not enforced (allowed).
	Applies  bool
	Workload WorkloadKey
	Outcome
	// Audit is what Audit-mode policies would have decided, when it differs
	// from the enforced verdict.
	Audit *Outcome
}

// Decision is the verdict of a connection: egress at the source, then ingress
// at the destination.
type Decision struct {
	Verdict Verdict
	Egress  DirectionDecision
	Ingress DirectionDecision
}

// Deciding returns the direction that decided: the first that denied, else
// ingress when it applies, else egress.
func (d Decision) Deciding() DirectionDecision {
	switch {
	case d.Egress.Applies && d.Egress.Verdict == Deny:
		return d.Egress
	case d.Ingress.Applies && d.Ingress.Verdict == Deny:
		return d.Ingress
	case d.Ingress.Applies:
		return d.Ingress
	}
	return d.Egress
}

// endpoint is the remote side of a direction.
type endpoint struct {
	ip netip.Addr
	w  *Workload
	ns *Namespace
}

// Decide returns the verdict for a connection and why, evaluating every policy
// directly (no compiled state): it is the reference the dataplane is checked
// against.
func (e *Engine) Decide(c Connection) Decision {
	if c.Protocol == "" {
		c.Protocol = ProtocolTCP
	}
	return e.decide(c, func(src, dst endpoint) DirectionDecision {
		return e.decideDirection(src, Egress, dst, c.Port, c.Protocol)
	})
}

// decide is Decide with the source's egress direction decided by egress
// (Decide, DecideFor); the store is read-locked around it.
func (e *Engine) decide(c Connection, egress func(src, dst endpoint) DirectionDecision) Decision {
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	src := e.endpointLocked(c.Src)
	dst := e.endpointLocked(c.Dst)
	d := Decision{Verdict: Allow}
	if src.w != nil && src.w == dst.w {
		// A workload cannot block access to itself (loopback never reaches the
		// node; Kubernetes NetworkPolicy semantics).
		self := DirectionDecision{Applies: true, Workload: src.w.Key(), Outcome: Outcome{Verdict: Allow, Reason: ReasonSelf}}
		d.Egress, d.Ingress = self, self
		return d
	}
	if reason := e.nodeServiceReason(c); src.w != nil && reason != "" {
		// The kernel accepts these before any policy (egress_local).
		d.Egress = DirectionDecision{Applies: true, Workload: src.w.Key(), Outcome: Outcome{Verdict: Allow, Reason: reason}}
	} else if src.w != nil {
		d.Egress = egress(src, dst)
	} else {
		d.Egress = DirectionDecision{Outcome: Outcome{Verdict: Allow, Reason: ReasonNotWorkload}}
	}
	if dst.w != nil {
		d.Ingress = e.decideDirection(dst, Ingress, src, c.Port, c.Protocol)
	} else {
		d.Ingress = DirectionDecision{Outcome: Outcome{Verdict: Allow, Reason: ReasonNotWorkload}}
	}
	if d.Egress.Verdict == Deny || d.Ingress.Verdict == Deny {
		d.Verdict = Deny
	}
	return d
}

// nodeServiceReason is ReasonNodeResolver or ReasonNodeProxy when c is TCP
// or UDP to one of the node's resolver or proxy addresses; "" otherwise.
func (e *Engine) nodeServiceReason(c Connection) string {
	if c.Protocol != ProtocolTCP && c.Protocol != ProtocolUDP {
		return ""
	}
	dst := netip.AddrPortFrom(c.Dst.Unmap(), uint16(c.Port))
	for _, ap := range e.opts.NodeResolvers {
		if netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) == dst {
			return ReasonNodeResolver
		}
	}
	for _, ap := range e.opts.NodeProxies {
		if netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) == dst {
			return ReasonNodeProxy
		}
	}
	return ""
}

func (e *Engine) endpointLocked(ip netip.Addr) endpoint {
	ip = ip.Unmap()
	ep := endpoint{ip: ip}
	if k, ok := e.store.byIP[ip]; ok {
		ep.w = e.store.workloads[k]
		ep.ns = e.store.namespaceLocked(ep.w.Namespace)
	}
	return ep
}

// tiers groups the enforce-relevant policies selecting a workload.
type tiers struct {
	admin      [][]*compiledPolicy // priority groups in order
	namespaced []*compiledPolicy   // isolating this direction
	baseline   [][]*compiledPolicy
}

// selectingLocked returns the policies selecting w for dir, by tier, in
// evaluation order; audit chooses whether Audit-mode policies take part.
func (e *Engine) selectingLocked(w *Workload, ns *Namespace, dir Direction, audit bool) tiers {
	var t tiers
	var admin, baseline []*compiledPolicy
	di := dirIndex(dir)
	add := func(p *compiledPolicy) {
		if p.audit && !audit || !p.selects(w, ns) {
			return
		}
		switch p.tier {
		case TierAdmin:
			admin = append(admin, p)
		case TierBaseline:
			baseline = append(baseline, p)
		case TierNamespaced:
			if p.isolates[di] {
				t.namespaced = append(t.namespaced, p)
			}
		}
	}
	// The index lists the policies in evaluation order: no sorting here.
	x, delta := e.fqdnIndexLocked()
	for _, p := range x.ordered {
		if !p.retired {
			add(p)
		}
	}
	if len(delta) > 0 {
		// Policies put since the index was built, merged in order.
		baseAdmin, baseBaseline, baseNamespaced := admin, baseline, t.namespaced
		admin, baseline, t.namespaced = nil, nil, nil
		for _, p := range delta {
			if !p.retired {
				add(p)
			}
		}
		admin = mergeOrdered(baseAdmin, admin)
		baseline = mergeOrdered(baseBaseline, baseline)
		t.namespaced = mergeOrdered(baseNamespaced, t.namespaced)
	}
	t.admin = groupSorted(admin)
	t.baseline = groupSorted(baseline)
	return t
}

// mergeOrdered merges extra (in any order) into base (in evaluation order).
func mergeOrdered(base, extra []*compiledPolicy) []*compiledPolicy {
	if len(extra) == 0 {
		return base
	}
	slices.SortFunc(extra, compareEvaluationOrder)
	out := make([]*compiledPolicy, 0, len(base)+len(extra))
	i, j := 0, 0
	for i < len(base) && j < len(extra) {
		if compareEvaluationOrder(base[i], extra[j]) <= 0 {
			out = append(out, base[i])
			i++
		} else {
			out = append(out, extra[j])
			j++
		}
	}
	out = append(out, base[i:]...)
	return append(out, extra[j:]...)
}

// groupSorted groups policies sorted by priority then reference into runs of
// equal priority.
func groupSorted(ps []*compiledPolicy) [][]*compiledPolicy {
	var groups [][]*compiledPolicy
	for i := 0; i < len(ps); {
		j := i + 1
		for j < len(ps) && ps[j].priority == ps[i].priority {
			j++
		}
		groups = append(groups, ps[i:j:j])
		i = j
	}
	return groups
}

// groupByPriority sorts policies by priority then name and groups equal priorities.
func groupByPriority(ps []*compiledPolicy) [][]*compiledPolicy {
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].priority != ps[j].priority {
			return ps[i].priority < ps[j].priority
		}
		return comparePolicyRefs(ps[i].ref, ps[j].ref) < 0
	})
	var groups [][]*compiledPolicy
	for i := 0; i < len(ps); {
		j := i + 1
		for j < len(ps) && ps[j].priority == ps[i].priority {
			j++
		}
		groups = append(groups, ps[i:j])
		i = j
	}
	return groups
}

func (e *Engine) decideDirection(self endpoint, dir Direction, remote endpoint, port int32, proto Protocol) DirectionDecision {
	d := DirectionDecision{Applies: true, Workload: self.w.Key()}
	d.Outcome = e.evaluate(e.tiersLocked(self.w, self.ns, dir, false), self, dir, remote, port, proto)
	if e.hasAuditLocked() {
		would := e.evaluate(e.tiersLocked(self.w, self.ns, dir, true), self, dir, remote, port, proto)
		if would.Verdict != d.Verdict {
			d.Audit = &would
		}
	}
	return d
}

func (e *Engine) hasAuditLocked() bool { return e.store.audits > 0 }

// tiersLocked returns the cached tiers of w for dir. Which policies select a
// workload depends only on the policies, the namespaces and the workload
// itself, so the cache is dropped when policies or namespaces change and an
// entry is dropped when its workload is replaced: pod churn elsewhere does
// not make every workload's next lookup walk every policy again.
func (e *Engine) tiersLocked(w *Workload, ns *Namespace, dir Direction, audit bool) *tiers {
	key := tierKey{w: w.Key(), dir: dir, audit: audit}
	gen := e.store.selGen
	e.cache.mu.Lock()
	// Entries of deleted workloads stay until the next policy change; the
	// bound keeps them from piling up (4 entries per live workload).
	if e.cache.gen != gen || e.cache.m == nil || len(e.cache.m) > 4*len(e.store.workloads)+64 {
		e.cache.gen, e.cache.m = gen, map[tierKey]tierEntry{}
	}
	ent := e.cache.m[key]
	e.cache.mu.Unlock()
	if ent.t != nil && ent.w == w {
		return ent.t
	}
	computed := e.selectingLocked(w, ns, dir, audit)
	t := &computed
	e.cache.mu.Lock()
	if e.cache.gen == gen {
		e.cache.m[key] = tierEntry{w: w, t: t}
	}
	e.cache.mu.Unlock()
	return t
}

type tierKey struct {
	w     WorkloadKey
	dir   Direction
	audit bool
}

// tierEntry is the tiers computed for one version of a workload (the store
// replaces the *Workload on every change).
type tierEntry struct {
	w *Workload
	t *tiers
}

// tierCache memoizes which policies select a workload, per generation of
// the store's policies and namespaces.
type tierCache struct {
	mu  sync.Mutex
	gen uint64
	m   map[tierKey]tierEntry
}

// ruleFinder returns the first rule of p (for direction dir) that matches and,
// when action is set, has that action; nil when none.
type ruleFinder func(p *compiledPolicy, action Action) *compiledRule

// linearFinder scans rules in order with a match predicate.
func linearFinder(dir Direction, match func(*compiledRule) bool) ruleFinder {
	di := dirIndex(dir)
	return func(p *compiledPolicy, action Action) *compiledRule {
		for _, r := range p.rules[di] {
			if (action == "" || r.action == action) && match(r) {
				return r
			}
		}
		return nil
	}
}

// evaluate runs the tier pipeline for one direction.
func (e *Engine) evaluate(t *tiers, self endpoint, dir Direction, remote endpoint, port int32, proto Protocol) Outcome {
	return e.evaluateWith(t, linearFinder(dir, func(r *compiledRule) bool { return e.ruleMatches(r, self, remote, port, proto) }))
}

// evaluateWith runs the tier pipeline with find (DecideFor, l7.go, matches
// FQDN peers by one name).
func (e *Engine) evaluateWith(t *tiers, find ruleFinder) Outcome {
	if out, decided, pass := firstMatchTier(t.admin, TierAdmin, find, ""); decided && !pass {
		return out
	}
	// Admin passed or did not decide.
	if len(t.namespaced) > 0 {
		return namespacedTier(t.namespaced, find)
	}
	if out, decided, pass := firstMatchTier(t.baseline, TierBaseline, find, e.opts.DefaultVerdict); decided {
		if pass {
			return e.baselinePass(out)
		}
		return out
	}
	return Outcome{Verdict: e.opts.DefaultVerdict, Tier: TierDefault, Reason: ReasonNotSelected}
}

// baselinePass is the outcome of a Pass rule of the Baseline tier (a
// ClusterNetworkPolicy's): the rest of the tier is skipped and the node
// default decides; the outcome names the rule that passed.
func (e *Engine) baselinePass(out Outcome) Outcome {
	out.Verdict = e.opts.DefaultVerdict
	return out
}

// firstMatchTier evaluates priority groups: in each policy the first matching
// rule counts; in a group, Deny beats Allow beats Pass. It reports whether a
// group decided and whether the decision is Pass. passAs is set for the
// Baseline tier, where a Pass (a ClusterNetworkPolicy's) hands the decision
// to the node default: in a group it ranks as that verdict's action.
func firstMatchTier(groups [][]*compiledPolicy, tier Tier, find ruleFinder, passAs Verdict) (Outcome, bool, bool) {
	for _, g := range groups {
		var best *compiledRule
		for _, p := range g {
			if r := find(p, ""); r != nil && (best == nil || rankIn(r.action, passAs) > rankIn(best.action, passAs)) {
				best = r
			}
		}
		if best != nil {
			o := Outcome{Verdict: Allow, Tier: tier, Policy: best.policy.ref, Rule: best.name, Action: best.action, Reason: ReasonRule}
			if best.action == ActionDeny {
				o.Verdict = Deny
			}
			return o, true, best.action == ActionPass
		}
	}
	return Outcome{}, false, false
}

// rankIn is actionRank with Pass ranked as the action of passAs when set
// (the Baseline tier).
func rankIn(a Action, passAs Verdict) int {
	if a == ActionPass && passAs != "" {
		if passAs == Deny {
			return actionRank(ActionDeny)
		}
		return actionRank(ActionAllow)
	}
	return actionRank(a)
}

func actionRank(a Action) int {
	switch a {
	case ActionDeny:
		return 3
	case ActionAllow:
		return 2
	}
	return 1
}

// namespacedTier: deny beats allow; isolated without an allow is denied.
func namespacedTier(ps []*compiledPolicy, find ruleFinder) Outcome {
	for _, p := range ps {
		if r := find(p, ActionDeny); r != nil {
			return Outcome{Verdict: Deny, Tier: TierNamespaced, Policy: p.ref, Rule: r.name, Action: ActionDeny, Reason: ReasonRule}
		}
	}
	for _, p := range ps {
		if r := find(p, ActionAllow); r != nil {
			return Outcome{Verdict: Allow, Tier: TierNamespaced, Policy: p.ref, Rule: r.name, Action: ActionAllow, Reason: ReasonRule}
		}
	}
	return Outcome{Verdict: Deny, Tier: TierNamespaced, Policy: ps[0].ref, Reason: ReasonIsolated}
}

// ruleMatches reports whether rule r (of a policy selecting self) matches the
// remote endpoint and the destination port.
func (e *Engine) ruleMatches(r *compiledRule, self endpoint, remote endpoint, port int32, proto Protocol) bool {
	dst := remote
	if r.direction == Ingress {
		dst = self
	}
	if !r.anyPort {
		ok := false
		for _, p := range r.ports {
			if portMatches(p, dst.w, port, proto) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.anyPeer {
		return true
	}
	for i := range r.peers {
		if e.peerMatches(&r.peers[i], self, remote) {
			return true
		}
		if r.action == ActionDeny && r.direction == Egress && e.store.denyResolved.matches(&r.peers[i], remote.ip) { // denynames.go
			return true
		}
	}
	return false
}

func portMatches(p compiledPort, dst *Workload, port int32, proto Protocol) bool {
	if p.protocol != proto {
		return false
	}
	switch {
	case p.all:
		return true
	case p.name != "":
		if dst == nil {
			return false
		}
		n, ok := dst.namedPort(p.name, proto)
		return ok && n == port
	}
	return port >= p.first && port <= p.last
}

func (e *Engine) peerMatches(p *compiledPeer, self, remote endpoint) bool {
	switch p.kind {
	case peerPods, peerNamespaces:
		return remote.w != nil && p.matchesWorkload(remote.w, remote.ns)
	case peerCIDR:
		return p.matchesIP(remote.ip)
	case peerNodes:
		n := e.store.nodeLocked(remote.ip)
		return n != nil && p.nodeSel.Matches(labels.Set(n.Labels))
	case peerFQDN:
		for name := range e.store.resolved[self.w.Key()][remote.ip] {
			if p.pattern.Match(name) {
				return true
			}
		}
	}
	return false
}

// LookupDecision is the verdict on a DNS lookup.
type LookupDecision struct {
	Outcome
	Workload WorkloadKey
	// Name is the normalized query name.
	Name string
	// Audit is what Audit-mode policies would have decided, when it differs.
	Audit *Outcome
	// Via is the name of the answer's alias chain whose Deny rule decided
	// (DecideChain); empty when the question name decided. AuditVia is the
	// same for Audit.
	Via, AuditVia string
}

// Blocked reports whether the lookup must be refused.
func (d LookupDecision) Blocked() bool { return d.Verdict == Deny }

// DecideLookup decides whether workload w may resolve qname: evaluated with the
// tiers over the FQDN peers of egress rules (docs/design.md §3). Names inside the
// cluster domain or a search domain are never blocked by FQDN rules. The rules
// are found through an index of every policy's patterns: the cost does not
// grow with the number of policies, and DecideLookup does not allocate (for a
// name already in canonical form).
func (e *Engine) DecideLookup(w WorkloadKey, qname string) LookupDecision {
	d, _ := e.decideLookup(w, qname, nil, false)
	return d
}

// DecideLookupRules is DecideLookup and FQDNRules in one walk of the index: it
// returns the decision and dst with the FQDN rules appended (the rules are
// appended whatever the verdict; a blocked lookup programs nothing). With a
// dst of sufficient capacity it does not allocate. It is meant for the
// resolver's hot path and for deciding every name of a CNAME chain.
func (e *Engine) DecideLookupRules(w WorkloadKey, qname string, dst []RuleRef) (LookupDecision, []RuleRef) {
	return e.decideLookup(w, qname, dst, true)
}

func (e *Engine) decideLookup(w WorkloadKey, qname string, dst []RuleRef, withRules bool) (LookupDecision, []RuleRef) {
	name, err := domain.NormalizeName(qname)
	if err != nil {
		return LookupDecision{Workload: w, Name: qname, Outcome: Outcome{Verdict: Deny, Reason: ReasonInvalidName}}, dst
	}
	d := LookupDecision{Workload: w, Name: name}
	exempt := e.exemptName(name)
	if exempt && !withRules {
		d.Outcome = Outcome{Verdict: Allow, Reason: ReasonClusterDomain}
		return d, dst
	}
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	wl := s.workloads[w]
	if wl == nil {
		d.Outcome = Outcome{Verdict: Allow, Tier: TierDefault, Reason: ReasonNotWorkload}
		if exempt {
			d.Outcome = Outcome{Verdict: Allow, Reason: ReasonClusterDomain}
		}
		return d, dst
	}
	ns := s.namespaceLocked(wl.Namespace)
	sc := getScratch()
	defer putScratch(sc)
	e.matchLocked(sc, name)
	t := e.tiersLocked(wl, ns, Egress, false)
	sc.hits = placeHits(sc.hits, t, sc.refs)
	if withRules {
		dst = appendRuleRefs(dst, sc.hits)
	}
	if exempt {
		d.Outcome = Outcome{Verdict: Allow, Reason: ReasonClusterDomain}
		return d, dst
	}
	d.Outcome = e.evaluateHits(t, sc.hits)
	if e.hasAuditLocked() {
		at := e.tiersLocked(wl, ns, Egress, true)
		sc.hits = placeHits(sc.hits, at, sc.refs)
		would := e.evaluateHits(at, sc.hits)
		if would.Verdict != d.Verdict {
			d.Audit = &would
		}
	}
	return d, dst
}

// DecideLookupFrom decides a lookup by the client's address.
func (e *Engine) DecideLookupFrom(client netip.Addr, qname string) LookupDecision {
	k, _ := e.store.WorkloadByIP(client)
	return e.DecideLookup(k, qname)
}

func (e *Engine) exemptName(name string) bool {
	for _, sfx := range e.exempt {
		if name == sfx || strings.HasSuffix(name, "."+sfx) {
			return true
		}
	}
	return false
}

// FQDNRules returns the enforced FQDN rules of the policies selecting w whose
// patterns match qname: the rules whose kernel sets the resolver fills with the
// answer's addresses.
func (e *Engine) FQDNRules(w WorkloadKey, qname string) []RuleRef {
	return e.AppendFQDNRules(nil, w, qname)
}

// AppendFQDNRules is FQDNRules appending to dst: with a dst of sufficient
// capacity it does not allocate.
func (e *Engine) AppendFQDNRules(dst []RuleRef, w WorkloadKey, qname string) []RuleRef {
	name, err := domain.NormalizeName(qname)
	if err != nil {
		return dst
	}
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	wl := s.workloads[w]
	if wl == nil {
		return dst
	}
	sc := getScratch()
	defer putScratch(sc)
	e.matchLocked(sc, name)
	sc.hits = placeHits(sc.hits, e.tiersLocked(wl, s.namespaceLocked(wl.Namespace), Egress, false), sc.refs)
	return appendRuleRefs(dst, sc.hits)
}

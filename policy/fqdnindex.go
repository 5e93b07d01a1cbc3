package policy

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/egressd/egressd/policy/domain"
)

// The FQDN index: one domain.Set holding the FQDN patterns of the egress
// rules of every policy, built once per change of the store's policies. A
// lookup walks it once: the cost depends on the patterns that match the name,
// not on how many policies or patterns there are. The matches are then placed
// in the workload's cached tiers (a binary search each) and the tier pipeline
// runs over them only. The result is the same as evaluating every selecting
// policy's rules in order (see the oracle in fqdnindex_oracle_test.go).

// fqdnRef is one FQDN rule: egress rule number rule of policy p.
type fqdnRef struct {
	p    *compiledPolicy
	rule int32
}

// fqdnIndex is the index of the store's policies as of one moment; the
// policies put one at a time since (Store.putPolicy) are in the store's delta
// list, and policies replaced or deleted since are still in it, marked
// retired (placement in a workload's tiers, which are computed from the
// current policies, drops their matches; selectingLocked skips them).
type fqdnIndex struct {
	// gen is the store's fqdn.gen it was built for; seq is the delta
	// sequence number it covers (delta entries from seq on are newer).
	gen, seq uint64
	set      *domain.Set[fqdnRef]
	// ordered lists every policy in evaluation order: by tier, then priority
	// (Admin, Baseline) and reference, so that selecting a workload's
	// policies is one pass without sorting.
	ordered []*compiledPolicy
}

// maxFQDNDelta is how many policies put one at a time a lookup matches
// outside the index (pattern by pattern, at most a few microseconds) before
// the first lookup rebuilds it: in cluster mode policies change one by one,
// and a rebuild at 10,000 policies costs tens of milliseconds.
const maxFQDNDelta = 32

// fqdnIndexCache holds the current index of a Store. ApplyPolicies builds the
// next one before it takes the store's lock, so a large reload does not stall
// lookups; single policies put since the index was built are matched from
// delta until there are more than maxFQDNDelta, then the first lookup
// rebuilds it.
type fqdnIndexCache struct {
	mu  sync.Mutex // serializes builds
	cur atomic.Pointer[fqdnIndex]
	// gen is bumped by every batch (ApplyPolicies): an index of another gen
	// is not used. Guarded by the store's lock.
	gen uint64
	// delta are the policies put one at a time; delta[i] has sequence
	// number base+i. Written under the store's write lock, read under its
	// read lock.
	delta []*compiledPolicy
	base  uint64
	// maxDelta overrides maxFQDNDelta when positive (tests).
	maxDelta int
}

// notePutLocked records a policy put one at a time (the store is
// write-locked): it joins the delta of the current index.
func (c *fqdnIndexCache) notePutLocked(cp *compiledPolicy) {
	if x := c.cur.Load(); x != nil && x.gen == c.gen {
		// Drop what the current index covers.
		if drop := int(x.seq - c.base); drop > 0 {
			c.delta = append(c.delta[:0:0], c.delta[drop:]...)
			c.base = x.seq
		}
	} else {
		// No usable index: the next lookup builds one from the policies.
		c.base += uint64(len(c.delta))
		c.delta = nil
	}
	c.delta = append(c.delta, cp)
}

// fqdnIndexLocked returns the index of the store's policies and the policies
// put since it was built (the store is read-locked), building the index when
// there is none, a batch changed the policies, or the delta is too long.
func (e *Engine) fqdnIndexLocked() (*fqdnIndex, []*compiledPolicy) {
	s := e.store
	c := &s.fqdn
	limit := maxFQDNDelta
	if c.maxDelta > 0 {
		limit = c.maxDelta
	}
	usable := func(x *fqdnIndex) bool {
		return x != nil && x.gen == c.gen && c.base+uint64(len(c.delta))-x.seq <= uint64(limit)
	}
	x := c.cur.Load()
	if !usable(x) {
		c.mu.Lock()
		if x = c.cur.Load(); !usable(x) {
			x = buildFQDNIndex(s.policies, c.gen)
			x.seq = c.base + uint64(len(c.delta))
			c.cur.Store(x)
		}
		c.mu.Unlock()
	}
	return x, c.delta[x.seq-c.base:]
}

// buildFQDNIndex indexes the FQDN peers of the egress rules of policies.
func buildFQDNIndex(policies map[PolicyRef]*compiledPolicy, gen uint64) *fqdnIndex {
	var b domain.Builder[fqdnRef]
	for _, p := range policies {
		for i, r := range p.rules[dirIndex(Egress)] {
			if !r.hasFQDN {
				continue
			}
			for j := range r.peers {
				if r.peers[j].kind == peerFQDN {
					b.Add(r.peers[j].pattern, fqdnRef{p: p, rule: int32(i)})
				}
			}
		}
	}
	ordered := make([]*compiledPolicy, 0, len(policies))
	for _, p := range policies {
		ordered = append(ordered, p)
	}
	slices.SortFunc(ordered, compareEvaluationOrder)
	return &fqdnIndex{gen: gen, set: b.Build(), ordered: ordered}
}

// compareEvaluationOrder orders policies by tier, then priority (Admin,
// Baseline) and reference.
func compareEvaluationOrder(a, b *compiledPolicy) int {
	if a.tier != b.tier {
		return strings.Compare(string(a.tier), string(b.tier))
	}
	if a.tier != TierNamespaced && a.priority != b.priority {
		return int(a.priority) - int(b.priority)
	}
	return comparePolicyRefs(a.ref, b.ref)
}

// Tier order of the matches (tiers are evaluated in this order).
const (
	slotAdmin = iota
	slotNamespaced
	slotBaseline
)

// lookupHit is a matching FQDN rule placed in a workload's tiers.
type lookupHit struct {
	tier  uint8 // slotAdmin, slotNamespaced or slotBaseline
	group int32 // priority group (Admin, Baseline)
	pos   int32 // position in the group, or in the namespaced list
	rule  int32 // egress rule number in the policy
	p     *compiledPolicy
}

func compareHits(a, b lookupHit) int {
	switch {
	case a.tier != b.tier:
		return int(a.tier) - int(b.tier)
	case a.group != b.group:
		return int(a.group - b.group)
	case a.pos != b.pos:
		return int(a.pos - b.pos)
	}
	return int(a.rule - b.rule)
}

// lookupScratch is the per-lookup working memory, pooled so that lookups do
// not allocate.
type lookupScratch struct {
	refs []fqdnRef
	hits []lookupHit
}

// maxPooledScratch bounds what a pooled scratch keeps (a name matching
// thousands of patterns must not pin the memory forever).
const maxPooledScratch = 1024

var scratchPool = sync.Pool{New: func() any { return new(lookupScratch) }}

func getScratch() *lookupScratch { return scratchPool.Get().(*lookupScratch) }

func putScratch(sc *lookupScratch) {
	if cap(sc.refs) > maxPooledScratch || cap(sc.hits) > maxPooledScratch {
		return
	}
	sc.refs, sc.hits = sc.refs[:0], sc.hits[:0]
	scratchPool.Put(sc)
}

// matchLocked appends to sc.refs every FQDN rule with a pattern matching the
// normalized name (a rule with several matching patterns appears once per
// pattern).
func (e *Engine) matchLocked(sc *lookupScratch, name string) {
	x, delta := e.fqdnIndexLocked()
	sc.refs = x.set.AppendValues(sc.refs[:0], name)
	for _, p := range delta {
		for i, r := range p.rules[dirIndex(Egress)] {
			if !r.hasFQDN {
				continue
			}
			for j := range r.peers {
				if r.peers[j].kind == peerFQDN && r.peers[j].pattern.Match(name) {
					sc.refs = append(sc.refs, fqdnRef{p: p, rule: int32(i)})
				}
			}
		}
	}
}

// place returns where p sits in t, or false when t does not hold p (the
// policy does not select the workload, is not enforced in this view, or is a
// namespaced policy that does not isolate egress).
func (t *tiers) place(p *compiledPolicy) (tier uint8, group, pos int32, ok bool) {
	switch p.tier {
	case TierAdmin:
		g, k, ok := placeInGroups(t.admin, p)
		return slotAdmin, g, k, ok
	case TierBaseline:
		g, k, ok := placeInGroups(t.baseline, p)
		return slotBaseline, g, k, ok
	case TierNamespaced:
		k, ok := placeByRef(t.namespaced, p)
		return slotNamespaced, 0, k, ok
	}
	return 0, 0, 0, false
}

// placeInGroups finds p in priority groups sorted by priority (groupByPriority).
func placeInGroups(groups [][]*compiledPolicy, p *compiledPolicy) (int32, int32, bool) {
	g := sort.Search(len(groups), func(i int) bool { return groups[i][0].priority >= p.priority })
	if g == len(groups) || groups[g][0].priority != p.priority {
		return 0, 0, false
	}
	k, ok := placeByRef(groups[g], p)
	return int32(g), k, ok
}

// placeByRef finds p in policies sorted by reference.
func placeByRef(ps []*compiledPolicy, p *compiledPolicy) (int32, bool) {
	k := sort.Search(len(ps), func(i int) bool { return comparePolicyRefs(ps[i].ref, p.ref) >= 0 })
	if k == len(ps) || ps[k] != p {
		return 0, false
	}
	return int32(k), true
}

// placeHits places the matched rules in t and sorts them in evaluation order.
func placeHits(hits []lookupHit, t *tiers, refs []fqdnRef) []lookupHit {
	hits = hits[:0]
	for _, r := range refs {
		if tier, g, k, ok := t.place(r.p); ok {
			hits = append(hits, lookupHit{tier: tier, group: g, pos: k, rule: r.rule, p: r.p})
		}
	}
	slices.SortFunc(hits, compareHits)
	return slices.CompactFunc(hits, func(a, b lookupHit) bool { return compareHits(a, b) == 0 })
}

// evaluateHits is evaluateLookup over the placed, sorted matches: the same
// tier pipeline (firstMatchTier, namespacedTier, lookups enforcement) without
// visiting the policies that no pattern of which matched.
func (e *Engine) evaluateHits(t *tiers, hits []lookupHit) Outcome {
	i := 0
	if i < len(hits) && hits[i].tier == slotAdmin {
		out, pass, next := firstMatchHits(hits, i, TierAdmin)
		if !pass {
			return out
		}
		i = next
	}
	for i < len(hits) && hits[i].tier == slotAdmin {
		i++
	}
	if len(t.namespaced) > 0 {
		j := i
		for ; j < len(hits) && hits[j].tier == slotNamespaced; j++ {
		}
		ns := hits[i:j]
		for _, action := range []Action{ActionDeny, ActionAllow} {
			// Sorted by (position, rule): the first hit with the action is the
			// first policy having such a rule, and its first such rule.
			for _, h := range ns {
				if r := h.p.rules[dirIndex(Egress)][h.rule]; r.action == action {
					o := Outcome{Verdict: Allow, Tier: TierNamespaced, Policy: h.p.ref, Rule: r.name, Action: action, Reason: ReasonRule}
					if action == ActionDeny {
						o.Verdict = Deny
					}
					return o
				}
			}
		}
		enforce := e.opts.Lookups == LookupsEnforce
		policy := t.namespaced[0].ref
		for _, p := range t.namespaced {
			if p.lookups == LookupsEnforce {
				enforce = true
				policy = p.ref
				break
			}
		}
		if enforce {
			return Outcome{Verdict: Deny, Tier: TierNamespaced, Policy: policy, Reason: ReasonLookupsEnf}
		}
		return Outcome{Verdict: Allow, Tier: TierNamespaced, Reason: ReasonNoFQDNRule}
	}
	for i < len(hits) && hits[i].tier != slotBaseline {
		i++
	}
	if i < len(hits) {
		out, _, _ := firstMatchHits(hits, i, TierBaseline)
		return out
	}
	if e.opts.Lookups == LookupsEnforce && e.opts.DefaultVerdict == Deny {
		return Outcome{Verdict: Deny, Tier: TierDefault, Reason: ReasonLookupsEnf}
	}
	return Outcome{Verdict: Allow, Tier: TierDefault, Reason: ReasonNoFQDNRule}
}

// firstMatchHits is firstMatchTier over the hits of one tier starting at i:
// the first priority group with a hit decides; in it, each policy's first
// matching rule counts and Deny beats Allow beats Pass, the earlier policy
// winning ties. It returns the outcome, whether it is Pass, and the index
// after the group.
func firstMatchHits(hits []lookupHit, i int, tier Tier) (Outcome, bool, int) {
	tierSlot, group := hits[i].tier, hits[i].group
	var best *compiledRule
	for ; i < len(hits) && hits[i].tier == tierSlot && hits[i].group == group; i++ {
		if i > 0 && hits[i-1].tier == tierSlot && hits[i-1].group == group && hits[i-1].pos == hits[i].pos {
			continue // not this policy's first matching rule
		}
		r := hits[i].p.rules[dirIndex(Egress)][hits[i].rule]
		if best == nil || actionRank(r.action) > actionRank(best.action) {
			best = r
		}
	}
	o := Outcome{Verdict: Allow, Tier: tier, Policy: best.policy.ref, Rule: best.name, Action: best.action, Reason: ReasonRule}
	if best.action == ActionDeny {
		o.Verdict = Deny
	}
	return o, best.action == ActionPass, i
}

// appendRuleRefs appends the distinct rules of the sorted hits to dst and
// sorts what it appended as FQDNRules does (by RuleRef.String, without
// building the strings).
func appendRuleRefs(dst []RuleRef, hits []lookupHit) []RuleRef {
	start := len(dst)
	for i, h := range hits {
		if i > 0 && hits[i-1].p == h.p && hits[i-1].rule == h.rule {
			continue
		}
		dst = append(dst, h.p.rules[dirIndex(Egress)][h.rule].ref())
	}
	slices.SortFunc(dst[start:], compareRuleRefs)
	return dst
}

package policy

import (
	"sort"

	"github.com/egressd/egressd/policy/domain"
)

// This file keeps the lookup evaluation as it was before the FQDN index
// (commit 8ff4d7d): every policy selecting the workload is visited, its rules
// in order, and FQDN peers are matched one pattern at a time with
// Pattern.Match. The index must agree with it on every input
// (TestFQDNIndexMatchesOracle); it is exported to the external tests only.

// OracleDecideLookup is DecideLookup evaluated by visiting every policy,
// without the FQDN index or the tier cache.
func (e *Engine) OracleDecideLookup(w WorkloadKey, qname string) LookupDecision {
	name, err := domain.NormalizeName(qname)
	if err != nil {
		return LookupDecision{Workload: w, Name: qname, Outcome: Outcome{Verdict: Deny, Reason: ReasonInvalidName}}
	}
	d := LookupDecision{Workload: w, Name: name}
	if e.exemptName(name) {
		d.Outcome = Outcome{Verdict: Allow, Reason: ReasonClusterDomain}
		return d
	}
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	wl := s.workloads[w]
	if wl == nil {
		d.Outcome = Outcome{Verdict: Allow, Tier: TierDefault, Reason: ReasonNotWorkload}
		return d
	}
	ns := s.namespaceLocked(wl.Namespace)
	enforced := e.oracleSelectingLocked(wl, ns, Egress, false)
	d.Outcome = e.oracleEvaluateLookup(&enforced, name)
	if e.hasAuditLocked() {
		audit := e.oracleSelectingLocked(wl, ns, Egress, true)
		would := e.oracleEvaluateLookup(&audit, name)
		if would.Verdict != d.Verdict {
			d.Audit = &would
		}
	}
	return d
}

// oracleLookupFinder finds the first egress rule of a policy (with the action,
// when set) one of whose FQDN peers matches name.
func oracleLookupFinder(name string) ruleFinder {
	return func(p *compiledPolicy, action Action) *compiledRule {
		for _, r := range p.rules[dirIndex(Egress)] {
			if action != "" && r.action != action {
				continue
			}
			for i := range r.peers {
				if r.peers[i].kind == peerFQDN && r.peers[i].pattern.Match(name) {
					return r
				}
			}
		}
		return nil
	}
}

func (e *Engine) oracleEvaluateLookup(t *tiers, name string) Outcome {
	find := oracleLookupFinder(name)
	if out, decided, pass := firstMatchTier(t.admin, TierAdmin, find, ""); decided && !pass {
		return out
	}
	if len(t.namespaced) > 0 {
		o := namespacedTier(t.namespaced, find)
		if o.Reason == ReasonRule {
			return o
		}
		enforce := e.opts.Lookups == LookupsEnforce
		for _, p := range t.namespaced {
			if p.lookups == LookupsEnforce {
				enforce = true
				o.Policy = p.ref
				break
			}
		}
		if enforce {
			return Outcome{Verdict: Deny, Tier: TierNamespaced, Policy: o.Policy, Reason: ReasonLookupsEnf}
		}
		return Outcome{Verdict: Allow, Tier: TierNamespaced, Reason: ReasonNoFQDNRule}
	}
	if out, decided, _ := firstMatchTier(t.baseline, TierBaseline, find, e.opts.DefaultVerdict); decided {
		return out
	}
	if e.opts.Lookups == LookupsEnforce && e.opts.DefaultVerdict == Deny {
		return Outcome{Verdict: Deny, Tier: TierDefault, Reason: ReasonLookupsEnf}
	}
	return Outcome{Verdict: Allow, Tier: TierDefault, Reason: ReasonNoFQDNRule}
}

// OracleFQDNRules is FQDNRules computed by visiting every policy.
func (e *Engine) OracleFQDNRules(w WorkloadKey, qname string) []RuleRef {
	name, err := domain.NormalizeName(qname)
	if err != nil {
		return nil
	}
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	wl := s.workloads[w]
	if wl == nil {
		return nil
	}
	ns := s.namespaceLocked(wl.Namespace)
	var out []RuleRef
	for _, p := range s.policies {
		if p.audit || !p.selects(wl, ns) {
			continue
		}
		if p.tier == TierNamespaced && !p.isolates[dirIndex(Egress)] {
			continue
		}
		for _, r := range p.rules[dirIndex(Egress)] {
			for i := range r.peers {
				if r.peers[i].kind == peerFQDN && r.peers[i].pattern.Match(name) {
					out = append(out, r.ref())
					break
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// oracleSelectingLocked is selectingLocked as it was: every policy visited in
// map order, then the tiers sorted.
func (e *Engine) oracleSelectingLocked(w *Workload, ns *Namespace, dir Direction, audit bool) tiers {
	var t tiers
	var admin, baseline []*compiledPolicy
	di := dirIndex(dir)
	for _, p := range e.store.policies {
		if p.audit && !audit {
			continue
		}
		if !p.selects(w, ns) {
			continue
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
	t.admin = groupByPriority(admin)
	t.baseline = groupByPriority(baseline)
	sort.Slice(t.namespaced, func(i, j int) bool { return comparePolicyRefs(t.namespaced[i].ref, t.namespaced[j].ref) < 0 })
	return t
}

// SetFQDNDeltaLimit sets how many single puts the FQDN index takes outside it
// before a rebuild (tests exercise both sides of the limit).
func (s *Store) SetFQDNDeltaLimit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fqdn.maxDelta = n
}

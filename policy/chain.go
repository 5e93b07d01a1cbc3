package policy

import "github.com/egressd/egressd/policy/domain"

// DecideChain extends the decision d on a lookup (DecideLookup of the
// question name) to the other names of the answer's alias chain (CNAME
// targets, DNAME owners, targets and substituted names; see
// dnsproxy/chain): each link is evaluated through the tiers like a question
// name, and a link that a Deny rule decides blocks the whole lookup — deny
// wins, whatever allowed the question. The returned decision then carries
// the link's Outcome and Via = the link. Only a Deny rule blocks a link: a
// link that no rule matches (reason lookups-enforced, isolated or the node
// default) does not, because the pod did not ask for it (allowing
// api.example.com must not require allowing the CDN name it aliases). Links
// inside the cluster domain or a search domain are never blocked, as
// question names are not. An invalid link name blocks (ReasonInvalidName).
//
// Audit: when d has no Audit verdict of its own and a link would be denied
// by a Deny rule with Audit-mode policies enforced, the returned decision
// carries that Audit outcome and AuditVia = the link.
//
// A blocked d is returned unchanged.
func (e *Engine) DecideChain(d LookupDecision, links []string) LookupDecision {
	if d.Blocked() || len(links) == 0 {
		return d
	}
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	wl := s.workloads[d.Workload]
	if wl == nil {
		return d
	}
	ns := s.namespaceLocked(wl.Namespace)
	enforced := e.tiersLocked(wl, ns, Egress, false)
	var audit *tiers
	if d.Audit == nil && e.hasAuditLocked() {
		audit = e.tiersLocked(wl, ns, Egress, true)
	}
	sc := getScratch()
	defer putScratch(sc)
	for _, link := range links {
		name, err := domain.NormalizeName(link)
		if err != nil {
			d.Outcome = Outcome{Verdict: Deny, Reason: ReasonInvalidName}
			d.Via = link
			return d
		}
		if name == d.Name || e.exemptName(name) {
			continue
		}
		e.matchLocked(sc, name)
		sc.hits = placeHits(sc.hits, enforced, sc.refs)
		if o := e.evaluateHits(enforced, sc.hits); chainDenies(o) {
			d.Outcome, d.Via = o, name
			return d
		}
		if audit != nil && d.Audit == nil {
			sc.hits = placeHits(sc.hits, audit, sc.refs)
			if o := e.evaluateHits(audit, sc.hits); chainDenies(o) {
				d.Audit, d.AuditVia = &o, name
			}
		}
	}
	return d
}

// chainDenies reports whether an outcome on a chain link blocks the lookup:
// a Deny rule decided it.
func chainDenies(o Outcome) bool {
	return o.Verdict == Deny && o.Reason == ReasonRule
}

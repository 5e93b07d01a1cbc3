package policy

import "github.com/egressd/egressd/policy/domain"

// DecideFor decides connection c as if the source workload had resolved only
// name to c.Dst: in the source's egress direction an FQDN peer matches the
// destination exactly when its pattern matches name (the names the workload
// really resolved to the address are ignored); CIDR, pods, namespaces and
// peerless rules match as in Decide. An empty name matches no FQDN peer (a
// connection to an address literal). The ingress direction is decided as in
// Decide.
//
// This is the question the L7 proxy asks (egress/l7): is this name allowed to
// reach this address? Decide cannot answer it when several names share the
// address, because its deciding rule may be another name's rule. An invalid
// name is denied with ReasonInvalidName.
func (e *Engine) DecideFor(c Connection, name string) Decision {
	if c.Protocol == "" {
		c.Protocol = ProtocolTCP
	}
	if name != "" {
		n, err := domain.NormalizeName(name)
		if err != nil || n == "" {
			k, _ := e.store.WorkloadByIP(c.Src)
			out := Outcome{Verdict: Deny, Reason: ReasonInvalidName}
			return Decision{Verdict: Deny, Egress: DirectionDecision{Applies: true, Workload: k, Outcome: out}}
		}
		name = n
	}
	return e.decide(c, func(src, dst endpoint) DirectionDecision {
		return e.decideEgressFor(src, dst, c.Port, c.Protocol, name)
	})
}

// decideEgressFor is decideDirection for the egress of self with FQDN peers
// matched against name only.
func (e *Engine) decideEgressFor(self, remote endpoint, port int32, proto Protocol, name string) DirectionDecision {
	find := linearFinder(Egress, func(r *compiledRule) bool { return e.ruleMatchesFor(r, self, remote, port, proto, name) })
	d := DirectionDecision{Applies: true, Workload: self.w.Key()}
	d.Outcome = e.evaluateWith(e.tiersLocked(self.w, self.ns, Egress, false), find)
	if e.hasAuditLocked() {
		would := e.evaluateWith(e.tiersLocked(self.w, self.ns, Egress, true), find)
		if would.Verdict != d.Verdict {
			d.Audit = &would
		}
	}
	return d
}

// ruleMatchesFor is ruleMatches for an egress rule, with FQDN peers matching
// the remote address only through name.
func (e *Engine) ruleMatchesFor(r *compiledRule, self, remote endpoint, port int32, proto Protocol, name string) bool {
	if !r.hasFQDN {
		return e.ruleMatches(r, self, remote, port, proto)
	}
	if !r.anyPort {
		ok := false
		for _, p := range r.ports {
			if portMatches(p, remote.w, port, proto) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for i := range r.peers {
		p := &r.peers[i]
		if p.kind == peerFQDN {
			if name != "" && p.pattern.Match(name) {
				return true
			}
		} else if e.peerMatches(p, self, remote) {
			return true
		}
	}
	return false
}

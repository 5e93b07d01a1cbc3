package dnsproxy

import (
	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"
	"github.com/egressd/egressd/policy"
)

// lookup is what the policy said about one query: made by decideLookup,
// extended by decideChain once the answer is known, and carried to the
// programming of the answer (program, fastProgram) and its report. The name
// is normalised once, by the engine (decision.Name), and carried from there.
type lookup struct {
	// wl is the client's workload; nil: served without policy (no engine,
	// or a source ServeUnknown lets through): nothing is decided or written.
	wl *policy.Workload
	// decision is the engine's decision on the question and, after
	// decideChain, on the answer's alias chain.
	decision policy.LookupDecision
	// rules are the FQDN rules whose sets receive the answer's addresses.
	rules []policy.RuleRef
	// links are the answer's alias chain links (chain.Of), tracked with the
	// addresses so that Restore decides them again.
	links []string
}

// decideLookup decides the lookup of qname by workload wl and finds the FQDN
// rules whose sets its answer fills, in one walk of the policy index
// (Engine.DecideLookupRules).
func (srv *Server) decideLookup(wl *policy.Workload, qname string) lookup {
	d, rules := srv.deps.Engine.DecideLookupRules(wl.Key(), qname, nil)
	return lookup{wl: wl, decision: d, rules: rules}
}

// decideChain extends the decision to every other name of the answer's alias
// chain (CNAME targets, DNAME owners and targets, substituted names:
// Engine.DecideChain): a link that a Deny rule matches blocks the lookup.
// Answers without a CNAME or DNAME do no chain work.
func (srv *Server) decideChain(lk *lookup, answer *dns.Msg) {
	if lk.wl == nil || lk.decision.Blocked() || !chain.HasAlias(answer.Answer) {
		return
	}
	if lk.links = chain.Of(answer).Links; len(lk.links) > 0 {
		lk.decision = srv.deps.Engine.DecideChain(lk.decision, lk.links)
	}
}

// auditDenied returns the Audit-mode deny of a decision that is not blocked:
// the outcome to report as dns.lookup.audit, or nil.
func auditDenied(d policy.LookupDecision) *policy.Outcome {
	if a := d.Audit; a != nil && a.Verdict == policy.Deny {
		return a
	}
	return nil
}

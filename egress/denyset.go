package egress

import (
	"net/netip"

	"github.com/egressd/egressd/egress/nftmodel"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// DenySetName returns the name of the kernel set of a Deny rule's
// pre-resolved exact names for a family (nftmodel.DenySetName): plain
// addresses with timeouts, which the Enforcer creates with the rule and the
// pre-resolver (dnsproxy/preresolve) fills; the rule drops "ip daddr
// @fqd_<rule>_v4" for every pod it applies to.
func DenySetName(ruleID string, family ipset.Family) string {
	return nftmodel.DenySetName(ruleID, family)
}

// WithPlanObserver calls f with each plan after the Enforcer applied it (f
// must not block: it runs under the Enforcer's lock). The pre-resolver of
// Deny names (dnsproxy/preresolve) uses it to learn which Deny rules have a
// pre-resolved set (DenySetName) in the kernel.
func WithPlanObserver(f func(*policy.Plan)) Option {
	return func(o *options) { o.planObserver = f }
}

// RevokeTo deletes the conntrack entries of flows from enforced workloads to
// one of addrs that the revocation decision (WithRevocation) now denies: the
// flows a pod opened to an address before it entered a Deny rule's
// pre-resolved set (which would otherwise go on as established). It returns
// how many it deleted; without WithRevocation or a plan it does nothing.
func (e *Enforcer) RevokeTo(addrs ...netip.Addr) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.opts.decide == nil || e.st == nil || e.st.plan == nil || len(addrs) == 0 {
		return 0, nil
	}
	to := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		to[a.Unmap()] = true
	}
	return e.revokeLocked(e.st.plan, func(c policy.Connection) policy.Verdict {
		if !to[c.Dst.Unmap()] {
			return policy.Allow
		}
		return e.opts.decide(c)
	})
}

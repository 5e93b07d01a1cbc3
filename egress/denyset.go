package egress

import (
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

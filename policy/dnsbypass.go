package policy

import (
	"fmt"
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxDNSBypassResolvers bounds spec.dnsBypass.resolvers.
const MaxDNSBypassResolvers = 64

// compiledDNSBypass is a validated spec.dnsBypass.
type compiledDNSBypass struct {
	action    DNSBypassAction // "" : the node default
	resolvers []netip.Prefix  // masked, sorted, without duplicates
}

// compileDNSBypass validates spec.dnsBypass (nil: unset).
func compileDNSBypass(path *field.Path, d *DNSBypass) (*compiledDNSBypass, field.ErrorList) {
	if d == nil {
		return nil, nil
	}
	var errs field.ErrorList
	out := &compiledDNSBypass{action: d.Action}
	switch d.Action {
	case "", DNSBypassRedirect, DNSBypassDrop, DNSBypassAllow:
	default:
		errs = append(errs, field.NotSupported(path.Child("action"), shorten(string(d.Action)),
			[]string{string(DNSBypassRedirect), string(DNSBypassDrop), string(DNSBypassAllow)}))
	}
	if len(d.Resolvers) > MaxDNSBypassResolvers {
		errs = append(errs, field.TooMany(path.Child("resolvers"), len(d.Resolvers), MaxDNSBypassResolvers))
		return nil, errs
	}
	for i, s := range d.Resolvers {
		p, err := netip.ParsePrefix(s)
		switch {
		case len(s) > 43:
			errs = append(errs, field.TooLong(path.Child("resolvers").Index(i), shorten(s), 43))
		case err != nil:
			errs = append(errs, field.Invalid(path.Child("resolvers").Index(i), s, "not a CIDR: "+err.Error()))
		case p != p.Masked():
			errs = append(errs, field.Invalid(path.Child("resolvers").Index(i), s, fmt.Sprintf("host bits set; did you mean %s?", p.Masked())))
		default:
			out.resolvers = append(out.resolvers, p)
		}
	}
	if errs != nil {
		return nil, errs
	}
	slices.SortFunc(out.resolvers, comparePrefixes)
	out.resolvers = slices.Compact(out.resolvers)
	return out, nil
}

// shorten keeps error messages small for huge values.
func shorten(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// DNSBypassSetting is what ClusterFirewallPolicies set for a workload's DNS
// that does not go to egressd (spec.dnsBypass), and the policy that set it.
type DNSBypassSetting struct {
	// Action is Redirect, Drop or Allow; empty when no policy sets it (the
	// node default applies).
	Action DNSBypassAction
	// Resolvers are the resolver addresses the workload may reach directly.
	Resolvers []netip.Prefix
	// Policy is the deciding ClusterFirewallPolicy (zero when none).
	Policy PolicyRef
}

// Equal reports whether two settings are the same.
func (s DNSBypassSetting) Equal(o DNSBypassSetting) bool {
	return s.Action == o.Action && s.Policy == o.Policy && slices.Equal(s.Resolvers, o.Resolvers)
}

// Exempt reports whether dst is one of the setting's resolvers.
func (s DNSBypassSetting) Exempt(dst netip.Addr) bool {
	dst = dst.Unmap()
	for _, p := range s.Resolvers {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

// dnsBypassOf picks the deciding spec.dnsBypass among the enforced policies
// selecting a workload: the first Admin-tier policy by priority then
// reference, else the first Baseline one.
func dnsBypassOf(sel []*compiledPolicy) DNSBypassSetting {
	var best *compiledPolicy
	for _, p := range sel {
		if p.dnsBypass == nil || p.audit || (p.tier != TierAdmin && p.tier != TierBaseline) {
			continue
		}
		if best == nil || dnsBypassBefore(p, best) {
			best = p
		}
	}
	if best == nil {
		return DNSBypassSetting{}
	}
	return DNSBypassSetting{Action: best.dnsBypass.action, Resolvers: best.dnsBypass.resolvers, Policy: best.ref}
}

func dnsBypassBefore(p, b *compiledPolicy) bool {
	if p.tier != b.tier {
		return p.tier == TierAdmin
	}
	if p.priority != b.priority {
		return p.priority < b.priority
	}
	return comparePolicyRefs(p.ref, b.ref) < 0
}

// DNSBypass returns what the enforced ClusterFirewallPolicies set for the
// workload's DNS that does not go to egressd (the zero setting when none
// does, or the workload is unknown: the node default applies). It is the same
// computation as PlanWorkload.DNSBypass.
func (e *Engine) DNSBypass(w WorkloadKey) DNSBypassSetting {
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	wl := s.workloads[w]
	if wl == nil {
		return DNSBypassSetting{}
	}
	ns := s.namespaceLocked(wl.Namespace)
	var sel []*compiledPolicy
	for _, p := range s.policies {
		if p.dnsBypass != nil && p.selects(wl, ns) {
			sel = append(sel, p)
		}
	}
	return dnsBypassOf(sel)
}

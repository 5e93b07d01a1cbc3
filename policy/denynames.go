package policy

import (
	"net/netip"
	"sync"
	"time"

	"github.com/egressd/egressd/policy/domain"
)

// DenyNames returns the exact names (patterns without a wildcard) of the FQDN
// peers of an egress Deny rule, in the rule's order: the names egressd
// resolves itself on a schedule so that the rule also drops connections to
// their addresses from pods that never looked them up (dnsproxy/preresolve,
// the kernel set egress.DenySetName). Wildcard patterns name no finite set of
// names and are left out; nil for any other rule.
func (r *PlanRule) DenyNames() []string {
	if r == nil || r.Action != ActionDeny || r.Direction != Egress || !r.FQDN {
		return nil
	}
	var out []string
	for _, s := range r.Patterns {
		if p, err := domain.Parse(s); err == nil && p.IsExact() {
			out = append(out, p.String())
		}
	}
	return out
}

// denyResolved is the reference model of the kernel sets of pre-resolved Deny
// names (egress.DenySetName): name → address → until when the kernel element
// lasts. A Deny rule's exact FQDN peer matches such an address for every
// workload the rule applies to, whether or not the workload looked the name
// up. Its size is bounded by the pre-resolver (names, addresses per name).
type denyResolved struct {
	mu     sync.RWMutex
	byName map[string]map[netip.Addr]time.Time
}

// RecordDenyResolved records that egressd resolved name (an exact name of a
// Deny rule, see PlanRule.DenyNames) to ips and wrote them to the rule's
// pre-resolved kernel set with a lifetime ending at until. A later record of
// an address extends it; records past their time are dropped here.
func (s *Store) RecordDenyResolved(name string, until time.Time, ips ...netip.Addr) {
	n, err := domain.NormalizeName(name)
	if err != nil {
		return
	}
	d := &s.denyResolved
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byName == nil {
		d.byName = map[string]map[netip.Addr]time.Time{}
	}
	addrs := d.byName[n]
	if addrs == nil {
		addrs = map[netip.Addr]time.Time{}
		d.byName[n] = addrs
	}
	now := time.Now()
	for ip, t := range addrs {
		if !t.After(now) {
			delete(addrs, ip)
		}
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		if old, ok := addrs[ip]; !ok || until.After(old) {
			addrs[ip] = until
		}
	}
	if len(addrs) == 0 {
		delete(d.byName, n)
	}
}

// ForgetDenyResolved drops the pre-resolved addresses of names (no Deny rule
// names them any more).
func (s *Store) ForgetDenyResolved(names ...string) {
	d := &s.denyResolved
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, name := range names {
		if n, err := domain.NormalizeName(name); err == nil {
			delete(d.byName, n)
		}
	}
}

// DenyResolved returns the unexpired pre-resolved addresses of name.
func (s *Store) DenyResolved(name string) []netip.Addr {
	n, err := domain.NormalizeName(name)
	if err != nil {
		return nil
	}
	d := &s.denyResolved
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []netip.Addr
	now := time.Now()
	for ip, t := range d.byName[n] {
		if t.After(now) {
			out = append(out, ip)
		}
	}
	return out
}

// matches reports whether p is an exact FQDN peer whose name was
// pre-resolved to ip (and the kernel element has not expired).
func (d *denyResolved) matches(p *compiledPeer, ip netip.Addr) bool {
	if p.kind != peerFQDN || !p.pattern.IsExact() || !ip.IsValid() {
		return false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	t, ok := d.byName[p.pattern.String()][ip.Unmap()]
	return ok && t.After(time.Now())
}

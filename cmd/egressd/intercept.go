package main

import (
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/egress"
)

// interceptDNS redirects pods' DNS for the cluster DNS Service (--intercept-dns)
// to the resolver, once it listens. The rules stay when the agent stops: pods'
// lookups then fail closed rather than bypass policy (docs/egressd.md).
func (a *agent) interceptDNS() error {
	if len(a.cfg.InterceptDNS) == 0 || a.enforcer == nil {
		return nil
	}
	d := egress.DNSIntercept{Table: a.enforcer.Table()}
	for _, s := range a.cfg.InterceptDNS {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			return fmt.Errorf("--intercept-dns %q: %w", s, err)
		}
		d.Services = append(d.Services, ap)
	}
	for _, ap := range a.dns.Addrs() {
		switch {
		case ap.Addr().Unmap().Is4() && !d.To4.IsValid():
			d.To4 = ap
		case ap.Addr().Is6() && !d.To6.IsValid():
			d.To6 = ap
		}
	}
	if err := egress.ApplyDNSIntercept(d); err != nil {
		return fmt.Errorf("--intercept-dns: %w", err)
	}
	a.log.Info("intercepting cluster DNS", "services", d.Services, "to4", d.To4, "to6", d.To6)
	return nil
}

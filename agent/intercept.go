package agent

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/egressd/egressd/egress"
)

// interceptDNS redirects pods' DNS for the cluster DNS Service (--intercept-dns)
// to the resolver, once it listens. The rules stay when the agent stops: pods'
// lookups then fail closed rather than bypass policy (docs/egressd.md). With
// "auto" (cluster mode) the Service's cluster IPs are added and followed on every
// sync (kube_intercept.go).
func (a *Agent) interceptDNS(context.Context) (func(), error) {
	if len(a.cfg.InterceptDNS) == 0 || a.enforcer == nil {
		return nil, nil
	}
	a.interceptOn = true
	return nil, a.applyDNSIntercept()
}

// applyDNSIntercept programs the interception for the static addresses and the
// cluster DNS Service's, when they differ from what is programmed.
func (a *Agent) applyDNSIntercept() error {
	d := egress.DNSIntercept{Table: a.enforcer.Table()}
	for _, s := range a.cfg.InterceptDNS {
		if s == interceptAuto {
			continue
		}
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
	d.Services = append(d.Services, a.clusterDNSServices(d)...)
	if len(d.Services) == 0 || slices.Equal(d.Services, a.intercepted) {
		return nil // nothing yet (the Service does not exist), or no change
	}
	if err := egress.ApplyDNSIntercept(d); err != nil {
		return fmt.Errorf("--intercept-dns: %w", err)
	}
	a.intercepted = d.Services
	view := make([]string, len(d.Services))
	for i, ap := range d.Services {
		view[i] = ap.String()
	}
	a.interceptView.Store(view)
	a.log.Info("intercepting cluster DNS", "services", d.Services, "to4", d.To4, "to6", d.To6)
	return nil
}

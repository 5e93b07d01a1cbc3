package main

import (
	"net/netip"
	"slices"

	"github.com/egressd/egressd/egress"
)

// interceptAuto in --intercept-dns (cluster mode) intercepts the cluster IPs of
// the --dns-service Service on port 53, following the Service as it changes.
const interceptAuto = "auto"

func (c *config) interceptAuto() bool { return slices.Contains(c.InterceptDNS, interceptAuto) }

// clusterDNSServices returns the cluster DNS Service's addresses to intercept
// with --intercept-dns auto: each cluster IP on port 53 whose family the
// resolver listens on (the others are logged and skipped).
func (a *agent) clusterDNSServices(d egress.DNSIntercept) []netip.AddrPort {
	if !a.cfg.interceptAuto() || a.kube == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, ip := range a.kube.DNSServiceIPs() {
		ip = ip.Unmap()
		if (ip.Is4() && !d.To4.IsValid()) || (ip.Is6() && !d.To6.IsValid()) {
			a.log.Warn("--intercept-dns auto: the resolver listens on no address of this family; not intercepted", "ip", ip)
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, 53))
	}
	return out
}

// refreshDNSIntercept follows the cluster DNS Service after a sync (the source
// requests a sync when the Service changes).
func (a *agent) refreshDNSIntercept() {
	if !a.interceptOn || !a.cfg.interceptAuto() {
		return
	}
	if err := a.applyDNSIntercept(); err != nil {
		a.log.Error("cluster DNS interception not updated", "err", err)
	}
}

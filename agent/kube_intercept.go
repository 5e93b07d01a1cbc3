package agent

import (
	"net/netip"
	"slices"

	"github.com/egressd/egressd/egress"
)

// interceptAuto in --intercept-dns (cluster mode) intercepts the cluster IPs of
// the --dns-service Service on port 53, following the Service as it changes.
const interceptAuto = "auto"

func (c *Config) interceptAuto() bool { return slices.Contains(c.InterceptDNS, interceptAuto) }

// clusterDNSServices returns the cluster DNS Service's addresses to intercept
// with --intercept-dns auto: each cluster IP on port 53 whose family the
// resolver listens on (the others are logged and skipped).
func (a *Agent) clusterDNSServices(d egress.DNSIntercept) []netip.AddrPort {
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
func (a *Agent) refreshDNSIntercept() {
	a.warnUpstreamMoved()
	if !a.interceptOn || !a.cfg.interceptAuto() {
		return
	}
	if err := a.applyDNSIntercept(); err != nil {
		a.log.Error("cluster DNS interception not updated", "err", err)
	}
}

// clusterDNSUpstreams returns the cluster DNS Service's cluster IPs on port 53:
// the resolver's upstreams when --upstream is empty in cluster mode, read
// once when the resolver starts (a Service's cluster IP does not change; a
// Service recreated with another one is logged, and the next agent follows).
func (a *Agent) clusterDNSUpstreams() []string {
	if len(a.cfg.Upstreams) > 0 || a.kube == nil {
		return nil
	}
	ups := serviceUpstreams(a.kube.DNSServiceIPs())
	if len(ups) == 0 {
		a.log.Warn("no --upstream and the cluster DNS Service has no cluster IP: forwarding to the nameservers of /etc/resolv.conf", "dns-service", a.cfg.DNSService)
	}
	return ups
}

// serviceUpstreams maps cluster IPs to upstream addresses on port 53.
func serviceUpstreams(ips []netip.Addr) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), 53).String())
	}
	return out
}

// warnUpstreamMoved logs when the upstreams came from the cluster DNS Service
// and the Service's cluster IPs are no longer those.
func (a *Agent) warnUpstreamMoved() {
	if len(a.cfg.serviceUpstreams) == 0 || a.kube == nil {
		return
	}
	now := serviceUpstreams(a.kube.DNSServiceIPs())
	if !slices.Equal(now, a.cfg.serviceUpstreams) && !slices.Equal(now, a.cfg.serviceMoved) {
		a.cfg.serviceMoved = now
		a.log.Warn("the cluster DNS Service's cluster IPs changed; the resolver still forwards to the old ones until the agent restarts", "upstreams", a.cfg.serviceUpstreams, "service", now)
	}
}

package main

import (
	"context"
	"flag"
	"net/netip"
	"strings"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/dnsproxy/tunnel"
	"github.com/egressd/egressd/telemetry"
)

// tunnelConfig is the agent's DNS tunnel detection configuration (embedded in
// config; docs/detection.md).
type tunnelConfig struct {
	// TunnelDetection is the node default action: Off, Alert or Block.
	TunnelDetection tunnel.Action
	// TunnelAllow are extra registered domains never scored.
	TunnelAllow []string
}

// registerTunnelFlags registers --tunnel-detection and --tunnel-allow (called
// from parseFlags).
func registerTunnelFlags(fs *flag.FlagSet, c *config) {
	c.TunnelDetection = tunnel.Alert
	fs.Func("tunnel-detection", "DNS tunnel detection, node default: Off, Alert or Block (default Alert)", func(s string) error {
		a, err := tunnel.ParseAction(s)
		if err == nil {
			c.TunnelDetection = a
		}
		return err
	})
	fs.Var(listFlag{&c.TunnelAllow}, "tunnel-allow", "registered domain never scored by tunnel detection, besides the built-in anti-virus/DNSBL list; repeatable")
}

// tunnelDetector returns the resolver's tunnel hook. The flag sets the node
// default; policies' spec.tunnelDetection override it per workload (through
// the engine), so the detector exists even when the default is Off.
func (a *agent) tunnelDetector() dnsproxy.TunnelDetector {
	d := tunnel.New(tunnel.Config{
		Action: a.cfg.TunnelDetection, ActionSet: true, ActionFor: dnsproxy.TunnelActions(a.engine),
		Allow:         a.cfg.TunnelAllow,
		ClusterDomain: a.cfg.ClusterDomain, SearchDomains: a.cfg.SearchDomains,
	})
	a.log.Info("DNS tunnel detection", "default", a.cfg.TunnelDetection.String(), "perWorkload", "policy spec.tunnelDetection")
	return tunnelHook{d}
}

// tunnelHook adapts tunnel.Detector to dnsproxy.TunnelDetector. Clients that
// are not known workloads are tracked by address.
type tunnelHook struct{ d *tunnel.Detector }

// tunnelKey is the detector's key: the workload ("namespace/name"), or
// "client:<address>" (no "/", so never taken for a workload).
func tunnelKey(workload string, client netip.Addr) string {
	if workload == "" {
		return "client:" + client.String()
	}
	return workload
}

func (h tunnelHook) Blocked(workload string, client netip.Addr, qname string) (bool, string) {
	return h.d.Blocked(tunnelKey(workload, client), qname)
}

// Check scores a lookup before it is forwarded (Block only).
func (h tunnelHook) Check(_ context.Context, workload string, client netip.Addr, qname string, qtype uint16) (dnsproxy.TunnelVerdict, bool) {
	v := h.d.Check(tunnelKey(workload, client), qname, qtype)
	if !v.Blocked && !v.Suspected {
		return dnsproxy.TunnelVerdict{}, false
	}
	out := dnsproxy.TunnelVerdict{Suspected: v.Suspected, Domain: v.Domain, Score: v.Score}
	if v.Suspected {
		out.Reason, out.Features = v.Reason(), v.Features
	}
	return out, v.Blocked
}

// PairInfo names the registered domain and the pair's score for
// dns.tunnel.blocked events.
func (h tunnelHook) PairInfo(workload string, client netip.Addr, qname string) (string, float64) {
	return h.d.Pair(tunnelKey(workload, client), qname)
}

func (h tunnelHook) Observe(_ context.Context, workload string, client netip.Addr, qname string, qtype uint16, rcode, size int) dnsproxy.TunnelVerdict {
	v := h.d.Observe(tunnelKey(workload, client), qname, qtype, rcode, size)
	if !v.Suspected {
		return dnsproxy.TunnelVerdict{Domain: v.Domain, Score: v.Score}
	}
	return dnsproxy.TunnelVerdict{Suspected: true, Domain: v.Domain, Score: v.Score, Reason: v.Reason(), Features: v.Features}
}

// TunnelEvent reports dns.tunnel.suspected and dns.tunnel.blocked (audit
// line, span, metric) with the registered domain, score and features.
func (d dnsReporter) TunnelEvent(ctx context.Context, ev dnsproxy.Event) {
	ns, _, _ := strings.Cut(ev.Workload, "/")
	name := telemetry.EventTunnelSuspected
	if ev.Event == dnsproxy.EventTunnelBlocked {
		name = telemetry.EventTunnelBlocked
	}
	d.r.Report(ctx, telemetry.Event{
		Time: ev.Time, Event: name, Workload: ev.Workload, Namespace: ns, Client: ev.Client,
		QName: ev.QName, QType: ev.QType, Reason: ev.Reason, Response: ev.Response,
		Domain: ev.Domain, Score: ev.Score, Features: ev.Features,
	})
}

var (
	_ dnsproxy.TunnelReporter = dnsReporter{}
	_ dnsproxy.TunnelPairInfo = tunnelHook{}
	_ dnsproxy.TunnelChecker  = tunnelHook{}
)

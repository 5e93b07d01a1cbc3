package agent

import (
	"flag"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/dnsproxy/tunnel"
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
func registerTunnelFlags(fs *flag.FlagSet, c *Config) {
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

// tunnelDetector returns the resolver's tunnel detection. The flag sets the
// node default; policies' spec.tunnelDetection override it per workload
// (through the engine), so the detector exists even when the default is Off.
func (a *Agent) tunnelDetector() *tunnel.Detector {
	d := tunnel.New(tunnel.Config{
		Action: a.cfg.TunnelDetection, ActionSet: true, ActionFor: dnsproxy.TunnelActions(a.engine),
		Allow:         a.cfg.TunnelAllow,
		ClusterDomain: a.cfg.ClusterDomain, SearchDomains: a.cfg.SearchDomains,
	})
	a.log.Info("DNS tunnel detection", "default", a.cfg.TunnelDetection.String(), "perWorkload", "policy spec.tunnelDetection")
	return d
}

package agent

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/egressd/egressd/dnsproxy"
)

// dnsConfig are the resolver's telemetry flags.
type dnsConfig struct {
	// TraceSampleAllowed is the fraction of allowed lookups recorded as
	// dns.lookup.allowed spans.
	TraceSampleAllowed float64

	// ServeUnknown, UnknownClientWait and UnknownClientWaiters say who may
	// use the resolver without being a known workload (dnsproxy/unknown.go).
	ServeUnknown         string
	UnknownClientWait    time.Duration
	UnknownClientWaiters int

	// UpstreamHealthInterval is the period of the upstream health probe (the
	// only upstream traffic of an idle agent: one "." NS query per upstream
	// and period; docs/scale.md).
	UpstreamHealthInterval time.Duration
}

func registerDNSFlags(fs *flag.FlagSet, c *Config) {
	fs.Float64Var(&c.TraceSampleAllowed, "trace-sample-allowed", 0.01, "fraction (0..1) of allowed lookups recorded as dns.lookup.allowed spans (blocked and audited lookups are always recorded); with --otlp-endpoint")
	fs.StringVar(&c.ServeUnknown, "serve-unknown", dnsproxy.ServeUnknownNode, "sources that are no known workload but are served without policy: comma-separated CIDRs or addresses, \"node\" (the node's own addresses and loopback) or \"none\"; every other unknown source is refused (REFUSED, EDE \"egressd: unknown client\")")
	fs.DurationVar(&c.UnknownClientWait, "unknown-client-wait", 200*time.Millisecond, "how long a query from an unknown source waits for its address to become a workload's (a new pod) before it is refused (0: no wait)")
	fs.IntVar(&c.UnknownClientWaiters, "unknown-client-waiters", 256, "most queries waiting at once with --unknown-client-wait; beyond, unknown sources are refused at once")
	fs.DurationVar(&c.UpstreamHealthInterval, "upstream-health-interval", time.Second, "period of the health probe (\".\" NS) sent to every --upstream: the agent's only upstream queries when idle (0: no probe; upstreams are then marked down and up by real queries only)")
}

// healthInterval returns --upstream-health-interval for the resolver (whose
// zero means the default and negative none).
func (c *dnsConfig) healthInterval() time.Duration {
	if c.UpstreamHealthInterval == 0 {
		return -1
	}
	return c.UpstreamHealthInterval
}

// serveUnknown returns --serve-unknown as the resolver's list.
func (c *dnsConfig) serveUnknown() []string {
	var out []string
	for _, s := range strings.Split(c.ServeUnknown, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// unknownWait returns --unknown-client-wait for the resolver (whose zero
// means the default).
func (c *dnsConfig) unknownWait() time.Duration {
	if c.UnknownClientWait == 0 {
		return -1
	}
	return c.UnknownClientWait
}

func (c *dnsConfig) validateDNS() error {
	if c.TraceSampleAllowed < 0 || c.TraceSampleAllowed > 1 {
		return errors.New("--trace-sample-allowed must be between 0 and 1")
	}
	if len(c.serveUnknown()) == 0 {
		return fmt.Errorf("--serve-unknown is empty: want CIDRs or addresses, %q or %q", dnsproxy.ServeUnknownNode, dnsproxy.ServeUnknownNone)
	}
	if err := (dnsproxy.Config{Upstreams: []string{"127.0.0.1"}, ServeUnknown: c.serveUnknown()}).Validate(); err != nil {
		return fmt.Errorf("--serve-unknown: %w", err)
	}
	if c.UnknownClientWait < 0 || c.UnknownClientWait > 5*time.Second {
		return errors.New("--unknown-client-wait must be between 0 and 5s")
	}
	if c.UpstreamHealthInterval < 0 {
		return errors.New("--upstream-health-interval must not be negative")
	}
	if c.UnknownClientWaiters < 1 {
		return errors.New("--unknown-client-waiters must be positive")
	}
	return nil
}

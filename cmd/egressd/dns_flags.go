package main

import (
	"errors"
	"flag"
)

// dnsConfig are the resolver's telemetry flags.
type dnsConfig struct {
	// TraceSampleAllowed is the fraction of allowed lookups recorded as
	// dns.lookup.allowed spans.
	TraceSampleAllowed float64
}

func registerDNSFlags(fs *flag.FlagSet, c *config) {
	fs.Float64Var(&c.TraceSampleAllowed, "trace-sample-allowed", 0.01, "fraction (0..1) of allowed lookups recorded as dns.lookup.allowed spans (blocked and audited lookups are always recorded); with --otlp-endpoint")
}

func (c *dnsConfig) validateDNS() error {
	if c.TraceSampleAllowed < 0 || c.TraceSampleAllowed > 1 {
		return errors.New("--trace-sample-allowed must be between 0 and 1")
	}
	return nil
}

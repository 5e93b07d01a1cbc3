package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/nftset"
	"github.com/egressd/egressd/policy"
)

// upstreams returns --upstream, or the nameservers of /etc/resolv.conf.
func (c *config) upstreams() ([]string, error) {
	if len(c.Upstreams) > 0 {
		return c.Upstreams, nil
	}
	rc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("no --upstream and /etc/resolv.conf unreadable: %w", err)
	}
	var out []string
	for _, s := range rc.Servers {
		out = append(out, net.JoinHostPort(s, rc.Port))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no --upstream and no nameserver in /etc/resolv.conf")
	}
	return out, nil
}

// resolverConfig maps the flags onto the resolver's configuration.
func (c *config) resolverConfig() (dnsproxy.Config, error) {
	ups, err := c.upstreams()
	if err != nil {
		return dnsproxy.Config{}, err
	}
	mode, err := dnsproxy.ParseBlockMode(c.BlockedResponse)
	if err != nil {
		return dnsproxy.Config{}, err
	}
	rc := dnsproxy.Config{
		Listen:     c.Listen,
		Upstreams:  ups,
		BlockMode:  mode,
		MinSetTTL:  c.MinSetTTL,
		SetGrace:   c.SetGrace,
		CacheSize:  c.CacheSize,
		ServeStale: c.ServeStale,
		RateLimit:  c.RateLimit,
	}
	for _, s := range strings.Split(c.Sinkhole, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil {
			return dnsproxy.Config{}, fmt.Errorf("--sinkhole: %w", err)
		}
		if a.Is4() {
			rc.SinkholeIPv4 = a
		} else {
			rc.SinkholeIPv6 = a
		}
	}
	rc = rc.Defaults()
	return rc, rc.Validate()
}

// fqdnSetName names the kernel set of an FQDN rule, as the enforcer creates it.
func fqdnSetName(rule policy.RuleRef, f ipset.Family) string {
	return egress.FQDNSetName(policy.RuleID(rule), f)
}

// startDNS starts the resolver; the returned function stops it.
func (a *agent) startDNS(ctx context.Context) (func(), error) {
	rc, err := a.cfg.resolverConfig()
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	deps := dnsproxy.Deps{Engine: a.engine, Reporter: a.reporter(), Observer: a.observer()}
	deps.Tunnel = a.tunnelDetector() // tunnel.go
	var sets *nftset.Manager
	if a.enforcer != nil {
		if sets, err = nftset.New(nftset.WithTable(a.enforcer.Table())); err != nil {
			return nil, fmt.Errorf("resolver: kernel sets: %w", err)
		}
		deps.Sets, deps.SetNamer = sets, fqdnSetName
	}
	srv, err := dnsproxy.New(rc, deps)
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	a.dns = srv
	a.log.Info("resolver listening", "addrs", srv.Addrs(), "upstreams", rc.Upstreams, "blocked-response", rc.BlockMode)
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			a.log.Warn("resolver shutdown", "err", err)
		}
		if sets != nil {
			sets.Close()
		}
	}, nil
}

// registerMetrics serves /metrics.
func (a *agent) registerMetrics(mux *http.ServeMux) {
	mux.Handle("/metrics", a.metrics.Handler())
}

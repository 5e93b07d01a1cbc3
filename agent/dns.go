package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/nftset"
	"github.com/egressd/egressd/policy"
)

// upstreams returns --upstream, else (cluster mode) the cluster DNS Service's
// addresses, else the nameservers of /etc/resolv.conf.
func (c *Config) upstreams() ([]string, error) {
	if len(c.Upstreams) > 0 {
		return c.Upstreams, nil
	}
	if len(c.serviceUpstreams) > 0 {
		return c.serviceUpstreams, nil
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
func (c *Config) resolverConfig() (dnsproxy.Config, error) {
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
		KeepECH:    c.KeepECH, // sidedoors.go
		RateLimit:  c.RateLimit,

		MaxIPsPerAnswer:        c.MaxIPsPerAnswer,
		MaxIPsPerName:          c.MaxIPsPerName,
		MaxElementsPerWorkload: c.MaxElementsPerWorkload,

		RebindAllow:        rebindPrefixes(c.RebindAllow),
		RebindClusterCIDRs: rebindPrefixes(c.ClusterCIDRs),
		ServeUnknown:       c.serveUnknown(), // dns_flags.go
		UnknownWait:        c.unknownWait(),
		MaxUnknownWaiters:  c.UnknownClientWaiters,
		HealthInterval:     c.healthInterval(), // dns_flags.go
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
	c.applyDNSLimits(&rc) // dns_limits.go
	rc = rc.Defaults()
	return rc, rc.Validate()
}

// fqdnSetName names the kernel set of an FQDN rule, as the enforcer creates it.
func fqdnSetName(rule policy.RuleRef, f ipset.Family) string {
	return egress.FQDNSetName(policy.RuleID(rule), f)
}

// startDNS starts the resolver; the returned function stops it.
func (a *Agent) startDNS(ctx context.Context) (func(), error) {
	a.cfg.serviceUpstreams = a.clusterDNSUpstreams() // kube_intercept.go
	rc, err := a.cfg.resolverConfig()
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	if rc.RebindNodeAddrs, err = egress.NodeAddrs(); err != nil {
		return nil, fmt.Errorf("resolver: rebinding protection: %w", err)
	}
	deps := dnsproxy.Deps{Engine: a.engine, Events: a.dnsEvents(), Observer: a.observer()}
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
	if err := egress.EnsureLocalAddrs(a.log, a.cfg.LocalInterface, a.cfg.Listen); err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	// The name → IP state of the previous process, before the first query.
	cp := &dnsproxy.StateFile{Srv: srv, Path: a.cfg.StateFile, Log: a.log}
	cp.Merge(ctx)
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	a.dns = srv
	for _, u := range srv.Upstreams() {
		a.metrics.SetUpstreamUp(u.Addr, u.Up)
	}
	a.registerResolverMetrics(srv)
	a.registerResolverLimitMetrics(srv) // dns_limits.go
	tcpCap, inflightCap := srv.Limits()
	a.log.Info("resolver listening", "addrs", srv.Addrs(), "upstreams", rc.Upstreams, "blocked-response", rc.BlockMode,
		"tcp-max-conns", tcpCap, "max-inflight", inflightCap)
	cctx, stopCP := context.WithCancel(context.Background())
	cpDone := make(chan struct{})
	go func() { defer close(cpDone); cp.Loop(cctx, a.cfg.CheckpointInterval) }()
	return func() {
		// Hand the sockets over to a successor (if one bound them), finish
		// the queries in progress, then write the final checkpoint.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second+a.cfg.HandoverSettle)
		defer cancel()
		start := time.Now()
		if err := srv.Handover(sctx, a.cfg.HandoverSettle); err != nil {
			a.log.Warn("resolver shutdown", "err", err)
		}
		stopCP()
		<-cpDone
		cp.Write(context.Background(), false)
		a.log.Info("resolver stopped", "took", time.Since(start), "stats", fmt.Sprintf("%+v", srv.Stats()))
		if sets != nil {
			sets.Close()
		}
	}, nil
}

// registerResolverMetrics exports resolver counters that are kept by the
// resolver itself.
func (a *Agent) registerResolverMetrics(srv *dnsproxy.Server) {
	for limit, count := range map[string]func(dnsproxy.Stats) uint64{
		dnsproxy.ReasonMaxIPsPerAnswer:        func(s dnsproxy.Stats) uint64 { return s.IPsOverAnswerCap },
		dnsproxy.ReasonMaxIPsPerName:          func(s dnsproxy.Stats) uint64 { return s.IPsOverNameCap },
		dnsproxy.ReasonMaxElementsPerWorkload: func(s dnsproxy.Stats) uint64 { return s.IPsOverWorkloadCap },
	} {
		_ = a.metrics.Registry.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "egressd_dns_answer_addresses_dropped_total",
			Help:        "Answer addresses not written to the kernel sets and removed from replies, by the bound that dropped them (--max-ips-per-answer, --max-ips-per-name, --max-elements-per-workload).",
			ConstLabels: prometheus.Labels{"limit": limit},
		}, func() float64 { return float64(count(srv.Stats())) }))
	}
	_ = a.metrics.Registry.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "egressd_dns_lookup_records_expired_total",
		Help: "Expired (workload, name, address) records dropped from the resolver's tracker and the policy model by the periodic sweep.",
	}, func() float64 { return float64(srv.Stats().Swept) }))
	for _, m := range []struct {
		name, help string
		value      func(dnsproxy.Stats) uint64
	}{
		{"egressd_dns_malformed_total", "DNS messages rejected as malformed or unsupported (FORMERR, NOTIMP, REFUSED for other classes and zone transfers, BADVERS) or dropped (responses, datagrams shorter than a header), those the DNS library rejects before the handler included.",
			func(s dnsproxy.Stats) uint64 { return s.Malformed }},
		{"egressd_dns_unknown_served_total", "Queries from sources that are no known workload served without policy (--serve-unknown).",
			func(s dnsproxy.Stats) uint64 { return s.UnknownServed }},
		{"egressd_dns_unknown_waits_total", "Queries from unknown sources that waited for their address to become a workload's (--unknown-client-wait).",
			func(s dnsproxy.Stats) uint64 { return s.UnknownWaits }},
		{"egressd_dns_unknown_waits_full_total", "Queries from unknown sources refused without waiting because --unknown-client-waiters queries waited already.",
			func(s dnsproxy.Stats) uint64 { return s.UnknownWaitsFull }},
		{"egressd_dns_unknown_refused_total", "Queries refused because their source is no known workload and not in --serve-unknown (REFUSED, EDE \"egressd: unknown client\").",
			func(s dnsproxy.Stats) uint64 { return s.UnknownRefused }},
	} {
		_ = a.metrics.Registry.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help},
			func() float64 { return float64(m.value(srv.Stats())) }))
	}
	_ = a.metrics.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "egressd_policy_lookup_records",
		Help: "(workload, address, name) lookup records in the policy model (the FQDN sets' reference).",
	}, func() float64 { return float64(a.store.LookupRecords()) }))
}

// registerMetrics serves /metrics.
func (a *Agent) registerMetrics(mux *http.ServeMux) {
	mux.Handle("/metrics", a.metrics.Handler())
}

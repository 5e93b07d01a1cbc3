package agent

import (
	"errors"
	"flag"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/egressd/egressd/dnsproxy"
)

// dnsLimitsConfig are the resolver's connection and fair-share limits
// (issue 17 items 5 and 6); docs/egressd.md, "Resolver limits".
type dnsLimitsConfig struct {
	TCPMaxConns          int
	TCPMaxConnsPerClient int
	TCPMaxQueries        int
	TCPIdleTimeout       time.Duration
	FDReserve            int
	MaxInflight          int
	MaxInflightPerClient int
	RRLRate              float64
	RRLSlip              int
}

func registerDNSLimitFlags(fs *flag.FlagSet, c *Config) {
	l := &c.dnsLimitsConfig
	fs.IntVar(&l.TCPMaxConns, "tcp-max-conns", 4096, "most client TCP connections to the resolver open at once, lowered to half the file descriptors above --fd-reserve (0: only that bound); more are reset")
	fs.IntVar(&l.TCPMaxConnsPerClient, "tcp-max-conns-per-client", 64, "most TCP connections to the resolver from one client address (0: no per-client bound); more are reset")
	fs.IntVar(&l.TCPMaxQueries, "tcp-max-queries", 128, "queries answered on one TCP connection before it is closed after the last reply (0: unlimited)")
	fs.DurationVar(&l.TCPIdleTimeout, "tcp-idle-timeout", 10*time.Second, "a TCP connection is closed when no reply was sent for this long (messages that get no reply, such as an empty one, do not count)")
	fs.IntVar(&l.FDReserve, "fd-reserve", 256, "file descriptors kept for reloads, checkpoints and HTTP: TCP connections and queries in flight each get at most half of RLIMIT_NOFILE minus this (0: no descriptor budget)")
	fs.IntVar(&l.MaxInflight, "max-inflight", 4096, "most queries handled at once (within the descriptor budget, see --fd-reserve); more get REFUSED")
	fs.IntVar(&l.MaxInflightPerClient, "max-inflight-per-client", 512, "most queries of one client address handled at once (0: no per-client bound); more get REFUSED")
	fs.Float64Var(&l.RRLRate, "rrl-rate", 2000, "response-rate limit: identical responses (name, type, rcode) per second to one client over UDP (0: off); over it see --rrl-slip")
	fs.IntVar(&l.RRLSlip, "rrl-slip", 2, "of the responses over --rrl-rate, every Nth is sent empty and truncated (the client retries over TCP), the others are dropped (0: all dropped, 1: all truncated)")
}

func (l *dnsLimitsConfig) validateDNSLimits() error {
	var errs []error
	if l.MaxInflight < 1 {
		errs = append(errs, errors.New("--max-inflight must be at least 1"))
	}
	for _, v := range []struct {
		name string
		bad  bool
	}{
		{"--tcp-max-conns", l.TCPMaxConns < 0}, {"--tcp-max-conns-per-client", l.TCPMaxConnsPerClient < 0},
		{"--tcp-max-queries", l.TCPMaxQueries < 0}, {"--tcp-idle-timeout", l.TCPIdleTimeout < time.Second},
		{"--fd-reserve", l.FDReserve < 0}, {"--max-inflight-per-client", l.MaxInflightPerClient < 0},
		{"--rrl-rate", l.RRLRate < 0}, {"--rrl-slip", l.RRLSlip < 0},
	} {
		if v.bad {
			errs = append(errs, errors.New(v.name+" out of range"))
		}
	}
	return errors.Join(errs...)
}

// off maps a flag's 0 ("off") onto the resolver's negative ("off"; zero
// there means its default).
func off[T int | float64](v T) T {
	if v == 0 {
		return -1
	}
	return v
}

// applyDNSLimits maps the limit flags (and --rate-limit) onto the resolver's
// configuration.
func (c *Config) applyDNSLimits(rc *dnsproxy.Config) {
	l := c.dnsLimitsConfig
	rc.RateLimit = off(c.RateLimit)
	rc.TCPMaxConns = off(l.TCPMaxConns)
	rc.TCPMaxConnsPerClient = off(l.TCPMaxConnsPerClient)
	rc.TCPMaxQueries = off(l.TCPMaxQueries)
	rc.TCPIdleTimeout = l.TCPIdleTimeout
	rc.FDReserve = off(l.FDReserve)
	rc.MaxInflight = l.MaxInflight
	rc.MaxInflightPerClient = off(l.MaxInflightPerClient)
	rc.RRLRate = off(l.RRLRate)
	rc.RRLSlip = off(l.RRLSlip)
}

// statByLabel is one labelled counter of the resolver's statistics.
type statByLabel struct {
	value string
	v     func(dnsproxy.Stats) uint64
}

// registerResolverLimitMetrics exports the counters of the resolver's
// limits.
func (a *Agent) registerResolverLimitMetrics(srv *dnsproxy.Server) {
	reg := a.metrics.Registry
	counter := func(name, help string, v func(dnsproxy.Stats) uint64) {
		_ = reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v(srv.Stats())) }))
	}
	gauge := func(name, help string, v func(dnsproxy.Stats) int) {
		_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(v(srv.Stats())) }))
	}
	// labelled exports one counter per value of label, all under name.
	labelled := func(name, help, label string, rs ...statByLabel) {
		for _, r := range rs {
			_ = reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: name, Help: help, ConstLabels: prometheus.Labels{label: r.value},
			}, func() float64 { return float64(r.v(srv.Stats())) }))
		}
	}
	labelled("egressd_dns_tcp_rejected_total", "Client TCP connections reset at accept: their client had --tcp-max-conns-per-client open (per_client) or --tcp-max-conns were open (global).",
		"limit",
		statByLabel{"per_client", func(s dnsproxy.Stats) uint64 { return s.TCPRejectedClient }},
		statByLabel{"global", func(s dnsproxy.Stats) uint64 { return s.TCPRejectedGlobal }})
	counter("egressd_dns_tcp_accepted_total", "Client TCP connections accepted within the limits.",
		func(s dnsproxy.Stats) uint64 { return s.TCPAccepted })
	counter("egressd_dns_tcp_evicted_total", "Client TCP connections reset at --tcp-max-conns to make room for a client holding at least two fewer.",
		func(s dnsproxy.Stats) uint64 { return s.TCPEvicted })
	counter("egressd_dns_tcp_idle_closed_total", "Client TCP connections closed by --tcp-idle-timeout (no reply sent for that long).",
		func(s dnsproxy.Stats) uint64 { return s.TCPIdleClosed })
	counter("egressd_dns_tcp_accept_errors_total", "Failed accepts of client TCP connections (e.g. out of file descriptors); accepting backs off.",
		func(s dnsproxy.Stats) uint64 { return s.TCPAcceptErrors })
	gauge("egressd_dns_tcp_connections", "Client TCP connections open now.",
		func(s dnsproxy.Stats) int { return s.TCPOpen })
	gauge("egressd_dns_inflight", "Queries handled now (slow path).",
		func(s dnsproxy.Stats) int { return s.Inflight })
	labelled("egressd_dns_limited_total", "Queries answered REFUSED by a limit: the client's rate (--rate-limit), its queries in flight (--max-inflight-per-client), all queries in flight (--max-inflight).",
		"limit",
		statByLabel{"rate", func(s dnsproxy.Stats) uint64 { return s.RateLimited }},
		statByLabel{"inflight_per_client", func(s dnsproxy.Stats) uint64 { return s.ClientOverloaded }},
		statByLabel{"inflight", func(s dnsproxy.Stats) uint64 { return s.Overloaded }})
	labelled("egressd_dns_rrl_total", "UDP responses over --rrl-rate, sent empty and truncated or dropped (--rrl-slip).",
		"action",
		statByLabel{"truncated", func(s dnsproxy.Stats) uint64 { return s.RRLTruncated }},
		statByLabel{"dropped", func(s dnsproxy.Stats) uint64 { return s.RRLDropped }})
}

package preresolve

import (
	"context"
	"math"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// exchange is the default Deps.Exchange: UDP, then TCP when the answer is
// truncated.
func exchange(timeout time.Duration) func(ctx context.Context, m *dns.Msg, upstream string) (*dns.Msg, error) {
	udp := &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232}
	tcp := &dns.Client{Net: "tcp", Timeout: timeout}
	return func(ctx context.Context, m *dns.Msg, upstream string) (*dns.Msg, error) {
		resp, _, err := udp.ExchangeContext(ctx, m, upstream)
		if err == nil && resp.Truncated {
			resp, _, err = tcp.ExchangeContext(ctx, m, upstream)
		}
		return resp, err
	}
}

func float64bits(f float64) uint64     { return math.Float64bits(f) }
func float64frombits(b uint64) float64 { return math.Float64frombits(b) }

// Register registers the pre-resolver's metrics (docs/egressd.md, "Metrics"):
// egressd_deny_preresolve_names, _names_over_limit, _addresses,
// _queries_per_minute (gauges) and _queries_total, _query_errors_total,
// _set_errors_total, _elements_total, _addresses_dropped_total (counters).
func (r *Resolver) Register(reg prometheus.Registerer) error {
	gauge := func(name, help string, v func(Stats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "egressd_deny_preresolve_" + name, Help: help},
			func() float64 { return v(r.Stats()) })
	}
	counter := func(name, help string, v func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "egressd_deny_preresolve_" + name, Help: help},
			func() float64 { return float64(v(r.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		gauge("names", "Exact names of Deny rules egressd resolves itself on a schedule (--deny-preresolve-max-names bounds them).",
			func(s Stats) float64 { return float64(s.Names) }),
		gauge("names_over_limit", "Exact names of Deny rules not pre-resolved because --deny-preresolve-max-names names are already.",
			func(s Stats) float64 { return float64(s.OverLimit) }),
		gauge("addresses", "Addresses of the pre-resolved Deny names held in the rules' kernel sets (fqd_*).",
			func(s Stats) float64 { return float64(s.Addresses) }),
		gauge("queries_per_minute", "Upstream queries a minute the pre-resolution schedule makes (A and AAAA per name and interval).",
			func(s Stats) float64 { return s.QueriesPerMinute }),
		counter("queries_total", "Upstream queries sent to pre-resolve Deny names.",
			func(s Stats) uint64 { return s.Queries }),
		counter("query_errors_total", "Pre-resolution questions no upstream answered usably (retried after --deny-preresolve-min-interval).",
			func(s Stats) uint64 { return s.QueryErrors }),
		counter("set_errors_total", "Failed writes of pre-resolved addresses to the kernel sets.",
			func(s Stats) uint64 { return s.SetErrors }),
		counter("elements_total", "Elements written to the pre-resolved Deny sets (refreshes included).",
			func(s Stats) uint64 { return s.Elements }),
		counter("addresses_dropped_total", "Pre-resolved addresses not written: unspecified, loopback, link-local, multicast, the node's and --cluster-cidr addresses, or beyond 64 per name.",
			func(s Stats) uint64 { return s.AddrsDropped }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

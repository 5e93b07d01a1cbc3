package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/egress/l7"
)

// l7Config is the L7 egress proxy's configuration (embedded in config; flags
// documented in docs/l7.md).
type l7Config struct {
	HTTPProxy            string   // --http-proxy ADDR: explicit proxy
	TransparentProxy     bool     // --transparent-proxy: nftables redirect
	TransparentAddr      []string // --transparent-proxy-addr: one IPv4 and/or one IPv6 address:port
	TransparentSelector  string   // --transparent-proxy-selector
	TransparentPorts     string   // --transparent-proxy-ports
	ProxyMaxConns        int
	ProxyHelloTimeout    time.Duration
	ProxyIdleTimeout     time.Duration
	ProxyDialTimeout     time.Duration
	ProxyRedirectRefresh time.Duration
}

// registerL7Flags registers the proxy flags (called from parseFlags).
func registerL7Flags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.HTTPProxy, "http-proxy", "", "start the explicit HTTP/CONNECT egress proxy on this address, e.g. 127.0.0.1:3128 or 169.254.20.10:3128 (empty: off)")
	fs.BoolVar(&c.TransparentProxy, "transparent-proxy", false, "redirect the selected workloads' TCP --transparent-proxy-ports to the transparent L7 proxy (nftables dnat in table inet egressd)")
	fs.Var(listFlag{&c.TransparentAddr}, "transparent-proxy-addr", "node-local address:port the transparent proxy listens on and connections are redirected to: one IPv4 and/or one IPv6, repeatable or comma-separated; a family without one is not redirected (default "+defaultTransparentAddr+")")
	fs.StringVar(&c.TransparentSelector, "transparent-proxy-selector", "", "label selector of the pods to redirect (e.g. l7=on); empty: every workload whose egress a policy restricts")
	fs.StringVar(&c.TransparentPorts, "transparent-proxy-ports", "80,443", "TCP destination ports redirected to the transparent proxy")
	fs.IntVar(&c.ProxyMaxConns, "proxy-max-conns", 4096, "client connections each L7 proxy serves at once; more wait in the accept queue")
	fs.DurationVar(&c.ProxyHelloTimeout, "proxy-hello-timeout", 5*time.Second, "time a client has to send its TLS ClientHello or HTTP request header")
	fs.DurationVar(&c.ProxyIdleTimeout, "proxy-idle-timeout", 5*time.Minute, "close proxied connections idle this long in both directions")
	fs.DurationVar(&c.ProxyDialTimeout, "proxy-dial-timeout", 10*time.Second, "timeout of the proxy's connection to the server")
	fs.DurationVar(&c.ProxyRedirectRefresh, "proxy-redirect-refresh", 2*time.Second, "how often the redirect's workload set is reconciled (and restored after a full table rewrite)")
}

func (c *l7Config) validateL7() error {
	var errs []error
	if c.HTTPProxy != "" {
		if _, err := netip.ParseAddrPort(c.HTTPProxy); err != nil {
			errs = append(errs, fmt.Errorf("--http-proxy %q: %v", c.HTTPProxy, err))
		}
	}
	if c.TransparentProxy {
		if _, _, err := c.transparentAddrs(); err != nil {
			errs = append(errs, err)
		}
		if _, err := c.redirectPorts(); err != nil {
			errs = append(errs, err)
		}
		if _, err := labels.Parse(c.TransparentSelector); err != nil {
			errs = append(errs, fmt.Errorf("--transparent-proxy-selector: %v", err))
		}
	}
	if c.ProxyMaxConns < 1 || c.ProxyHelloTimeout <= 0 || c.ProxyIdleTimeout <= 0 || c.ProxyDialTimeout <= 0 || c.ProxyRedirectRefresh <= 0 {
		errs = append(errs, errors.New("--proxy-max-conns and the proxy timeouts must be positive"))
	}
	return errors.Join(errs...)
}

// defaultTransparentAddr is --transparent-proxy-addr when not given.
const defaultTransparentAddr = "169.254.20.10:15001"

// transparentAddrs returns the IPv4 and IPv6 addresses of the transparent
// proxy (either may be invalid, not both).
func (c *l7Config) transparentAddrs() (v4, v6 netip.AddrPort, err error) {
	list := c.TransparentAddr
	if len(list) == 0 {
		list = []string{defaultTransparentAddr}
	}
	for _, s := range list {
		ap, perr := netip.ParseAddrPort(s)
		switch {
		case perr != nil || ap.Port() == 0:
			return v4, v6, fmt.Errorf("--transparent-proxy-addr %q: want address:port", s)
		case ap.Addr().Is4() && !v4.IsValid():
			v4 = ap
		case ap.Addr().Is6() && !ap.Addr().Is4In6() && ap.Addr().Zone() == "" && !v6.IsValid():
			v6 = ap
		default:
			return v4, v6, fmt.Errorf("--transparent-proxy-addr %q: at most one IPv4 and one IPv6 address:port (no zone, no mapped address)", s)
		}
	}
	return v4, v6, nil
}

func (c *l7Config) redirectPorts() ([]uint16, error) {
	var out []uint16
	for _, s := range strings.Split(c.TransparentPorts, ",") {
		p, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("--transparent-proxy-ports: bad port %q", s)
		}
		out = append(out, uint16(p))
	}
	return out, nil
}

// l7Exempt are the proxy addresses pods must reach through egress_local.
func (a *Agent) l7Exempt() []netip.AddrPort {
	var out []netip.AddrPort
	if a.cfg.HTTPProxy != "" {
		if ap, err := netip.ParseAddrPort(a.cfg.HTTPProxy); err == nil {
			out = append(out, ap)
		}
	}
	if a.cfg.TransparentProxy {
		if v4, v6, err := a.cfg.transparentAddrs(); err == nil {
			for _, ap := range []netip.AddrPort{v4, v6} {
				if ap.IsValid() {
					out = append(out, ap)
				}
			}
		}
	}
	return out
}

// startL7 starts the configured proxies; the returned function stops them.
func (a *Agent) startL7(ctx context.Context) (func(), error) {
	if a.cfg.HTTPProxy == "" && !a.cfg.TransparentProxy {
		return func() {}, nil
	}
	if err := a.cfg.validateL7(); err != nil {
		return nil, err
	}
	checker := &l7.Checker{Engine: a.engine, ResolveChain: a.nodeResolver(), BlockDoH: a.blockDoH} // sidedoors.go
	verdicts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "egressd_l7_requests_total",
		Help: "L7 proxy decisions by mode (http, connect, transparent-tls, transparent-http), verdict and reason.",
	}, []string{"mode", "verdict", "reason"})
	if a.metrics != nil {
		if err := a.metrics.Registry.Register(verdicts); err != nil {
			return nil, fmt.Errorf("l7 metrics: %w", err)
		}
	}
	hooks := l7.Hooks{
		Logger: a.log.With("component", "l7"),
		Events: a.events,
		Decided: func(m l7.Mode, allowed bool, reason string) {
			v := "allowed"
			if !allowed {
				v = "blocked"
			}
			verdicts.WithLabelValues(string(m), v, reason).Inc()
		},
	}
	limits := l7.Limits{MaxConns: a.cfg.ProxyMaxConns, HelloTimeout: a.cfg.ProxyHelloTimeout,
		IdleTimeout: a.cfg.ProxyIdleTimeout, DialTimeout: a.cfg.ProxyDialTimeout}
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	if a.cfg.HTTPProxy != "" {
		ln, err := net.Listen("tcp", a.cfg.HTTPProxy)
		if err != nil {
			return nil, fmt.Errorf("--http-proxy: %w", err)
		}
		p := l7.NewExplicit(checker, limits, hooks)
		go func() {
			if err := p.Serve(ln); err != nil {
				a.log.Error("explicit proxy", "err", err)
			}
		}()
		stops = append(stops, func() { p.Close() })
		a.log.Info("explicit L7 proxy listening", "addr", a.cfg.HTTPProxy)
	}
	if a.cfg.TransparentProxy {
		v4, v6, _ := a.cfg.transparentAddrs()
		var lns []net.Listener
		for _, ap := range []netip.AddrPort{v4, v6} {
			if !ap.IsValid() {
				continue
			}
			ln, err := net.Listen("tcp", ap.String())
			if err != nil {
				for _, l := range lns {
					l.Close()
				}
				stop()
				return nil, fmt.Errorf("--transparent-proxy-addr: %w", err)
			}
			lns = append(lns, ln)
		}
		p := l7.NewTransparent(checker, limits, hooks)
		for _, ln := range lns {
			go func() {
				if err := p.Serve(ln); err != nil {
					a.log.Error("transparent proxy", "addr", ln.Addr(), "err", err)
				}
			}()
		}
		stops = append(stops, func() { p.Close() })
		if a.enforcer != nil {
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); a.reconcileRedirect(rctx) }()
			stops = append(stops, func() {
				cancel()
				<-done
				if err := egress.RemoveRedirect(a.enforcer.Table(), 0); err != nil {
					a.log.Warn("remove redirect", "err", err)
				}
			})
		} else {
			a.log.Warn("--transparent-proxy without the nftables dataplane: nothing is redirected")
		}
		a.log.Info("transparent L7 proxy listening", "v4", v4, "v6", v6, "ports", a.cfg.TransparentPorts, "selector", a.cfg.TransparentSelector)
	}
	return stop, nil
}

// reconcileRedirect keeps the redirect in the kernel in line with the
// selected workloads, and restores it after a full table rewrite.
func (a *Agent) reconcileRedirect(ctx context.Context) {
	ports, _ := a.cfg.redirectPorts()
	to4, to6, _ := a.cfg.transparentAddrs()
	sel, _ := labels.Parse(a.cfg.TransparentSelector)
	var last []netip.Addr
	applied, warned6 := false, false
	t := time.NewTicker(a.cfg.ProxyRedirectRefresh)
	defer t.Stop()
	for {
		srcs := a.redirectSources(sel)
		ok, err := egress.RedirectInstalled(a.enforcer.Table(), 0)
		if err != nil {
			a.log.Warn("redirect: list", "err", err)
		}
		if !to6.IsValid() && !warned6 && slices.ContainsFunc(srcs, netip.Addr.Is6) {
			warned6 = true
			a.log.Warn("redirect: selected workloads have IPv6 addresses but --transparent-proxy-addr has no IPv6 address: their IPv6 connections are not redirected (only L3 FQDN enforcement applies)")
		}
		if !applied || !ok || !slices.Equal(srcs, last) {
			if err := egress.ApplyRedirect(egress.Redirect{Table: a.enforcer.Table(), Ports: ports, To4: to4, To6: to6, Sources: srcs}); err != nil {
				a.log.Error("redirect: apply", "err", err)
			} else {
				applied, last = true, srcs
				a.log.Debug("redirect applied", "workload-addresses", len(srcs))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// redirectSources are the addresses of the workloads to redirect: those the
// selector matches, or (no selector) those whose egress a policy restricts.
func (a *Agent) redirectSources(sel labels.Selector) []netip.Addr {
	var out []netip.Addr
	plan := a.compiler.Plan()
	for _, k := range a.store.Workloads() {
		w, ok := a.store.Workload(k)
		if !ok {
			continue
		}
		if a.cfg.NodeName != "" && w.Node != "" && w.Node != a.cfg.NodeName {
			continue
		}
		if a.cfg.TransparentSelector != "" {
			if !sel.Matches(labels.Set(w.Labels)) {
				continue
			}
		} else if plan == nil || plan.Workloads[k] == nil || plan.Workloads[k].Egress.Empty() {
			continue
		}
		out = append(out, w.IPs...)
	}
	slices.SortFunc(out, func(x, y netip.Addr) int { return x.Compare(y) })
	return slices.Compact(out)
}

// nodeResolver resolves through the node resolver (the first --listen
// address), so the proxy sees the answers the workloads get, with their
// alias chains.
func (a *Agent) nodeResolver() l7.ChainResolver {
	if len(a.cfg.Listen) == 0 {
		return nil
	}
	return l7.DNSResolver(a.cfg.Listen[0], 5*time.Second)
}

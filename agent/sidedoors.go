package agent

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/dnsproxy/preresolve"
	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/egress/doh"
	"github.com/egressd/egressd/ipset/nftset"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/telemetry/event"
)

// sideDoorConfig closes the DNS side doors (issue 16; docs/egressd.md,
// "DNS side doors"): pods' DNS that does not go to egressd.
type sideDoorConfig struct {
	DNSBypass       string   // --dns-bypass: Redirect, Drop or Allow
	DNSBypassExempt []string // --dns-bypass-exempt-namespaces
	EncryptedDNS    string   // --encrypted-dns: Drop or Allow
	DoHResolvers    string   // --doh-resolvers FILE ("" : the list shipped with egressd)
	KeepECH         bool     // --keep-ech
	// --deny-preresolve-max-names, --deny-preresolve-min-interval
	DenyPreresolveMaxNames    int
	DenyPreresolveMinInterval time.Duration
	dnsBypassExemptS          bool // the flag was given (an empty value clears the default)
}

func registerSideDoorFlags(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.DNSBypass, "dns-bypass", "Redirect", "what the kernel does with pods' plain DNS (UDP/TCP 53) to resolvers other than egressd when no ClusterFirewallPolicy spec.dnsBypass says: Redirect (to egressd), Drop, or Allow")
	fs.Func("dns-bypass-exempt-namespaces", "comma-separated namespaces whose pods default to dnsBypass Allow: they run their own resolver (default kube-system: CoreDNS's upstream queries must not loop through egressd); empty: none", func(s string) error {
		c.dnsBypassExemptS = true
		c.DNSBypassExempt = nil
		return listFlag{&c.DNSBypassExempt}.Set(s)
	})
	fs.StringVar(&c.EncryptedDNS, "encrypted-dns", "Drop", "pods' encrypted DNS that bypasses egressd — DoT (TCP 853), DoQ (UDP 853), DoH to the --doh-resolvers addresses: Drop (reported as dns.bypass.blocked) or Allow")
	fs.BoolVar(&c.KeepECH, "keep-ech", false, "keep the ech SvcParam of HTTPS/SVCB answers (default: removed before caching, so that clients send a visible TLS SNI the L7 proxy can check)")
	fs.IntVar(&c.DenyPreresolveMaxNames, "deny-preresolve-max-names", preresolve.DefaultMaxNames, "resolve up to this many exact names of Deny rules through the upstream on a schedule and drop their addresses for the pods the rules apply to, looked up or not (0: off; wildcards cannot be pre-resolved)")
	fs.DurationVar(&c.DenyPreresolveMinInterval, "deny-preresolve-min-interval", preresolve.DefaultMinInterval, "shortest time between two resolutions of a pre-resolved Deny name, whatever its TTL (at most 2 × names queries per interval; the longest is 1h)")
	fs.StringVar(&c.DoHResolvers, "doh-resolvers", "", "file of known DoH resolver addresses (\"<address or CIDR> <host name>\" lines) replacing the list shipped with egressd; re-read when it changes, a bad or empty file keeps the last good list")
}

func (c *sideDoorConfig) validateSideDoors() error {
	var errs []error
	if err := c.dnsBypassNode().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--dns-bypass: %w", err))
	}
	switch c.EncryptedDNS {
	case "Drop", "Allow":
	default:
		errs = append(errs, fmt.Errorf("--encrypted-dns %.40q: want Drop or Allow", c.EncryptedDNS))
	}
	if c.DenyPreresolveMaxNames < 0 || (c.DenyPreresolveMaxNames > 0 && c.DenyPreresolveMinInterval < time.Second) {
		errs = append(errs, fmt.Errorf("--deny-preresolve-max-names %d, --deny-preresolve-min-interval %v: want names ≥ 0 and an interval of at least 1s", c.DenyPreresolveMaxNames, c.DenyPreresolveMinInterval))
	}
	if c.DoHResolvers != "" {
		if _, err := readDoHList(c.DoHResolvers); err != nil {
			errs = append(errs, fmt.Errorf("--doh-resolvers: %w", err))
		}
	}
	return errors.Join(errs...)
}

// dnsBypassNode returns the node's side-door defaults.
func (c *sideDoorConfig) dnsBypassNode() policy.DNSBypassNode {
	exempt := c.DNSBypassExempt
	if !c.dnsBypassExemptS {
		exempt = []string{"kube-system"}
	}
	return policy.DNSBypassNode{Default: policy.DNSBypassAction(c.DNSBypass), ExemptNamespaces: exempt, AllowEncrypted: c.EncryptedDNS == "Allow"}
}

// readDoHList reads a --doh-resolvers file; an empty list is an error (it
// would silently open the DoH door).
func readDoHList(path string) (doh.List, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	l, err := doh.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(l) == 0 {
		return nil, fmt.Errorf("%s: no entries", path)
	}
	return l, nil
}

// sideDoors holds the agent's side-door state.
type sideDoors struct {
	node    policy.DNSBypassNode
	to4     netip.AddrPort
	to6     netip.AddrPort
	doh     atomic.Pointer[doh.List]
	origDst *egress.OriginalDestinations // nil: original destinations are not reported
	// queue holds the blocked and audited lookup events waiting for their
	// original destination (origDstWorker).
	queue chan origDstJob
}

// origDstQueue bounds the events waiting for a conntrack lookup; beyond it an
// event is reported at once, without the original destination.
const origDstQueue = 256

type origDstJob struct {
	ctx context.Context
	ev  event.Event
}

// queueOrigDst hands a blocked or audited lookup event to origDstWorker; false
// when there is no worker or its queue is full (the caller reports it as is).
// The conntrack lookup costs a netlink round trip (about 50-70 µs): it is kept
// off the query path and to one goroutine, so a flood of blocked lookups
// cannot multiply it.
func (a *Agent) queueOrigDst(ctx context.Context, ev event.Event) bool {
	sd := a.sideDoors
	if sd == nil || sd.queue == nil {
		return false
	}
	select {
	case sd.queue <- origDstJob{ctx: context.WithoutCancel(ctx), ev: ev}:
		return true
	default:
		return false
	}
}

// startOrigDstWorker starts the goroutine that reports the queued events
// with their original destination; the returned function stops it after
// reporting what is left (without looking up). The agent stops it after the
// resolver and before the telemetry, so no event is lost.
func (a *Agent) startOrigDstWorker() func() {
	sd := a.sideDoors
	if sd == nil || sd.queue == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.origDstWorker(ctx) }()
	return func() {
		cancel()
		<-done
		_ = sd.origDst.Close()
	}
}

func (a *Agent) origDstWorker(ctx context.Context) {
	sd := a.sideDoors
	report := func(j origDstJob, lookup bool) {
		if lookup {
			if dst := a.originalDestination(j.ev); dst != "" {
				attrs := make(map[string]string, len(j.ev.Attrs)+1)
				for k, v := range j.ev.Attrs {
					attrs[k] = v
				}
				attrs[AttrOriginalDestination] = dst
				j.ev.Attrs = attrs
			}
		}
		a.events.Emit(j.ctx, j.ev)
	}
	for {
		select {
		case j := <-sd.queue:
			report(j, true)
		case <-ctx.Done():
			for {
				select {
				case j := <-sd.queue:
					report(j, false)
				default:
					return
				}
			}
		}
	}
}

// sideDoorsOption prepares the side doors and returns the enforcer option.
func (a *Agent) sideDoorsOption() (egress.Option, error) {
	l := doh.Default()
	if a.cfg.DoHResolvers != "" {
		var err error
		if l, err = readDoHList(a.cfg.DoHResolvers); err != nil {
			return nil, fmt.Errorf("--doh-resolvers: %w", err)
		}
	}
	sd := &sideDoors{node: a.cfg.dnsBypassNode()}
	for _, ap := range a.listenAddrPorts() {
		switch {
		case ap.Addr().Unmap().Is4() && !sd.to4.IsValid():
			sd.to4 = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		case ap.Addr().Is6() && !ap.Addr().Is4In6() && !sd.to6.IsValid():
			sd.to6 = ap
		}
	}
	sd.doh.Store(&l)
	if od, err := egress.NewOriginalDestinations(0); err != nil {
		a.log.Warn("original destinations of redirected queries will not be reported", "err", err)
	} else {
		sd.origDst = od
		sd.queue = make(chan origDstJob, origDstQueue)
	}
	a.sideDoors = sd
	a.log.Info("DNS side doors", "dns-bypass", sd.node.Default, "exempt-namespaces", sd.node.ExemptNamespaces,
		"encrypted-dns", a.cfg.EncryptedDNS, "doh-resolvers", len(l), "redirect-to4", sd.to4, "redirect-to6", sd.to6)
	return egress.WithSideDoors(egress.SideDoors{Node: sd.node, To4: sd.to4, To6: sd.to6, DoH: l.Prefixes()}), nil
}

// denyPreresolve starts the pre-resolver of exact Deny names
// (dnsproxy/preresolve; it stops with ctx) and returns the enforcer option
// that hands it every applied plan.
func (a *Agent) denyPreresolve(ctx context.Context) (egress.Option, error) {
	if a.cfg.DenyPreresolveMaxNames == 0 {
		return egress.WithPlanObserver(nil), nil
	}
	rc, err := a.cfg.resolverConfig()
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	exclude := rebindPrefixes(a.cfg.ClusterCIDRs)
	if addrs, err := egress.NodeAddrs(); err == nil {
		for _, ip := range addrs {
			exclude = append(exclude, netip.PrefixFrom(ip, ip.BitLen()))
		}
	}
	sets, err := nftset.New(nftset.WithTable(egress.DefaultTable))
	if err != nil {
		return nil, fmt.Errorf("deny pre-resolution: %w", err)
	}
	pr, err := preresolve.New(preresolve.Config{Upstreams: rc.Upstreams, MaxNames: a.cfg.DenyPreresolveMaxNames,
		MinInterval: a.cfg.DenyPreresolveMinInterval, Exclude: exclude}, preresolve.Deps{
		Sets: sets, SetName: egress.DenySetName, Record: a.store.RecordDenyResolved, Forget: a.store.ForgetDenyResolved,
		Revoke: a.revokePreresolved, Log: a.log.With("component", "deny-preresolve")})
	if err != nil {
		return nil, err
	}
	_ = pr.Register(a.metrics.Registry)
	go func() { pr.Run(ctx); sets.Close() }()
	a.log.Info("pre-resolving exact Deny names", "max-names", a.cfg.DenyPreresolveMaxNames, "min-interval", a.cfg.DenyPreresolveMinInterval, "upstreams", rc.Upstreams)
	return egress.WithPlanObserver(pr.SetPlan), nil
}

// revokePreresolved ends the flows pods opened to addresses before they
// entered a Deny rule's pre-resolved set.
func (a *Agent) revokePreresolved(addrs []netip.Addr) {
	if a.enforcer == nil {
		return
	}
	if n, err := a.enforcer.RevokeTo(addrs...); err != nil {
		a.log.Warn("pre-resolved deny addresses: conntrack revocation failed", "err", err)
	} else if n > 0 {
		a.log.Info("revoked connections to pre-resolved deny addresses", "count", n)
	}
}

// watchDoHList re-reads --doh-resolvers when it changes and replaces the
// kernel set; a bad or empty file keeps the last good list.
func (a *Agent) watchDoHList(ctx context.Context) {
	if a.cfg.DoHResolvers == "" || a.sideDoors == nil || a.enforcer == nil {
		return
	}
	var last time.Time
	if fi, err := os.Stat(a.cfg.DoHResolvers); err == nil {
		last = fi.ModTime()
	}
	t := time.NewTicker(a.cfg.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(a.cfg.DoHResolvers)
		if err != nil || fi.ModTime().Equal(last) {
			continue
		}
		last = fi.ModTime()
		l, err := readDoHList(a.cfg.DoHResolvers)
		if err != nil {
			a.log.Error("--doh-resolvers unusable; the last good list stays in force", "err", err)
			continue
		}
		if err := a.enforcer.SetDoHResolvers(l.Prefixes()); err != nil {
			a.log.Error("--doh-resolvers: kernel set not updated", "err", err)
			continue
		}
		a.sideDoors.doh.Store(&l)
		a.log.Info("DoH resolver list reloaded", "entries", len(l))
	}
}

// bypassEvent reports a side-door packet the kernel dropped (nflog prefix
// egress.BypassLogPrefix + door) as dns.bypass.blocked.
func (a *Agent) bypassEvent(p egress.DeniedPacket) event.Event {
	door := strings.TrimPrefix(p.Prefix, egress.BypassLogPrefix)
	ev := event.Event{
		Time: p.Time, Name: event.DNSBypassBlocked, Client: p.Src.String(),
		Reason: "dns side door: " + door,
		Attrs: map[string]string{
			"server.address":        p.Dst.String(),
			"server.port":           strconv.Itoa(int(p.DstPort)),
			"network.transport":     strings.ToLower(string(p.Protocol)),
			"egressd.dns.side_door": door,
		},
	}
	if sd := a.sideDoors; sd != nil {
		if l := sd.doh.Load(); l != nil {
			if name, ok := l.NameOf(p.Dst); ok && name != "" {
				ev.Attrs["egressd.dns.resolver"] = name
			}
		}
	}
	if key, ok := a.store.WorkloadByIP(p.Src); ok {
		ev.Workload = key.String()
		ev.Namespace = key.Namespace
		s := a.engine.DNSBypass(key)
		if a.sideDoors != nil {
			s = a.sideDoors.node.Effective(key.Namespace, s)
		}
		if s.Policy.Name != "" {
			ev.Policy = s.Policy.String()
		}
		ev.Attrs["egressd.dns.bypass_action"] = string(s.Action)
	}
	return ev
}

// originalDestination returns where a query egressd answered was first sent
// when the kernel redirected it (side doors, --intercept-dns): "" otherwise.
func (a *Agent) originalDestination(ev event.Event) string {
	sd := a.sideDoors
	if sd == nil || sd.origDst == nil || ev.ClientPort == 0 {
		return ""
	}
	client, err := netip.ParseAddr(ev.Client)
	if err != nil {
		return ""
	}
	server := sd.to4
	if client.Is6() {
		server = sd.to6
	}
	if !server.IsValid() {
		return ""
	}
	proto := uint8(unix.IPPROTO_UDP)
	if ev.TCP {
		proto = unix.IPPROTO_TCP
	}
	dst, ok, err := sd.origDst.Lookup(proto, netip.AddrPortFrom(client, ev.ClientPort), server)
	if err != nil || !ok || dst == server {
		return ""
	}
	return dst.String()
}

// blockDoH is the L7 proxy's side-door check by name (l7.Checker.BlockDoH):
// the host name of a known DoH resolver, for a workload whose encrypted DNS
// is dropped, unless dst is one of its dnsBypass.resolvers.
func (a *Agent) blockDoH(w policy.WorkloadKey, name string, dst netip.Addr) bool {
	sd := a.sideDoors
	if sd == nil || sd.node.AllowEncrypted {
		return false
	}
	if l := sd.doh.Load(); l == nil || !l.HasName(name) {
		return false
	}
	s := sd.node.Effective(w.Namespace, a.engine.DNSBypass(w))
	if s.Action == policy.DNSBypassAllow || (dst.IsValid() && s.Exempt(dst)) {
		return false
	}
	return true
}

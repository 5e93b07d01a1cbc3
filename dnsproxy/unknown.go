package dnsproxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/policy"
)

// Who may use the resolver. With an Engine, every query is decided for the
// workload that owns its source address. A source that is no known workload
// is either
//   - served without policy, when Config.ServeUnknown allows it (by default
//     the node itself: its own addresses and loopback, for hostNetwork pods
//     and node processes), or
//   - a pod the store does not know yet: the query waits up to
//     Config.UnknownWait for the address to appear (policy.Store.
//     WaitWorkloadByIP, woken by every change of workloads) and is then
//     decided for it, or
//   - refused: REFUSED with an Extended DNS Error 18 (Prohibited) "egressd:
//     unknown client", reported as dns.lookup.blocked with reason
//     unknown-client (ReasonUnknownClient), and counted in
//     Stats.UnknownRefused.
//
// At most Config.MaxUnknownWaiters queries wait at once; the others are
// refused at once, so that a flood from unknown sources costs a bounded
// number of parked goroutines and never delays known workloads.

// ReasonUnknownClient is the Reason of the event of a query refused because
// its source is no known workload and not served without policy.
const ReasonUnknownClient = "unknown-client"

// unknownText is the EDE text of a refused unknown client.
const unknownText = "egressd: unknown client"

// Keywords of Config.ServeUnknown.
const (
	ServeUnknownNode = "node" // the node's own addresses and loopback
	ServeUnknownNone = "none" // no unknown source is served
)

// nodeAddrRefresh is the least time between two reads of the node's
// addresses (they are read again when an unknown source is not among them).
const nodeAddrRefresh = time.Second

// parseServeUnknown parses Config.ServeUnknown: prefixes or addresses, and
// the keywords ServeUnknownNode and ServeUnknownNone (alone).
func parseServeUnknown(list []string) (prefixes []netip.Prefix, node bool, err error) {
	none := false
	for _, s := range list {
		s = strings.TrimSpace(s)
		switch {
		case s == ServeUnknownNode:
			node = true
		case s == ServeUnknownNone:
			none = true
		case strings.Contains(s, "/"):
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, false, fmt.Errorf("%q is not a CIDR prefix (%v)", truncate(s), err)
			}
			if p.Addr().Is4In6() {
				if p.Bits() < 96 {
					return nil, false, fmt.Errorf("%q mixes IPv4-mapped and other IPv6 addresses", truncate(s))
				}
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			prefixes = append(prefixes, p.Masked())
		default:
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, false, fmt.Errorf("%q is not an address, a CIDR prefix, %q or %q", truncate(s), ServeUnknownNode, ServeUnknownNone)
			}
			a = a.Unmap()
			prefixes = append(prefixes, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	if none && (node || len(prefixes) > 0) {
		return nil, false, fmt.Errorf("%q excludes every other entry", ServeUnknownNone)
	}
	return prefixes, node, nil
}

// truncate shortens s for an error message.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

var loopbacks = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// unknownClients decides about sources that are no known workload.
type unknownClients struct {
	prefixes []netip.Prefix
	node     bool
	wait     time.Duration
	waiters  atomic.Int64
	maxWait  int64
	addrs    func() ([]net.Addr, error) // the node's addresses (net.InterfaceAddrs)

	mu       sync.Mutex // serializes reads of the node's addresses
	local    atomic.Pointer[map[netip.Addr]struct{}]
	readLast atomic.Int64 // Unix nanoseconds of the last read
}

func newUnknownClients(s *settings) *unknownClients {
	u := &unknownClients{prefixes: slices.Clone(s.serveUnknown), node: s.serveNode, wait: s.UnknownWait,
		maxWait: int64(s.MaxUnknownWaiters), addrs: net.InterfaceAddrs}
	if u.node {
		u.prefixes = append(u.prefixes, loopbacks...)
	}
	return u
}

// served reports whether an unknown source is served without policy.
func (u *unknownClients) served(ip netip.Addr, now time.Time) bool {
	for _, p := range u.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	if !u.node {
		return false
	}
	if m := u.local.Load(); m != nil {
		if _, ok := (*m)[ip]; ok {
			return true
		}
	}
	// Not among the node's addresses as last read: read them again, at most
	// once per nodeAddrRefresh (an address added since, as the listen
	// address on the dummy interface, or a new interface). Misses in
	// between cost no lock.
	recent := func() bool {
		last := time.Unix(0, u.readLast.Load())
		return u.local.Load() != nil && now.Sub(last) < nodeAddrRefresh && !now.Before(last)
	}
	if recent() {
		return false
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if recent() { // read by another query meanwhile
		_, ok := (*u.local.Load())[ip]
		return ok
	}
	u.readLast.Store(now.UnixNano())
	addrs, err := u.addrs()
	if err != nil {
		if u.local.Load() == nil { // keeps the reads at one per nodeAddrRefresh
			u.local.Store(&map[netip.Addr]struct{}{})
		}
		return false // fail closed; read again after nodeAddrRefresh
	}
	m := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
		if na, ok := netip.AddrFromSlice(ip); ok {
			m[na.Unmap()] = struct{}{} // the address itself, never its subnet
		}
	}
	u.local.Store(&m)
	_, ok := m[ip]
	return ok
}

// clientWorkload returns the workload of the query's source: nil for a
// source served without policy, and then refused is nil too; refused is the
// reply to a source that is no workload and not served without policy.
func (srv *Server) clientWorkload(ctx context.Context, req *request) (wl *policy.Workload, refused *dns.Msg) {
	store := srv.deps.Engine.Store()
	key, ok := store.WorkloadByIP(req.client)
	if !ok {
		if srv.unknown.served(req.client, srv.now()) {
			srv.st.unknownServed.Add(1)
			return nil, nil
		}
		key, ok = srv.waitWorkload(ctx, req.client)
	}
	if ok {
		if w, ok := store.Workload(key); ok {
			return &w, nil
		}
	}
	// The source is no workload (or its workload went away meanwhile).
	srv.st.unknownRefused.Add(1)
	req.result = ResultRefused
	m := srv.rcode(req, dns.RcodeRefused)
	srv.addEDE(req, m, dns.ExtendedErrorCodeProhibited, unknownText)
	srv.deps.Events.Emit(ctx, srv.event(req, nil, event.LookupBlocked,
		policy.Outcome{Verdict: policy.Deny, Reason: ReasonUnknownClient}, dns.RcodeToString[m.Rcode]))
	return nil, m
}

// waitWorkload waits up to UnknownWait for a workload to own ip, unless
// MaxUnknownWaiters queries wait already.
func (srv *Server) waitWorkload(ctx context.Context, ip netip.Addr) (policy.WorkloadKey, bool) {
	u := srv.unknown
	if u.wait <= 0 {
		return policy.WorkloadKey{}, false
	}
	if n := u.waiters.Add(1); n > u.maxWait {
		u.waiters.Add(-1)
		srv.st.unknownWaitsFull.Add(1)
		return policy.WorkloadKey{}, false
	}
	defer u.waiters.Add(-1)
	srv.st.unknownWaits.Add(1)
	wctx, cancel := context.WithTimeout(ctx, u.wait)
	defer cancel()
	return srv.deps.Engine.Store().WaitWorkloadByIP(wctx, ip)
}

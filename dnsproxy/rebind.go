package dnsproxy

import (
	"context"
	"net/netip"
	"strings"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"

	"github.com/egressd/egressd/policy"
)

// DNS rebinding protection (dnsmasq's --stop-dns-rebind is the model): an
// upstream answer must not make a pod's allowed name point at the node
// itself, the cloud metadata service or the cluster's own addresses — the
// address would be written into the allow set of the name's rule, opening
// what the policy never named. Such addresses are dropped from every answer
// before it is programmed or sent; when none is left, the reply is what
// dnsmasq answers: NOERROR without records (NODATA) and an Extended DNS
// Error 15 (Blocked).

// Rebinding ranges, the values of Event.Reason's suffix and of the range
// label of the metric (Observer.Rebinding).
const (
	RebindUnspecified = "unspecified" // 0.0.0.0/8, ::/128
	RebindLoopback    = "loopback"    // 127.0.0.0/8, ::1/128
	RebindLinkLocal   = "link-local"  // 169.254.0.0/16 (metadata services), fe80::/10
	RebindNode        = "node"        // Config.RebindNodeAddrs
	RebindCluster     = "cluster"     // Config.RebindClusterCIDRs
)

// RebindRanges lists the range names, in a stable order.
var RebindRanges = []string{RebindUnspecified, RebindLoopback, RebindLinkLocal, RebindNode, RebindCluster}

// AttrRebindDropped is the dns.rebinding.blocked attribute listing the
// addresses dropped from one answer ("169.254.169.254 (link-local), ...", at
// most maxReportedDrops); the event's Reason is "rebinding-<range>" of the
// first one.
const AttrRebindDropped = "egressd.rebinding.dropped"

var builtinRebind = []struct {
	p   netip.Prefix
	rng string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), RebindUnspecified},
	{netip.MustParsePrefix("::/128"), RebindUnspecified},
	{netip.MustParsePrefix("127.0.0.0/8"), RebindLoopback},
	{netip.MustParsePrefix("::1/128"), RebindLoopback},
	{netip.MustParsePrefix("169.254.0.0/16"), RebindLinkLocal},
	{netip.MustParsePrefix("fe80::/10"), RebindLinkLocal},
}

// rebindRange returns the rebinding range ip falls in ("" when none, or when
// RebindAllow excepts it). The node and cluster ranges do not apply to
// answers of names in the cluster domain or a search domain (clusterName,
// asked only when ip is in one of them): those resolve to Services, pods
// and host-network pods by design.
func (s *settings) rebindRange(ip netip.Addr, clusterName func() bool) string {
	ip = ip.Unmap()
	for _, p := range s.RebindAllow {
		if p.Contains(ip) {
			return ""
		}
	}
	for _, b := range builtinRebind {
		if b.p.Contains(ip) {
			return b.rng
		}
	}
	rng := ""
	for _, a := range s.RebindNodeAddrs {
		if a.Unmap() == ip {
			rng = RebindNode
			break
		}
	}
	if rng == "" {
		for _, p := range s.RebindClusterCIDRs {
			if p.Contains(ip) {
				rng = RebindCluster
				break
			}
		}
	}
	if rng != "" && clusterName() {
		return ""
	}
	return rng
}

// clusterName returns whether qname is exempt from FQDN rules (cluster
// domain, search domains), as the engine says, computed on first use;
// without an engine no name is.
func (srv *Server) clusterName(qname string) func() bool {
	known, v := false, false
	return func() bool {
		if !known {
			eng := srv.deps.Engine
			known = true
			v = eng != nil && eng.DecideLookup(policy.WorkloadKey{}, qname).Reason == policy.ReasonClusterDomain
		}
		return v
	}
}

// droppedAddr is an answer address removed by rebinding protection.
type droppedAddr struct {
	ip  netip.Addr
	rng string
}

// rebindFilter removes from the answer section of reply (the caller's own
// copy) the A/AAAA records in a rebinding range and returns them. When it
// removed every address of the answer, the answer section is emptied
// (CNAMEs included: NODATA, as dnsmasq answers).
func (srv *Server) rebindFilter(reply *dns.Msg) []droppedAddr {
	if srv.s.rebindOff || len(reply.Question) != 1 || len(reply.Answer) == 0 {
		return nil
	}
	var dropped []droppedAddr
	cluster := srv.clusterName(reply.Question[0].Name)
	kept := reply.Answer[:0]
	addrs := 0
	for _, rr := range reply.Answer {
		ip, ok := chain.Addr(rr)
		if !ok {
			kept = append(kept, rr)
			continue
		}
		addrs++
		if rng := srv.s.rebindRange(ip, cluster); rng != "" {
			dropped = append(dropped, droppedAddr{ip.Unmap(), rng})
			continue
		}
		kept = append(kept, rr)
	}
	clear(reply.Answer[len(kept):])
	reply.Answer = kept
	if len(dropped) > 0 && len(dropped) == addrs {
		reply.Answer = nil
	}
	return dropped
}

// rebindProtect filters reply (rebindFilter) and reports what it dropped:
// counted (Stats.RebindDropped, Observer.Rebinding) and a
// dns.rebinding.blocked event. A reply left without addresses gets an EDE 15
// (Blocked) naming the first address dropped.
func (srv *Server) rebindProtect(ctx context.Context, req *request, wl *policy.Workload, reply *dns.Msg) {
	dropped := srv.rebindFilter(reply)
	if len(dropped) == 0 {
		return
	}
	srv.st.rebindDropped.Add(uint64(len(dropped)))
	if f := srv.deps.Observer.Rebinding; f != nil {
		for _, d := range dropped {
			f(d.rng)
		}
	}
	if len(reply.Answer) == 0 {
		text := "egressd: rebinding: " + dropped[0].ip.String() + " (" + dropped[0].rng + ") dropped"
		if len(dropped) > 1 {
			text = "egressd: rebinding: " + dropped[0].ip.String() + " (" + dropped[0].rng + ") and more dropped"
		}
		srv.addEDE(req, reply, dns.ExtendedErrorCodeBlocked, text)
	}
	ev := srv.event(req, wl, event.RebindingBlocked, policy.Outcome{Reason: "rebinding-" + dropped[0].rng}, dns.RcodeToString[reply.Rcode])
	var list strings.Builder
	for i, d := range dropped {
		if i == maxReportedDrops {
			break
		}
		if i > 0 {
			list.WriteString(", ")
		}
		list.WriteString(d.ip.String() + " (" + d.rng + ")")
	}
	ev.Attrs = map[string]string{AttrRebindDropped: list.String()}
	srv.deps.Events.Emit(ctx, ev)
}

// maxReportedDrops bounds the addresses listed in one event.
const maxReportedDrops = 16

// rebindHit reports whether the packed answer of the fast path carries an
// address rebinding protection drops (the slow path then answers). The
// result is computed once per packed answer: the settings do not change.
func (srv *Server) rebindHit(wf *wireForm) bool {
	switch wf.rebind.Load() {
	case 1:
		return false
	case 2:
		return true
	}
	hit := false
	if !srv.s.rebindOff && len(wf.addrs) > 0 {
		cluster := srv.clusterName(wf.name)
		for _, a := range wf.addrs {
			if srv.s.rebindRange(a.ip, cluster) != "" {
				hit = true
				break
			}
		}
	}
	v := int32(1)
	if hit {
		v = 2
	}
	wf.rebind.Store(v)
	return hit
}

// ParsePrefixList parses a comma-separated list of CIDRs and bare addresses
// (taken as /32 or /128), as the rebinding flags give them.
func ParsePrefixList(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if a, err := netip.ParseAddr(part); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

package egress

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/egressd/egressd/egress/nftmodel"
	"github.com/egressd/egressd/policy"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Conntrack is read and pruned with github.com/vishvananda/netlink: it is
// already a dependency (pod plumbing in tests, the local interface), takes a
// handle bound to the node's network namespace, and its ConntrackDeleteFilters
// accepts a custom filter, so one dump and the deletes of the denied entries
// happen in a single call without a second library.

// Revoke deletes the conntrack entries whose original source or destination is
// an enforced workload of the last applied plan and that decide now denies. It
// returns how many entries were deleted. Allowed flows are never touched.
func (e *Enforcer) Revoke(ctx context.Context, decide func(policy.Connection) policy.Verdict) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if e.st == nil || e.st.plan == nil {
		return 0, errors.New("egress: nothing applied yet")
	}
	return e.revokeLocked(e.st.plan, decide)
}

type revokeFilter struct {
	enforced map[netip.Addr]bool
	exempt   map[netip.AddrPort]bool
	decide   func(policy.Connection) policy.Verdict
}

func (f *revokeFilter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	proto, ok := nftmodel.ProtoOf(flow.Forward.Protocol)
	if !ok {
		return false
	}
	src, ok1 := netip.AddrFromSlice(flow.Forward.SrcIP)
	dst, ok2 := netip.AddrFromSlice(flow.Forward.DstIP)
	if !ok1 || !ok2 {
		return false
	}
	src, dst = src.Unmap(), dst.Unmap()
	if !f.enforced[src] && !f.enforced[dst] {
		return false
	}
	if f.exempt[netip.AddrPortFrom(dst, flow.Forward.DstPort)] && proto != policy.ProtocolSCTP {
		return false
	}
	c := policy.Connection{Src: src, Dst: dst, Port: int32(flow.Forward.DstPort), Protocol: proto}
	return f.decide(c) == policy.Deny
}

func (e *Enforcer) revokeLocked(plan *policy.Plan, decide func(policy.Connection) policy.Verdict) (int, error) {
	f := &revokeFilter{enforced: map[netip.Addr]bool{}, exempt: map[netip.AddrPort]bool{}, decide: decide}
	for _, w := range plan.Workloads {
		if e.enforced(w) {
			for _, ip := range w.IPs {
				f.enforced[ip.Unmap()] = true
			}
		}
	}
	if len(f.enforced) == 0 {
		return 0, nil
	}
	for _, ap := range e.opts.dnsExempt {
		f.exempt[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
	}
	var h *netlink.Handle
	var err error
	if e.opts.netns > 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(e.opts.netns), unix.NETLINK_NETFILTER)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return 0, fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	total := 0
	var errs error
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, f)
		total += int(n)
		if err != nil {
			errs = errors.Join(errs, err)
		}
	}
	return total, errs
}

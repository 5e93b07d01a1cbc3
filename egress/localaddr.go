package egress

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EnsureLocalAddrs makes every --listen address that is not assigned to an
// interface of the node local, the way NodeLocal DNSCache does: it creates the
// dummy interface name (if missing), brings it up and adds the address as a
// host route (/32 or /128). Wildcard and loopback addresses are left alone.
// On a kernel without the dummy driver the addresses go on lo instead. The
// interface and addresses are kept on shutdown: a successor binds them
// during a handover, and while no agent runs, lookups sent there fail closed.
// An empty name turns this off (the addresses must then exist).
func EnsureLocalAddrs(log *slog.Logger, name string, listen []string) error {
	if name == "" {
		return nil
	}
	var want []netip.Addr
	for _, l := range listen {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			return fmt.Errorf("--listen %q: %w", l, err)
		}
		ip := ap.Addr().Unmap()
		if ip.IsUnspecified() || ip.IsLoopback() {
			continue
		}
		assigned, err := addrAssigned(ip)
		if err != nil {
			return err
		}
		if !assigned {
			want = append(want, ip)
		}
	}
	if len(want) == 0 {
		return nil
	}
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		la := netlink.NewLinkAttrs()
		la.Name = name
		err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: la})
		if errors.Is(err, unix.EOPNOTSUPP) {
			// A kernel without the dummy driver: the loopback interface
			// serves the same purpose (a local address no pod owns).
			log.Warn("kernel has no dummy interfaces; listen addresses go on lo", "interface", name)
			if link, err = netlink.LinkByName("lo"); err != nil {
				return fmt.Errorf("--local-interface: lo: %w", err)
			}
			name = "lo"
			break
		}
		if err != nil {
			return fmt.Errorf("--local-interface: create dummy interface %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return fmt.Errorf("--local-interface %s: %w", name, err)
		}
		log.Info("created local interface", "interface", name)
	case err != nil:
		return fmt.Errorf("--local-interface %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("--local-interface %s: set up: %w", name, err)
	}
	for _, ip := range want {
		bits := 32
		if ip.Is6() {
			bits = 128
		}
		a := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if ip.Is6() {
			a.Flags = unix.IFA_F_NODAD // usable at once, no duplicate address detection delay
		}
		if err := netlink.AddrReplace(link, a); err != nil {
			return fmt.Errorf("--local-interface %s: add %s: %w", name, ip, err)
		}
		log.Info("listen address added to local interface", "interface", name, "address", ip.String())
	}
	return nil
}

// addrAssigned reports whether ip is assigned to an interface of the node.
func addrAssigned(ip netip.Addr) (bool, error) {
	family := netlink.FAMILY_V4
	if ip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(nil, family)
	if err != nil {
		return false, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
			return true, nil
		}
	}
	return false, nil
}

// NodeAddrs lists the addresses of the node's interfaces (those of the
// namespace the agent runs in): rebinding protection drops them from answers.
func NodeAddrs() ([]netip.Addr, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

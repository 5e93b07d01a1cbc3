package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"

	"github.com/egressd/egressd/source/kube"
)

// uninstallCheckTimeout bounds the API request that tells a final stop from a
// hand-over; without an answer the state stays (fail closed).
const uninstallCheckTimeout = 5 * time.Second

// stopDataplane runs last when the agent stops. Normally it leaves the kernel
// state in place for the next agent (rolling update, restart: enforcement and
// the DNS interception continue). When the agent's DaemonSet (--daemonset) is
// gone, this is an uninstall: it removes what the agent owns, so that pods'
// DNS and traffic work without it (docs/kubernetes.md, Uninstall).
func (a *Agent) stopDataplane() {
	if a.finalStop() {
		a.removeOwnedState()
	}
	if err := a.enforcer.Close(); err != nil {
		a.log.Warn("dataplane close", "err", err)
	}
}

// finalStop reports whether the DaemonSet named by --daemonset is gone.
func (a *Agent) finalStop() bool {
	if a.cfg.DaemonSet == "" || !a.cfg.kubeMode() {
		return false
	}
	ns, name, _ := strings.Cut(a.cfg.DaemonSet, "/")
	rc, err := a.cfg.restConfig()
	if err != nil {
		a.log.Warn("stopping: cannot tell an uninstall from a hand-over; kernel state kept", "err", err)
		return false
	}
	rc.Timeout = uninstallCheckTimeout
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		a.log.Warn("stopping: cannot tell an uninstall from a hand-over; kernel state kept", "err", err)
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), uninstallCheckTimeout)
	defer cancel()
	gone, why, err := kube.Uninstalled(ctx, kc, ns, name)
	if err != nil {
		a.log.Warn("stopping: cannot tell an uninstall from a hand-over; kernel state kept", "err", err)
		return false
	}
	if !gone {
		a.log.Info("stopping: kernel state kept for the next agent", "daemonset", a.cfg.DaemonSet)
		return false
	}
	a.log.Info("stopping for good: removing the agent's kernel state", "reason", why)
	return true
}

// removeOwnedState deletes the nftables table (policy, FQDN sets, DNS
// interception), the local interface the listen addresses were put on (or
// those addresses on lo) and the checkpoint file.
func (a *Agent) removeOwnedState() {
	ctx, cancel := context.WithTimeout(context.Background(), uninstallCheckTimeout)
	defer cancel()
	if err := a.enforcer.Remove(ctx); err != nil {
		a.log.Error("uninstall: nftables table not removed", "table", a.enforcer.Table(), "err", err)
	} else {
		a.log.Info("uninstall: nftables table removed", "table", a.enforcer.Table())
	}
	if err := removeLocalAddrs(a.cfg.LocalInterface, a.cfg.Listen); err != nil {
		a.log.Error("uninstall: local resolver addresses not removed", "err", err)
	}
	if a.cfg.StateFile != "" {
		if err := os.Remove(a.cfg.StateFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			a.log.Warn("uninstall: checkpoint not removed", "err", err)
		}
	}
}

// removeLocalAddrs undoes ensureLocalAddrs: it deletes the dummy interface
// name, or, where the kernel has no dummy driver and the addresses went on
// lo, the --listen host addresses (/32, /128) on lo.
func removeLocalAddrs(name string, listen []string) error {
	if name == "" {
		return nil
	}
	var errs []error
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	case link.Type() == "dummy":
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", name, err))
		}
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range listen {
		ap, err := netip.ParseAddrPort(l)
		if err != nil {
			continue
		}
		ip := ap.Addr().Unmap()
		if ip.IsUnspecified() || ip.IsLoopback() {
			continue
		}
		bits := ip.BitLen()
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
		if err := netlink.AddrDel(lo, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("lo: delete %s: %w", ip, err))
		}
	}
	return errors.Join(errs...)
}

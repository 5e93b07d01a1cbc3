package egress

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// DNSInterceptChain is the nat chain (hook prerouting, priority dstnat - 5)
// that sends pods' DNS for the cluster DNS Service to the node resolver, so pods
// need no change. It runs strictly before kube-proxy's Service DNAT (priority
// dstnat): of two nat chains the first to DNAT a new flow decides it, and the
// kernel promises no order between chains of equal priority. Like the L7 redirect it is not part of a Plan, and full applies
// leave it in place.
const DNSInterceptChain = "l7_dns_intercept"

// dnsInterceptPrio is dstnat - 5, the side-door redirect's priority: both
// egressd chains send port 53 to the resolver, before kube-proxy.
const dnsInterceptPrio = sdNATPrio

// DNSIntercept says which DNS destinations are redirected to the resolver.
type DNSIntercept struct {
	Table string // default DefaultTable
	NetNS int    // network namespace fd; 0: the current one
	// Services are the cluster DNS Service addresses (UDP and TCP are both
	// intercepted on each port).
	Services []netip.AddrPort
	// To4 and To6 are the resolver's addresses; a family without one is not
	// intercepted.
	To4, To6 netip.AddrPort
}

// ApplyDNSIntercept installs or replaces the interception rules in one
// transaction. While the agent is down the rules stay: intercepted lookups then
// fail (nothing answers on the resolver address) instead of bypassing policy.
func ApplyDNSIntercept(d DNSIntercept) error {
	if len(d.Services) == 0 {
		return errors.New("egress: dns intercept: no service address")
	}
	r := Redirect{Table: d.Table, NetNS: d.NetNS}
	c, t, err := r.conn()
	if err != nil {
		return err
	}
	c.AddTable(t)
	// A chain left by an earlier release at another priority (it used dstnat,
	// tied with kube-proxy) is replaced in the same transaction: a base
	// chain's priority cannot be changed in place.
	chains, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return fmt.Errorf("egress: dns intercept: list chains: %w", err)
	}
	for _, old := range chains {
		if old.Table.Name == t.Name && old.Name == DNSInterceptChain && (old.Priority == nil || *old.Priority != *nftables.ChainPriorityRef(dnsInterceptPrio)) {
			c.FlushChain(old)
			c.DelChain(old)
		}
	}
	pol := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: DNSInterceptChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(dnsInterceptPrio), Policy: &pol})
	c.FlushChain(ch)
	n := 0
	for _, svc := range d.Services {
		to, family := d.To4, byte(unix.NFPROTO_IPV4)
		if svc.Addr().Unmap().Is6() {
			to, family = d.To6, unix.NFPROTO_IPV6
		}
		if !to.IsValid() {
			return fmt.Errorf("egress: dns intercept: %s: the resolver listens on no address of that family", svc)
		}
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: interceptExprs(family, svc, proto, to)})
			n++
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("egress: dns intercept: %w", err)
	}
	return nil
}

// interceptExprs: meta nfproto F; <daddr> == svc; meta l4proto P; th dport == port;
// counter; dnat to resolver.
func interceptExprs(family byte, svc netip.AddrPort, proto byte, to netip.AddrPort) []expr.Any {
	off, l := uint32(16), uint32(4) // IPv4 daddr
	if family == unix.NFPROTO_IPV6 {
		off, l = 24, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: svc.Addr().Unmap().AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(svc.Port())},
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: to.Addr().Unmap().AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(family), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

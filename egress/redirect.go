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

// Objects of the L7 redirect (egress/l7 transparent mode), in the enforcer's
// table. They are not part of a Plan; the enforcer leaves every "l7_" object
// alone, also when it adopts the table on a full Apply, so a redirect survives
// policy syncs and agent restarts. ApplyRedirect is idempotent and cheap.
const (
	RedirectChain    = "l7_redirect" // hook prerouting, type nat, priority dstnat
	redirectSrc4     = "l7_src_v4"   // selected workload addresses
	redirectSrc6     = "l7_src_v6"
	redirectPortsSet = "l7_ports" // redirected TCP destination ports
)

// Redirect describes which connections go to the transparent proxy:
//
//	chain l7_redirect { type nat hook prerouting priority dstnat; policy accept;
//	  ip saddr @l7_src_v4 tcp dport @l7_ports counter dnat ip to <To4>
//	  ip6 saddr @l7_src_v6 tcp dport @l7_ports counter dnat ip6 to <To6> }
//
// The proxy reads the pre-NAT destination with SO_ORIGINAL_DST (IPv4) or
// IP6T_SO_ORIGINAL_DST (IPv6). To4/To6 must be node-local addresses the proxy
// listens on and that the egress_local chain accepts from pods
// (WithDNSExempt). A family without a To address is not redirected (its rule
// is left out); at least one is required.
type Redirect struct {
	Table   string   // default DefaultTable
	NetNS   int      // network namespace fd; 0: the current one
	Ports   []uint16 // default 80, 443
	To4     netip.AddrPort
	To6     netip.AddrPort
	Sources []netip.Addr // workload addresses to redirect
}

func (r *Redirect) conn() (*nftables.Conn, *nftables.Table, error) {
	name := r.Table
	if name == "" {
		name = DefaultTable
	}
	var opts []nftables.ConnOption
	if r.NetNS > 0 {
		opts = append(opts, nftables.WithNetNSFd(r.NetNS))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("egress: redirect: netlink: %w", err)
	}
	return c, &nftables.Table{Name: name, Family: nftables.TableFamilyINet}, nil
}

// ApplyRedirect installs or updates the redirect in one transaction.
func ApplyRedirect(r Redirect) error {
	if !r.To4.IsValid() && !r.To6.IsValid() {
		return errors.New("egress: redirect: no proxy address (To4, To6)")
	}
	if r.To4.IsValid() && !r.To4.Addr().Is4() {
		return errors.New("egress: redirect: To4 must be an IPv4 address:port")
	}
	if r.To6.IsValid() && (!r.To6.Addr().Is6() || r.To6.Addr().Is4In6()) {
		return errors.New("egress: redirect: To6 must be an IPv6 address:port")
	}
	ports := r.Ports
	if len(ports) == 0 {
		ports = []uint16{80, 443}
	}
	c, t, err := r.conn()
	if err != nil {
		return err
	}
	c.AddTable(t)
	src4 := &nftables.Set{Table: t, Name: redirectSrc4, KeyType: nftables.TypeIPAddr}
	src6 := &nftables.Set{Table: t, Name: redirectSrc6, KeyType: nftables.TypeIP6Addr}
	pset := &nftables.Set{Table: t, Name: redirectPortsSet, KeyType: nftables.TypeInetService}
	var e4, e6, ep []nftables.SetElement
	for _, a := range r.Sources {
		a = a.Unmap()
		if a.Is4() {
			b := a.As4()
			e4 = append(e4, nftables.SetElement{Key: b[:]})
		} else if a.Is6() {
			b := a.As16()
			e6 = append(e6, nftables.SetElement{Key: b[:]})
		}
	}
	for _, p := range ports {
		ep = append(ep, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)})
	}
	for _, s := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{{src4, e4}, {src6, e6}, {pset, ep}} {
		if err := c.AddSet(s.set, nil); err != nil {
			return fmt.Errorf("egress: redirect: set %s: %w", s.set.Name, err)
		}
		c.FlushSet(s.set)
		for i := 0; i < len(s.elems); i += elemChunk {
			if err := c.SetAddElements(s.set, s.elems[i:min(i+elemChunk, len(s.elems))]); err != nil {
				return fmt.Errorf("egress: redirect: set %s: %w", s.set.Name, err)
			}
		}
	}
	pol := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: RedirectChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: &pol})
	c.FlushChain(ch)
	if r.To4.IsValid() {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: redirectExprs(unix.NFPROTO_IPV4, src4, pset, r.To4)})
	}
	if r.To6.IsValid() {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: redirectExprs(unix.NFPROTO_IPV6, src6, pset, r.To6)})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("egress: redirect: %w", err)
	}
	return nil
}

func redirectExprs(family byte, src, ports *nftables.Set, to netip.AddrPort) []expr.Any {
	off, l := uint32(12), uint32(4) // IPv4 saddr
	if family == unix.NFPROTO_IPV6 {
		off, l = 8, 16
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: l},
		&expr.Lookup{SourceRegister: 1, SetName: src.Name, SetID: src.ID},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: ports.Name, SetID: ports.ID},
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: to.Addr().AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(family), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
}

// RedirectInstalled reports whether the redirect chain exists (a full Apply
// of the enforcer removes it).
func RedirectInstalled(table string, netns int) (bool, error) {
	r := Redirect{Table: table, NetNS: netns}
	c, t, err := r.conn()
	if err != nil {
		return false, err
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, err
	}
	for _, ch := range chains {
		if ch.Table.Name == t.Name && ch.Name == RedirectChain {
			return true, nil
		}
	}
	return false, nil
}

// RemoveRedirect deletes the redirect chain and its sets, if present.
func RemoveRedirect(table string, netns int) error {
	ok, err := RedirectInstalled(table, netns)
	if err != nil || !ok {
		return err
	}
	r := Redirect{Table: table, NetNS: netns}
	c, t, err := r.conn()
	if err != nil {
		return err
	}
	c.DelChain(&nftables.Chain{Name: RedirectChain, Table: t})
	for _, n := range []string{redirectSrc4, redirectSrc6, redirectPortsSet} {
		c.DelSet(&nftables.Set{Table: t, Name: n})
	}
	return c.Flush()
}

package nftmodel

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/egressd/egressd/policy"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// conntrack state bits (NF_CT_STATE_*).
const (
	ctInvalid     = 1      // NF_CT_STATE_INVALID_BIT
	CtEstablished = 1 << 1 // NF_CT_STATE_BIT(IP_CT_ESTABLISHED)
	CtRelated     = 1 << 2 // NF_CT_STATE_BIT(IP_CT_RELATED)
)

// registers: NFT_REG_1 is NFT_REG32_00..03; concatenations use 32-bit registers.
const (
	Reg1    = 1
	reg2    = 2 // NFT_REG32_04
	reg3200 = 8
)

func reg32(i uint32) uint32 { return reg3200 + i }

// NfprotoOf is the NFPROTO value of a family.
func NfprotoOf(f Fam) byte {
	if f == Fam6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

// AddrPayload loads the source (src) or destination address of a family
// into dreg.
func AddrPayload(f Fam, src bool, dreg uint32) *expr.Payload {
	p := &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: dreg, Base: expr.PayloadBaseNetworkHeader}
	if f == Fam6 {
		p.Len = 16
		p.Offset = 24
		if src {
			p.Offset = 8
		}
	} else {
		p.Len = 4
		p.Offset = 16
		if src {
			p.Offset = 12
		}
	}
	return p
}

// DportPayload loads the transport destination port into dreg.
func DportPayload(dreg uint32) *expr.Payload {
	return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: dreg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

// encoder turns the model into google/nftables objects and expressions for
// one table.
type Encoder struct {
	Table     *nftables.Table
	LogGroup  int    // nflog group of drops; negative: no log
	LogPrefix string // nflog prefix of drops
}

// chain returns the nftables object of a chain.
func (enc *Encoder) Chain(c *Chain) *nftables.Chain {
	ch := &nftables.Chain{Name: c.Name, Table: enc.Table}
	if c.Base != nil {
		ch.Type = nftables.ChainTypeFilter
		ch.Hooknum = nftables.ChainHookForward
		if c.Base.input {
			ch.Hooknum = nftables.ChainHookInput
		}
		ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(c.Base.priority))
		pol := nftables.ChainPolicyAccept
		ch.Policy = &pol
	}
	return ch
}

// exprs turns a rule into nftables expressions; anon adds the anonymous set
// of a port list and returns its name and ID.
func (enc *Encoder) Exprs(r *Rule, anon func(*Match) (string, uint32)) []expr.Any {
	var out []expr.Any
	if r.Fam != FamAny {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: Reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: []byte{NfprotoOf(r.Fam)}})
	}
	for i := range r.m {
		m := &r.m[i]
		switch m.kind {
		case mAddrSet:
			out = append(out, AddrPayload(r.Fam, m.src, Reg1), &expr.Lookup{SourceRegister: Reg1, SetName: m.set})
		case mFQDN:
			second := uint32(reg32(1))
			if r.Fam == Fam6 {
				second = reg2
			}
			out = append(out, AddrPayload(r.Fam, true, Reg1), AddrPayload(r.Fam, false, second),
				&expr.Lookup{SourceRegister: Reg1, SetName: m.set})
		case mNamedPort:
			pr, po := reg32(1), reg32(2)
			if r.Fam == Fam6 {
				pr, po = reg32(4), reg32(5)
			}
			out = append(out, AddrPayload(r.Fam, false, Reg1),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: pr},
				DportPayload(po),
				&expr.Lookup{SourceRegister: Reg1, SetName: m.set})
		case mProto:
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: Reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: []byte{m.proto}})
		case mDport:
			out = append(out, DportPayload(Reg1))
			if m.lo == m.hi {
				out = append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: binaryutil.BigEndian.PutUint16(m.lo)})
			} else {
				out = append(out, &expr.Range{Op: expr.CmpOpEq, Register: Reg1, FromData: binaryutil.BigEndian.PutUint16(m.lo), ToData: binaryutil.BigEndian.PutUint16(m.hi)})
			}
		case mCtState:
			out = append(out,
				&expr.Ct{Register: Reg1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: Reg1, DestRegister: Reg1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(m.ct), Xor: binaryutil.NativeEndian.PutUint32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: Reg1, Data: []byte{0, 0, 0, 0}})
		case mDaddr:
			out = append(out, AddrPayload(r.Fam, false, Reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: m.addr.AsSlice()})
		case mAddrRange:
			out = append(out, AddrPayload(r.Fam, m.src, Reg1))
			if m.addr == m.last {
				out = append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: Reg1, Data: m.addr.AsSlice()})
			} else {
				out = append(out, &expr.Range{Op: expr.CmpOpEq, Register: Reg1, FromData: m.addr.AsSlice(), ToData: m.last.AsSlice()})
			}
		case mPortSet:
			name, id := anon(m)
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: Reg1},
				DportPayload(reg32(1)),
				&expr.Lookup{SourceRegister: Reg1, SetName: name, SetID: id})
		}
	}
	if r.counter {
		out = append(out, &expr.Counter{})
	}
	switch r.v {
	case VAccept:
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	case VDrop:
		if r.log && enc.LogGroup >= 0 {
			out = append(out, &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: uint16(enc.LogGroup), Data: []byte(enc.LogPrefix)})
		}
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	case VReturn:
		out = append(out, &expr.Verdict{Kind: expr.VerdictReturn})
	case VJump:
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.target})
	case VGoto:
		out = append(out, &expr.Verdict{Kind: expr.VerdictGoto, Chain: r.target})
	case VVmap:
		out = append(out, AddrPayload(r.Fam, r.vmapSrc, Reg1),
			&expr.Lookup{SourceRegister: Reg1, DestRegister: 0, IsDestRegSet: true, SetName: r.target})
	}
	return out
}

// --- set objects ----------------------------------------------------------------

// AddrType is the set key type of an address of a family.
func AddrType(f Fam) nftables.SetDatatype {
	if f == Fam6 {
		return nftables.TypeIP6Addr
	}
	return nftables.TypeIPAddr
}

// set returns the nftables object of a set definition.
func (enc *Encoder) Set(s *Set) *nftables.Set {
	ns := &nftables.Set{Table: enc.Table, Name: s.Name, KeyByteOrder: binaryutil.BigEndian}
	switch s.Kind {
	case SkPrefix:
		ns.KeyType = AddrType(s.Fam)
		ns.Interval = true
	case SkNamedPort:
		ns.KeyType = nftables.MustConcatSetType(AddrType(s.Fam), nftables.TypeInetProto, nftables.TypeInetService)
		ns.Concatenation = true
	case SkFQDN:
		// Same definition as ipset/nftset.NFTSet for KindAddrPair with timeouts,
		// so the resolver's Manager adopts the set.
		ns.KeyType = nftables.MustConcatSetType(AddrType(s.Fam), AddrType(s.Fam))
		ns.Concatenation = true
		ns.HasTimeout = true
	case SkFQDNDeny:
		// Same definition as ipset/nftset.NFTSet for KindAddr with timeouts.
		ns.KeyType = AddrType(s.Fam)
		ns.HasTimeout = true
	}
	return ns
}

// portSet returns the anonymous set (meta l4proto . th dport, intervals) of a
// rule's port list, with its elements.
func (enc *Encoder) PortSet(m *Match) (*nftables.Set, []nftables.SetElement) {
	s := &nftables.Set{Table: enc.Table, Anonymous: true, Constant: true, Interval: true, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService), KeyByteOrder: binaryutil.BigEndian}
	key := func(proto uint8, port uint16) []byte {
		return []byte{proto, 0, 0, 0, byte(port >> 8), byte(port), 0, 0}
	}
	elems := make([]nftables.SetElement, 0, len(m.ports))
	for _, p := range m.ports {
		elems = append(elems, nftables.SetElement{Key: key(p.proto, p.lo), KeyEnd: key(p.proto, p.hi)})
	}
	return s, elems
}

// vmap returns the nftables object of the verdict map with index i.
func (enc *Encoder) Vmap(i int) *nftables.Set {
	return &nftables.Set{Table: enc.Table, Name: VmapNames[i], IsMap: true, KeyType: AddrType(vmapFam(i)), DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.BigEndian}
}

// addrRange is an inclusive range of addresses.
type AddrRange struct{ Lo, Hi netip.Addr }

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr()
	b := a.AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	out, _ := netip.AddrFromSlice(b)
	return out
}

// ranges merges prefixes into disjoint, non-adjacent ranges.
func Ranges(ps []netip.Prefix) []AddrRange {
	rs := make([]AddrRange, 0, len(ps))
	for _, p := range ps {
		rs = append(rs, AddrRange{p.Masked().Addr(), lastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b AddrRange) int { return a.Lo.Compare(b.Lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			next := last.Hi.Next()
			if r.Lo.Compare(last.Hi) <= 0 || (next.IsValid() && next == r.Lo) {
				if r.Hi.Compare(last.Hi) > 0 {
					last.Hi = r.Hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// RangeElems are the interval set elements of address ranges.
func RangeElems(rs []AddrRange) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(rs))
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: r.Lo.AsSlice()})
		if end := r.Hi.Next(); end.IsValid() {
			out = append(out, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

func namedElems(ns []policy.NamedPortTarget) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(ns))
	for _, n := range ns {
		k := n.Addr.AsSlice()
		k = append(k, protoNum(n.Protocol), 0, 0, 0)
		k = binary.BigEndian.AppendUint16(k, n.Port)
		k = append(k, 0, 0)
		out = append(out, nftables.SetElement{Key: k})
	}
	return out
}

// setElems returns the elements of a named set (FQDN sets: none, the
// resolver fills them).
func SetElems(s *Set) []nftables.SetElement {
	switch s.Kind {
	case SkPrefix:
		return RangeElems(s.ranges)
	case SkNamedPort:
		return namedElems(s.nports)
	}
	return nil
}

// VmapElem is the verdict-map element of an address.
func VmapElem(a netip.Addr, t VmapTarget) nftables.SetElement {
	el := nftables.SetElement{Key: a.AsSlice()}
	switch t.Kind {
	case VJump:
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictJump, Chain: t.Chain}
	case VGoto:
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: t.Chain}
	case VDrop:
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictDrop}
	case VAccept:
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictAccept}
	}
	return el
}

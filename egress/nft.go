package egress

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
	ctEstablished = 1 << 1 // NF_CT_STATE_BIT(IP_CT_ESTABLISHED)
	ctRelated     = 1 << 2 // NF_CT_STATE_BIT(IP_CT_RELATED)
)

// registers: NFT_REG_1 is NFT_REG32_00..03; concatenations use 32-bit registers.
const (
	reg1    = 1
	reg2    = 2 // NFT_REG32_04
	reg3200 = 8
)

func reg32(i uint32) uint32 { return reg3200 + i }

func nfprotoOf(f fam) byte {
	if f == fam6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

func addrPayload(f fam, src bool, dreg uint32) *expr.Payload {
	p := &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: dreg, Base: expr.PayloadBaseNetworkHeader}
	if f == fam6 {
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

func dportPayload(dreg uint32) *expr.Payload {
	return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: dreg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}
}

// encoder turns the model into google/nftables objects and expressions for
// one table.
type encoder struct {
	table     *nftables.Table
	logGroup  int    // nflog group of drops; negative: no log
	logPrefix string // nflog prefix of drops
}

// chain returns the nftables object of a chain.
func (enc *encoder) chain(c *chainDef) *nftables.Chain {
	ch := &nftables.Chain{Name: c.name, Table: enc.table}
	if c.base != nil {
		ch.Type = nftables.ChainTypeFilter
		ch.Hooknum = nftables.ChainHookForward
		if c.base.input {
			ch.Hooknum = nftables.ChainHookInput
		}
		ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(c.base.priority))
		pol := nftables.ChainPolicyAccept
		ch.Policy = &pol
	}
	return ch
}

// exprs turns a rule into nftables expressions; anon adds the anonymous set
// of a port list and returns its name and ID.
func (enc *encoder) exprs(r *rule, anon func(*match) (string, uint32)) []expr.Any {
	var out []expr.Any
	if r.fam != famAny {
		out = append(out,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{nfprotoOf(r.fam)}})
	}
	for i := range r.m {
		m := &r.m[i]
		switch m.kind {
		case mAddrSet:
			out = append(out, addrPayload(r.fam, m.src, reg1), &expr.Lookup{SourceRegister: reg1, SetName: m.set})
		case mFQDN:
			second := uint32(reg32(1))
			if r.fam == fam6 {
				second = reg2
			}
			out = append(out, addrPayload(r.fam, true, reg1), addrPayload(r.fam, false, second),
				&expr.Lookup{SourceRegister: reg1, SetName: m.set})
		case mNamedPort:
			pr, po := reg32(1), reg32(2)
			if r.fam == fam6 {
				pr, po = reg32(4), reg32(5)
			}
			out = append(out, addrPayload(r.fam, false, reg1),
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: pr},
				dportPayload(po),
				&expr.Lookup{SourceRegister: reg1, SetName: m.set})
		case mProto:
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{m.proto}})
		case mDport:
			out = append(out, dportPayload(reg1))
			if m.lo == m.hi {
				out = append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(m.lo)})
			} else {
				out = append(out, &expr.Range{Op: expr.CmpOpEq, Register: reg1, FromData: binaryutil.BigEndian.PutUint16(m.lo), ToData: binaryutil.BigEndian.PutUint16(m.hi)})
			}
		case mCtState:
			out = append(out,
				&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(m.ct), Xor: binaryutil.NativeEndian.PutUint32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: []byte{0, 0, 0, 0}})
		case mDaddr:
			out = append(out, addrPayload(r.fam, false, reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: m.addr.AsSlice()})
		case mAddrRange:
			out = append(out, addrPayload(r.fam, m.src, reg1))
			if m.addr == m.last {
				out = append(out, &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: m.addr.AsSlice()})
			} else {
				out = append(out, &expr.Range{Op: expr.CmpOpEq, Register: reg1, FromData: m.addr.AsSlice(), ToData: m.last.AsSlice()})
			}
		case mPortSet:
			name, id := anon(m)
			out = append(out,
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
				dportPayload(reg32(1)),
				&expr.Lookup{SourceRegister: reg1, SetName: name, SetID: id})
		}
	}
	if r.counter {
		out = append(out, &expr.Counter{})
	}
	switch r.v {
	case vAccept:
		out = append(out, &expr.Verdict{Kind: expr.VerdictAccept})
	case vDrop:
		if r.log && enc.logGroup >= 0 {
			out = append(out, &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: uint16(enc.logGroup), Data: []byte(enc.logPrefix)})
		}
		out = append(out, &expr.Verdict{Kind: expr.VerdictDrop})
	case vReturn:
		out = append(out, &expr.Verdict{Kind: expr.VerdictReturn})
	case vJump:
		out = append(out, &expr.Verdict{Kind: expr.VerdictJump, Chain: r.target})
	case vGoto:
		out = append(out, &expr.Verdict{Kind: expr.VerdictGoto, Chain: r.target})
	case vVmap:
		out = append(out, addrPayload(r.fam, r.vmapSrc, reg1),
			&expr.Lookup{SourceRegister: reg1, DestRegister: 0, IsDestRegSet: true, SetName: r.target})
	}
	return out
}

// --- set objects ----------------------------------------------------------------

func addrType(f fam) nftables.SetDatatype {
	if f == fam6 {
		return nftables.TypeIP6Addr
	}
	return nftables.TypeIPAddr
}

// set returns the nftables object of a set definition.
func (enc *encoder) set(s *setDef) *nftables.Set {
	ns := &nftables.Set{Table: enc.table, Name: s.name, KeyByteOrder: binaryutil.BigEndian}
	switch s.kind {
	case skPrefix:
		ns.KeyType = addrType(s.fam)
		ns.Interval = true
	case skNamedPort:
		ns.KeyType = nftables.MustConcatSetType(addrType(s.fam), nftables.TypeInetProto, nftables.TypeInetService)
		ns.Concatenation = true
	case skFQDN:
		// Same definition as ipset/nftset.NFTSet for KindAddrPair with timeouts,
		// so the resolver's Manager adopts the set.
		ns.KeyType = nftables.MustConcatSetType(addrType(s.fam), addrType(s.fam))
		ns.Concatenation = true
		ns.HasTimeout = true
	}
	return ns
}

// portSet returns the anonymous set (meta l4proto . th dport, intervals) of a
// rule's port list, with its elements.
func (enc *encoder) portSet(m *match) (*nftables.Set, []nftables.SetElement) {
	s := &nftables.Set{Table: enc.table, Anonymous: true, Constant: true, Interval: true, Concatenation: true,
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
func (enc *encoder) vmap(i int) *nftables.Set {
	return &nftables.Set{Table: enc.table, Name: vmapNames[i], IsMap: true, KeyType: addrType(vmapFam(i)), DataType: nftables.TypeVerdict, KeyByteOrder: binaryutil.BigEndian}
}

// addrRange is an inclusive range of addresses.
type addrRange struct{ lo, hi netip.Addr }

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
func ranges(ps []netip.Prefix) []addrRange {
	rs := make([]addrRange, 0, len(ps))
	for _, p := range ps {
		rs = append(rs, addrRange{p.Masked().Addr(), lastAddr(p)})
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return a.lo.Compare(b.lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 {
			last := &out[n-1]
			next := last.hi.Next()
			if r.lo.Compare(last.hi) <= 0 || (next.IsValid() && next == r.lo) {
				if r.hi.Compare(last.hi) > 0 {
					last.hi = r.hi
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

func rangeElems(rs []addrRange) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(rs))
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: r.lo.AsSlice()})
		if end := r.hi.Next(); end.IsValid() {
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
func setElems(s *setDef) []nftables.SetElement {
	switch s.kind {
	case skPrefix:
		return rangeElems(s.ranges)
	case skNamedPort:
		return namedElems(s.nports)
	}
	return nil
}

func vmapElem(a netip.Addr, t vtarget) nftables.SetElement {
	el := nftables.SetElement{Key: a.AsSlice()}
	switch t.kind {
	case vJump:
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictJump, Chain: t.chain}
	case vGoto:
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictGoto, Chain: t.chain}
	case vDrop:
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictDrop}
	case vAccept:
		el.VerdictData = &expr.Verdict{Kind: expr.VerdictAccept}
	}
	return el
}

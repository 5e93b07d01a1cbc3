package nftmodel

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/egressd/egressd/policy"
)

// The text form of the model, in nft syntax: each chain's rendering (its
// fingerprint: a chain is rewritten when it changes) and the whole table
// (Enforcer.Render, for debugging and the rendering tests).

// tableText renders a table: its sets (with their elements; FQDN sets,
// filled by the resolver, empty), verdict maps and chains, hooked chains
// first.
func TableText(table string, sets map[string]*Set, vmaps *[NumVmaps]map[netip.Addr]VmapTarget, chains map[string]*Chain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", table)
	for _, n := range slices.Sorted(maps.Keys(sets)) {
		b.WriteString(sets[n].text())
	}
	for i, m := range vmaps {
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : verdict\n", VmapNames[i], nftAddrType(vmapFam(i)))
		var elems []string
		for _, ip := range slices.SortedFunc(maps.Keys(m), netip.Addr.Compare) {
			elems = append(elems, ip.String()+" : "+m[ip].text())
		}
		writeElements(&b, elems)
		b.WriteString("\t}\n")
	}
	names := slices.SortedFunc(maps.Keys(chains), func(a, b string) int {
		if ba, bb := chains[a].Base != nil, chains[b].Base != nil; ba != bb {
			if ba {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	for _, n := range names {
		b.WriteString(chains[n].blockText())
	}
	b.WriteString("}\n")
	return b.String()
}

// text renders a set declaration with its elements.
func (s *Set) text() string {
	var b strings.Builder
	var typ, flags string
	var elems []string
	switch s.Kind {
	case SkPrefix:
		typ, flags = nftAddrType(s.Fam), "interval"
		for _, r := range s.ranges {
			elems = append(elems, r.text())
		}
	case SkNamedPort:
		typ = nftAddrType(s.Fam) + " . inet_proto . inet_service"
		for _, np := range s.nports {
			elems = append(elems, namedPortText(np))
		}
	case SkFQDN:
		typ, flags = nftAddrType(s.Fam)+" . "+nftAddrType(s.Fam), "timeout"
	case SkFQDNDeny:
		typ, flags = nftAddrType(s.Fam), "timeout"
	}
	fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", s.Name, typ)
	if flags != "" {
		fmt.Fprintf(&b, "\t\tflags %s\n", flags)
	}
	writeElements(&b, elems)
	b.WriteString("\t}\n")
	return b.String()
}

// blockText renders a chain declaration with its rules.
func (c *Chain) blockText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
	if c.Base != nil {
		hook := "forward"
		if c.Base.input {
			hook = "input"
		}
		fmt.Fprintf(&b, "\t\ttype filter hook %s priority %d; policy accept;\n", hook, c.Base.priority)
	}
	for _, l := range strings.Split(strings.TrimSuffix(c.Text, "\n"), "\n") {
		if l != "" {
			fmt.Fprintf(&b, "\t\t%s\n", l)
		}
	}
	b.WriteString("\t}\n")
	return b.String()
}

func writeElements(b *strings.Builder, elems []string) {
	if len(elems) > 0 {
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
	}
}

// nftAddrType is nft's address type of a family.
func nftAddrType(f Fam) string {
	if f == Fam6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// text renders an address range: "lo" or "lo-hi".
func (r AddrRange) text() string {
	if r.Lo == r.Hi {
		return r.Lo.String()
	}
	return r.Lo.String() + "-" + r.Hi.String()
}

// namedPortText renders a named-port element: "addr . proto . port".
func namedPortText(n policy.NamedPortTarget) string {
	return fmt.Sprintf("%s . %s . %d", n.Addr, strings.ToLower(string(n.Protocol)), n.Port)
}

// text renders a verdict-map element's verdict.
func (v VmapTarget) text() string {
	switch v.Kind {
	case VJump:
		return "jump " + v.Chain
	case VGoto:
		return "goto " + v.Chain
	case VDrop:
		return "drop"
	case VAccept:
		return "accept"
	}
	return ""
}

// IPKeyword is nft's address keyword of a family: ip or ip6.
func IPKeyword(f Fam) string {
	if f == Fam6 {
		return "ip6"
	}
	return "ip"
}

func (m *Match) text(f Fam) string {
	switch m.kind {
	case mAddrSet:
		if m.src {
			return IPKeyword(f) + " saddr @" + m.set
		}
		return IPKeyword(f) + " daddr @" + m.set
	case mFQDN:
		return fmt.Sprintf("%s saddr . %s daddr @%s", IPKeyword(f), IPKeyword(f), m.set)
	case mNamedPort:
		return IPKeyword(f) + " daddr . meta l4proto . th dport @" + m.set
	case mProto:
		return "meta l4proto " + ProtoName(m.proto)
	case mDport:
		if m.lo == m.hi {
			return fmt.Sprintf("th dport %d", m.lo)
		}
		return fmt.Sprintf("th dport %d-%d", m.lo, m.hi)
	case mCtState:
		var s []string
		for _, b := range []struct {
			bit  uint32
			name string
		}{{ctInvalid, "invalid"}, {CtEstablished, "established"}, {CtRelated, "related"}} {
			if m.ct&b.bit != 0 {
				s = append(s, b.name)
			}
		}
		return "ct state " + strings.Join(s, ",")
	case mDaddr:
		return IPKeyword(f) + " daddr " + m.addr.String()
	case mAddrRange:
		dir := " daddr "
		if m.src {
			dir = " saddr "
		}
		if m.addr == m.last {
			return IPKeyword(f) + dir + m.addr.String()
		}
		return IPKeyword(f) + dir + m.addr.String() + "-" + m.last.String()
	case mPortSet:
		var es []string
		for _, p := range m.ports {
			n := ProtoName(p.proto)
			if p.lo == p.hi {
				es = append(es, fmt.Sprintf("%s . %d", n, p.lo))
			} else {
				es = append(es, fmt.Sprintf("%s . %d-%d", n, p.lo, p.hi))
			}
		}
		return "meta l4proto . th dport { " + strings.Join(es, ", ") + " }"
	}
	return "?"
}

func (r *Rule) text() string {
	var parts []string
	if r.Fam != FamAny {
		needs := true
		for _, m := range r.m {
			if m.kind == mAddrSet || m.kind == mFQDN || m.kind == mNamedPort || m.kind == mDaddr || m.kind == mAddrRange {
				needs = false
			}
		}
		if r.v == VVmap {
			needs = false
		}
		if needs {
			parts = append(parts, "meta nfproto ipv"+strings.TrimPrefix(r.Fam.suffix(), "v"))
		}
	}
	for i := range r.m {
		parts = append(parts, r.m[i].text(r.Fam))
	}
	if r.counter {
		parts = append(parts, "counter")
	}
	switch r.v {
	case VAccept:
		parts = append(parts, "accept")
	case VDrop:
		if r.log {
			parts = append(parts, "log group <N>")
		}
		parts = append(parts, "drop")
	case VReturn:
		parts = append(parts, "return")
	case VJump:
		parts = append(parts, "jump "+r.target)
	case VGoto:
		parts = append(parts, "goto "+r.target)
	case VVmap:
		dir := "daddr"
		if r.vmapSrc {
			dir = "saddr"
		}
		parts = append(parts, IPKeyword(r.Fam)+" "+dir+" vmap @"+r.target)
	}
	s := strings.Join(parts, " ")
	if r.comment != "" {
		s += " comment " + strconv.Quote(r.comment)
	}
	return s
}

package egress

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

// fam is the address family a rule is restricted to (0: both).
type fam uint8

const (
	famAny fam = 0
	fam4   fam = 4
	fam6   fam = 6
)

func (f fam) suffix() string {
	if f == fam6 {
		return "v6"
	}
	return "v4"
}

// Names of the fixed objects of the table.
const (
	chainEgress      = "egress"       // hook forward, priority filter
	chainIngress     = "ingress"      // hook forward, priority filter+10
	chainEgressLocal = "egress_local" // hook input, priority filter: pods → node
)

// vmap indexes: dispatch maps and pass maps, per direction and family.
const (
	vmEg4 = iota
	vmEg6
	vmIn4
	vmIn6
	vmEgPass4
	vmEgPass6
	vmInPass4
	vmInPass6
	numVmaps
)

var vmapNames = [numVmaps]string{"eg_v4", "eg_v6", "in_v4", "in_v6", "egp_v4", "egp_v6", "inp_v4", "inp_v6"}

// vmapFam is the address family of the map with index i.
func vmapFam(i int) fam {
	if i%2 == 1 {
		return fam6
	}
	return fam4
}

func vmapIndex(dir policy.Direction, f fam, pass bool) int {
	i := 0
	if dir == policy.Ingress {
		i = 2
	}
	if f == fam6 {
		i++
	}
	if pass {
		i += 4
	}
	return i
}

// FQDNSetName returns the name of the kernel set of an FQDN rule for a family:
// a concatenated set (workload address . answer address) with timeouts, created
// by the Enforcer and filled by the resolver (ipset.KindAddrPair, Timeout: true).
func FQDNSetName(ruleID string, family ipset.Family) string {
	if family == ipset.IPv6 {
		return "fq_" + ruleID + "_v6"
	}
	return "fq_" + ruleID + "_v4"
}

// FQDNSetSpec returns the ipset.Spec of an FQDN rule's set.
func FQDNSetSpec(ruleID string, family ipset.Family) ipset.Spec {
	return ipset.Spec{Name: FQDNSetName(ruleID, family), Family: family, Kind: ipset.KindAddrPair, Timeout: true}
}

func hashName(s string) string {
	h := fnv.New64a()
	h.Write([]byte(s))
	return strconv.FormatUint(h.Sum64(), 36)
}

func dirTag(d policy.Direction) string {
	if d == policy.Ingress {
		return "i"
	}
	return "e"
}

// policyChain names the chains of a policy for a direction:
// kind "" (ordered, first match), "d" (deny-check), "a" (allow-check), "p"
// (pass-check), "nd" / "na" (namespaced deny / allow).
func policyChain(ref policy.PolicyRef, d policy.Direction, kind string) string {
	n := "pol_" + dirTag(d) + "_" + hashName(ref.String())
	if kind != "" {
		n += "_" + kind
	}
	return n
}

// restChain names the shared chain of a program's part after the Admin tier
// (namespaced policies, or Baseline groups, then the default verdict), keyed by
// restKey.
func restChain(d policy.Direction, key string) string {
	return "prog_" + dirTag(d) + "_" + hashName(key)
}

// adminChain names the shared chain of a program's Admin groups, keyed by
// adminKey; it ends in the pass map (the workload's own rest chain).
func adminChain(d policy.Direction, key string) string {
	return "adm_" + dirTag(d) + "_" + hashName(key)
}

func groupsKey(tag string, gs [][]policy.PolicyRef) string {
	var b strings.Builder
	for _, g := range gs {
		b.WriteString(tag)
		for _, r := range g {
			b.WriteString(r.String())
			b.WriteByte(',')
		}
	}
	return b.String()
}

// adminKey and restKey split Program.Key into its two shared parts.
func adminKey(p *policy.Program) string { return groupsKey("A|", p.Admin) }

func restKey(p *policy.Program) string {
	if p.Isolated {
		var b strings.Builder
		b.WriteString("N|")
		for _, r := range p.Namespaced {
			b.WriteString(r.String())
			b.WriteByte(',')
		}
		return b.String()
	}
	return groupsKey("B|", p.Baseline)
}

// contentName names a set by a digest of its content: rules with equal
// prefix lists (or named-port lists) share one set.
func contentName(prefix string, f fam, content string) string {
	h := sha256.Sum256([]byte(content))
	return prefix + strings.TrimPrefix(f.suffix(), "v") + "_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(h[:10]))
}

// --- rule model -------------------------------------------------------------

type matchKind uint8

const (
	mAddrSet   matchKind = iota + 1 // ip saddr|daddr @set
	mFQDN                           // ip saddr . ip daddr @set
	mNamedPort                      // ip daddr . meta l4proto . th dport @set
	mProto                          // meta l4proto P
	mDport                          // th dport lo-hi
	mCtState                        // ct state <bits>
	mDaddr                          // ip daddr == addr
	mAddrRange                      // ip saddr|daddr lo[-hi] (a rule's single range, inline)
	mPortSet                        // meta l4proto . th dport { P . lo-hi, ... } (anonymous set)
)

// portItem is one element of a rule's port list.
type portItem struct {
	proto  uint8
	lo, hi uint16
}

type match struct {
	kind  matchKind
	src   bool // mAddrSet, mAddrRange: saddr (else daddr)
	set   string
	proto uint8
	lo    uint16
	hi    uint16
	ct    uint32
	addr  netip.Addr // mDaddr; mAddrRange: first address
	last  netip.Addr // mAddrRange: last address
	ports []portItem // mPortSet
}

type verdictKind uint8

const (
	vAccept verdictKind = iota + 1
	vDrop
	vReturn
	vJump
	vGoto
	vVmap // ip saddr|daddr vmap @set
)

type rule struct {
	fam     fam
	m       []match
	v       verdictKind
	target  string // chain (jump/goto) or map (vmap)
	vmapSrc bool
	counter bool
	log     bool   // log group before the verdict (when the enforcer has a group)
	comment string // nft comment: rule reference (text only)
}

type baseHook struct {
	input    bool // hook input (else forward)
	priority int32
}

type chainDef struct {
	name  string
	base  *baseHook
	rules []rule
	text  string // rendered rules, the fingerprint
}

type setKind uint8

const (
	skPrefix    setKind = iota + 1 // interval set of addresses
	skNamedPort                    // addr . inet_proto . inet_service
	skFQDN                         // addr . addr, timeout
)

type setDef struct {
	name   string
	kind   setKind
	fam    fam
	ranges []addrRange
	nports []policy.NamedPortTarget
}

// vtarget is the value of a verdict-map element.
type vtarget struct {
	kind  verdictKind // vJump, vGoto, vDrop, vAccept
	chain string
}

// --- rendering of policies -------------------------------------------------

type variant struct {
	fam fam
	m   []match
}

// ruleRender is a rule's rendering: the (family, matches) combinations that
// together match exactly the packets the rule matches, and the named sets they
// use.
type ruleRender struct {
	variants []variant
	sets     []*setDef
}

// renderRuleMatches renders the matches of rule r. A family's prefixes become
// one inline match when they merge into a single range, else an interval set
// named by its content (shared by every rule with the same addresses); a port
// list of more than one entry becomes one anonymous set
// (meta l4proto . th dport); named ports a content-named set.
func renderRuleMatches(r *policy.PlanRule) ruleRender {
	var out ruleRender
	src := r.Direction == policy.Ingress
	var peers []variant
	if r.AnyPeer {
		peers = append(peers, variant{})
	} else {
		for _, f := range []fam{fam4, fam6} {
			var ps []netip.Prefix
			for _, p := range r.Prefixes {
				if famOf(p.Addr()) == f {
					ps = append(ps, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked())
				}
			}
			if len(ps) == 0 {
				continue
			}
			rs := ranges(ps)
			if len(rs) == 1 {
				peers = append(peers, variant{fam: f, m: []match{{kind: mAddrRange, src: src, addr: rs[0].lo, last: rs[0].hi}}})
				continue
			}
			s := &setDef{kind: skPrefix, fam: f, ranges: rs}
			s.name = contentName("r", f, rangesText(rs))
			out.sets = append(out.sets, s)
			peers = append(peers, variant{fam: f, m: []match{{kind: mAddrSet, src: src, set: s.name}}})
		}
		if r.FQDN && r.Direction == policy.Egress {
			for _, f := range []fam{fam4, fam6} {
				s := &setDef{name: FQDNSetName(r.ID, ipsetFam(f)), kind: skFQDN, fam: f}
				out.sets = append(out.sets, s)
				peers = append(peers, variant{fam: f, m: []match{{kind: mFQDN, set: s.name}}})
			}
		}
	}
	var ports []variant
	if r.AnyPort {
		ports = append(ports, variant{})
	} else {
		var items []portItem
		for _, p := range r.Ports {
			it := portItem{proto: protoNum(p.Protocol), lo: p.First, hi: p.Last}
			if p.All {
				it.lo, it.hi = 0, 65535
			}
			items = append(items, it)
		}
		items = mergePorts(items)
		switch {
		case len(items) == 1:
			m := []match{{kind: mProto, proto: items[0].proto}}
			if items[0].lo != 0 || items[0].hi != 65535 {
				m = append(m, match{kind: mDport, lo: items[0].lo, hi: items[0].hi})
			}
			ports = append(ports, variant{m: m})
		case len(items) > 1:
			ports = append(ports, variant{m: []match{{kind: mPortSet, ports: items}}})
		}
		for _, f := range []fam{fam4, fam6} {
			var ns []policy.NamedPortTarget
			for _, n := range r.NamedPorts {
				if famOf(n.Addr) == f {
					n.Addr = n.Addr.Unmap()
					ns = append(ns, n)
				}
			}
			if len(ns) == 0 {
				continue
			}
			ns = sortNamed(ns)
			s := &setDef{kind: skNamedPort, fam: f, nports: ns}
			s.name = contentName("np", f, namedText(ns))
			out.sets = append(out.sets, s)
			ports = append(ports, variant{fam: f, m: []match{{kind: mNamedPort, set: s.name}}})
		}
	}
	for _, pe := range peers {
		for _, po := range ports {
			f := pe.fam
			if po.fam != famAny {
				if f != famAny && f != po.fam {
					continue
				}
				f = po.fam
			}
			m := append(slices.Clone(pe.m), po.m...)
			out.variants = append(out.variants, variant{fam: f, m: m})
		}
	}
	return out
}

// mergePorts sorts port items and merges overlapping or adjacent ranges of a
// protocol.
func mergePorts(items []portItem) []portItem {
	slices.SortFunc(items, func(a, b portItem) int {
		if a.proto != b.proto {
			return int(a.proto) - int(b.proto)
		}
		return int(a.lo) - int(b.lo)
	})
	out := items[:0]
	for _, it := range items {
		if n := len(out); n > 0 && out[n-1].proto == it.proto && int(it.lo) <= int(out[n-1].hi)+1 {
			if it.hi > out[n-1].hi {
				out[n-1].hi = it.hi
			}
			continue
		}
		out = append(out, it)
	}
	return out
}

func sortNamed(ns []policy.NamedPortTarget) []policy.NamedPortTarget {
	slices.SortFunc(ns, func(a, b policy.NamedPortTarget) int {
		if c := a.Addr.Compare(b.Addr); c != 0 {
			return c
		}
		if a.Protocol != b.Protocol {
			return strings.Compare(string(a.Protocol), string(b.Protocol))
		}
		return int(a.Port) - int(b.Port)
	})
	return slices.CompactFunc(ns, func(a, b policy.NamedPortTarget) bool { return a == b })
}

// rangesText is the content of an address set, named by its digest.
func rangesText(rs []addrRange) string {
	var b strings.Builder
	for _, r := range rs {
		b.WriteString(r.text())
		b.WriteByte(',')
	}
	return b.String()
}

// namedText is the content of a named-port set, named by its digest.
func namedText(ns []policy.NamedPortTarget) string {
	var b strings.Builder
	for _, n := range ns {
		b.WriteString(namedPortText(n))
		b.WriteByte(',')
	}
	return b.String()
}

func ipsetFam(f fam) ipset.Family {
	if f == fam6 {
		return ipset.IPv6
	}
	return ipset.IPv4
}

func famOf(a netip.Addr) fam {
	if a.Unmap().Is4() {
		return fam4
	}
	return fam6
}

func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// renderRule appends the rules of one plan rule with the given verdict.
func renderRule(out []rule, r *policy.PlanRule, rr *ruleRender, v verdictKind) []rule {
	for _, va := range rr.variants {
		base := rule{fam: va.fam, m: va.m, v: v, comment: r.Ref.String()}
		switch v {
		case vDrop:
			base.counter = true
			base.log = true
		case vVmap:
			// Pass: goto the after-admin part of the workload's program, through
			// the pass map keyed by the workload's address (saddr for egress).
			src := r.Direction == policy.Egress
			fs := []fam{va.fam}
			if va.fam == famAny {
				fs = []fam{fam4, fam6}
			}
			for _, f := range fs {
				rr := base
				rr.fam = f
				rr.vmapSrc = src
				rr.target = vmapNames[vmapIndex(r.Direction, f, true)]
				out = append(out, rr)
			}
			continue
		}
		out = append(out, base)
	}
	return out
}

// polRender is the rendering of one policy: its non-empty chains (every kind
// it could need; programs jump only to those and only those are in the
// kernel) and the named sets its rules use.
type polRender struct {
	chains map[string]*chainDef
	sets   []*setDef
}

// renderPolicy renders a policy (both directions). Namespaced policies have a
// deny chain (_nd) and an allow chain (_na); Admin and Baseline policies an
// ordered chain (first match, for a priority group of one) and deny-, allow-
// and pass-check chains (_d, _a, _p, for groups of equal priority). Empty
// chains are left out.
func renderPolicy(pp *policy.PlanPolicy) *polRender {
	out := &polRender{chains: map[string]*chainDef{}}
	seen := map[string]bool{}
	add := func(name string, rules []rule) {
		if len(rules) > 0 {
			out.chains[name] = newChain(name, rules)
		}
	}
	for _, dir := range policy.Directions {
		rules := pp.Rules(dir)
		rrs := make([]ruleRender, len(rules))
		for i, r := range rules {
			rrs[i] = renderRuleMatches(r)
			for _, s := range rrs[i].sets {
				if !seen[s.name] {
					seen[s.name] = true
					out.sets = append(out.sets, s)
				}
			}
		}
		if pp.Tier == policy.TierNamespaced {
			var deny, allow []rule
			for i, r := range rules {
				switch r.Action {
				case policy.ActionDeny:
					deny = renderRule(deny, r, &rrs[i], vDrop)
				case policy.ActionAllow:
					allow = renderRule(allow, r, &rrs[i], vAccept)
				}
			}
			add(policyChain(pp.Ref, dir, "nd"), deny)
			add(policyChain(pp.Ref, dir, "na"), allow)
			continue
		}
		var ordered, deny, allow, pass []rule
		for i, r := range rules {
			rr := &rrs[i]
			ordered = renderRule(ordered, r, rr, actionVerdict(r.Action))
			switch r.Action {
			case policy.ActionDeny:
				deny = renderRule(deny, r, rr, vDrop)
			case policy.ActionAllow:
				deny = renderRule(deny, r, rr, vReturn)
				allow = renderRule(allow, r, rr, vAccept)
			case policy.ActionPass:
				deny = renderRule(deny, r, rr, vReturn)
				allow = renderRule(allow, r, rr, vReturn)
				pass = renderRule(pass, r, rr, vVmap)
			}
		}
		add(policyChain(pp.Ref, dir, ""), ordered)
		add(policyChain(pp.Ref, dir, "d"), trimTrailingReturns(deny))
		add(policyChain(pp.Ref, dir, "a"), trimTrailingReturns(allow))
		add(policyChain(pp.Ref, dir, "p"), pass)
	}
	return out
}

func actionVerdict(a policy.Action) verdictKind {
	switch a {
	case policy.ActionAllow:
		return vAccept
	case policy.ActionDeny:
		return vDrop
	}
	return vVmap // Pass
}

// trimTrailingReturns drops return rules at the end of a chain (they change
// nothing).
func trimTrailingReturns(rs []rule) []rule {
	for len(rs) > 0 && rs[len(rs)-1].v == vReturn {
		rs = rs[:len(rs)-1]
	}
	return rs
}

// progDef is a shared program chain: the Admin part (adm_*) or the rest
// (prog_*) of the programs of the workloads using it.
type progDef struct {
	name     string
	dir      policy.Direction
	admin    bool
	groups   [][]policy.PolicyRef // Admin groups, or Baseline groups when !isolated
	isolated bool
	ns       []policy.PolicyRef
	users    int
	jumps    []string  // policy chains the rendered chain jumps to
	chain    *chainDef // rendered
}

func (p *progDef) refs() []policy.PolicyRef {
	var out []policy.PolicyRef
	for _, g := range p.groups {
		out = append(out, g...)
	}
	return append(out, p.ns...)
}

// renderProg renders a program chain; has reports whether a policy chain
// exists (is not empty).
func renderProg(p *progDef, def policy.Verdict, has func(string) bool) *chainDef {
	var rs []rule
	p.jumps = p.jumps[:0]
	jump := func(name string) {
		if has(name) {
			rs = append(rs, rule{v: vJump, target: name})
			p.jumps = append(p.jumps, name)
		}
	}
	groups := func(gs [][]policy.PolicyRef) {
		for _, g := range gs {
			if len(g) == 1 {
				jump(policyChain(g[0], p.dir, ""))
				continue
			}
			for _, kind := range []string{"d", "a", "p"} {
				for _, ref := range g {
					jump(policyChain(ref, p.dir, kind))
				}
			}
		}
	}
	switch {
	case p.admin:
		groups(p.groups)
		// Then the workload's rest chain, through the pass map.
		for _, f := range []fam{fam4, fam6} {
			rs = append(rs, rule{fam: f, v: vVmap, vmapSrc: p.dir == policy.Egress, target: vmapNames[vmapIndex(p.dir, f, true)]})
		}
	case p.isolated:
		for _, kind := range []string{"nd", "na"} {
			for _, ref := range p.ns {
				jump(policyChain(ref, p.dir, kind))
			}
		}
		rs = append(rs, rule{v: vDrop, counter: true, log: true, comment: "isolated"})
	default:
		groups(p.groups)
		if def == policy.Deny {
			rs = append(rs, rule{v: vDrop, counter: true, log: true, comment: "default"})
		} else {
			rs = append(rs, rule{v: vAccept})
		}
	}
	return newChain(p.name, rs)
}

// baseChains returns the hooked chains; dnsExempt are the node resolver
// addresses pods may always reach on the node.
func baseChains(dnsExempt []netip.AddrPort) []*chainDef {
	est := rule{m: []match{{kind: mCtState, ct: ctEstablished | ctRelated}}, v: vAccept}
	inv := rule{m: []match{{kind: mCtState, ct: ctInvalid}}, v: vDrop}
	dispatch := func(dir policy.Direction) []rule {
		var rs []rule
		for _, f := range []fam{fam4, fam6} {
			rs = append(rs, rule{fam: f, v: vVmap, vmapSrc: dir == policy.Egress, target: vmapNames[vmapIndex(dir, f, false)]})
		}
		return rs
	}
	eg := append([]rule{est, inv}, dispatch(policy.Egress)...)
	in := append([]rule{est, inv}, dispatch(policy.Ingress)...)
	local := []rule{est}
	for _, ap := range dnsExempt {
		for _, p := range []uint8{6, 17} {
			local = append(local, rule{fam: famOf(ap.Addr()), m: []match{{kind: mDaddr, addr: ap.Addr().Unmap()}, {kind: mProto, proto: p}, {kind: mDport, lo: ap.Port(), hi: ap.Port()}}, v: vAccept, comment: "node resolver"})
		}
	}
	local = append(local, dispatch(policy.Egress)...)
	return []*chainDef{
		withHook(newChain(chainEgress, eg), false, 0),
		withHook(newChain(chainIngress, in), false, 10),
		withHook(newChain(chainEgressLocal, local), true, 0),
	}
}

func withHook(c *chainDef, input bool, prio int32) *chainDef {
	c.base = &baseHook{input: input, priority: prio}
	return c
}

func newChain(name string, rules []rule) *chainDef {
	c := &chainDef{name: name, rules: rules}
	var b strings.Builder
	for i := range rules {
		b.WriteString(rules[i].text())
		b.WriteByte('\n')
	}
	c.text = b.String()
	return c
}

// --- text ---------------------------------------------------------------------

// The text form of the model, in nft syntax: each chain's rendering (its
// fingerprint: a chain is rewritten when it changes) and the whole table
// (Enforcer.Render, for debugging and the rendering tests).

// tableText renders a table: its sets (with their elements; FQDN sets,
// filled by the resolver, empty), verdict maps and chains, hooked chains
// first.
func tableText(table string, sets map[string]*setDef, vmaps *[numVmaps]map[netip.Addr]vtarget, chains map[string]*chainDef) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", table)
	for _, n := range slices.Sorted(maps.Keys(sets)) {
		b.WriteString(sets[n].text())
	}
	for i, m := range vmaps {
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : verdict\n", vmapNames[i], nftAddrType(vmapFam(i)))
		var elems []string
		for _, ip := range slices.SortedFunc(maps.Keys(m), netip.Addr.Compare) {
			elems = append(elems, ip.String()+" : "+m[ip].text())
		}
		writeElements(&b, elems)
		b.WriteString("\t}\n")
	}
	names := slices.SortedFunc(maps.Keys(chains), func(a, b string) int {
		if ba, bb := chains[a].base != nil, chains[b].base != nil; ba != bb {
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
func (s *setDef) text() string {
	var b strings.Builder
	var typ, flags string
	var elems []string
	switch s.kind {
	case skPrefix:
		typ, flags = nftAddrType(s.fam), "interval"
		for _, r := range s.ranges {
			elems = append(elems, r.text())
		}
	case skNamedPort:
		typ = nftAddrType(s.fam) + " . inet_proto . inet_service"
		for _, np := range s.nports {
			elems = append(elems, namedPortText(np))
		}
	case skFQDN:
		typ, flags = nftAddrType(s.fam)+" . "+nftAddrType(s.fam), "timeout"
	}
	fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", s.name, typ)
	if flags != "" {
		fmt.Fprintf(&b, "\t\tflags %s\n", flags)
	}
	writeElements(&b, elems)
	b.WriteString("\t}\n")
	return b.String()
}

// blockText renders a chain declaration with its rules.
func (c *chainDef) blockText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "\tchain %s {\n", c.name)
	if c.base != nil {
		hook := "forward"
		if c.base.input {
			hook = "input"
		}
		fmt.Fprintf(&b, "\t\ttype filter hook %s priority %d; policy accept;\n", hook, c.base.priority)
	}
	for _, l := range strings.Split(strings.TrimSuffix(c.text, "\n"), "\n") {
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
func nftAddrType(f fam) string {
	if f == fam6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// text renders an address range: "lo" or "lo-hi".
func (r addrRange) text() string {
	if r.lo == r.hi {
		return r.lo.String()
	}
	return r.lo.String() + "-" + r.hi.String()
}

// namedPortText renders a named-port element: "addr . proto . port".
func namedPortText(n policy.NamedPortTarget) string {
	return fmt.Sprintf("%s . %s . %d", n.Addr, strings.ToLower(string(n.Protocol)), n.Port)
}

// text renders a verdict-map element's verdict.
func (v vtarget) text() string {
	switch v.kind {
	case vJump:
		return "jump " + v.chain
	case vGoto:
		return "goto " + v.chain
	case vDrop:
		return "drop"
	case vAccept:
		return "accept"
	}
	return ""
}

func ipKw(f fam) string {
	if f == fam6 {
		return "ip6"
	}
	return "ip"
}

func (m *match) text(f fam) string {
	switch m.kind {
	case mAddrSet:
		if m.src {
			return ipKw(f) + " saddr @" + m.set
		}
		return ipKw(f) + " daddr @" + m.set
	case mFQDN:
		return fmt.Sprintf("%s saddr . %s daddr @%s", ipKw(f), ipKw(f), m.set)
	case mNamedPort:
		return ipKw(f) + " daddr . meta l4proto . th dport @" + m.set
	case mProto:
		return "meta l4proto " + protoName(m.proto)
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
		}{{ctInvalid, "invalid"}, {ctEstablished, "established"}, {ctRelated, "related"}} {
			if m.ct&b.bit != 0 {
				s = append(s, b.name)
			}
		}
		return "ct state " + strings.Join(s, ",")
	case mDaddr:
		return ipKw(f) + " daddr " + m.addr.String()
	case mAddrRange:
		dir := " daddr "
		if m.src {
			dir = " saddr "
		}
		if m.addr == m.last {
			return ipKw(f) + dir + m.addr.String()
		}
		return ipKw(f) + dir + m.addr.String() + "-" + m.last.String()
	case mPortSet:
		var es []string
		for _, p := range m.ports {
			n := protoName(p.proto)
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

func (r *rule) text() string {
	var parts []string
	if r.fam != famAny {
		needs := true
		for _, m := range r.m {
			if m.kind == mAddrSet || m.kind == mFQDN || m.kind == mNamedPort || m.kind == mDaddr || m.kind == mAddrRange {
				needs = false
			}
		}
		if r.v == vVmap {
			needs = false
		}
		if needs {
			parts = append(parts, "meta nfproto ipv"+strings.TrimPrefix(r.fam.suffix(), "v"))
		}
	}
	for i := range r.m {
		parts = append(parts, r.m[i].text(r.fam))
	}
	if r.counter {
		parts = append(parts, "counter")
	}
	switch r.v {
	case vAccept:
		parts = append(parts, "accept")
	case vDrop:
		if r.log {
			parts = append(parts, "log group <N>")
		}
		parts = append(parts, "drop")
	case vReturn:
		parts = append(parts, "return")
	case vJump:
		parts = append(parts, "jump "+r.target)
	case vGoto:
		parts = append(parts, "goto "+r.target)
	case vVmap:
		dir := "daddr"
		if r.vmapSrc {
			dir = "saddr"
		}
		parts = append(parts, ipKw(r.fam)+" "+dir+" vmap @"+r.target)
	}
	s := strings.Join(parts, " ")
	if r.comment != "" {
		s += " comment " + strconv.Quote(r.comment)
	}
	return s
}

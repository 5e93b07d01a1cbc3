package egress

import (
	"fmt"
	"hash/fnv"
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

// programChain names the chain of a program and its after-admin part ("rest").
func programChain(d policy.Direction, key string, rest bool) string {
	n := "prog_" + dirTag(d) + "_" + hashName(key)
	if rest {
		n += "_rest"
	}
	return n
}

// Rule sets carry the direction: a rule name may repeat across the ingress and
// egress lists of one policy, and PlanRule.ID derives from the name.
func prefixSetName(r *policy.PlanRule, f fam) string {
	return "r" + dirTag(r.Direction) + "_" + r.ID + "_" + f.suffix()
}

func namedSetName(r *policy.PlanRule, f fam) string {
	return "np" + dirTag(r.Direction) + "_" + r.ID + "_" + f.suffix()
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
)

type match struct {
	kind  matchKind
	src   bool // mAddrSet: saddr (else daddr)
	set   string
	proto uint8
	lo    uint16
	hi    uint16
	ct    uint32
	addr  netip.Addr
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
	name     string
	kind     setKind
	fam      fam
	prefixes []netip.Prefix
	nports   []policy.NamedPortTarget
}

func (s *setDef) equalContent(o *setDef) bool {
	return s.kind == o.kind && s.fam == o.fam && slices.Equal(s.prefixes, o.prefixes) && slices.Equal(s.nports, o.nports)
}

// vtarget is the value of a verdict-map element.
type vtarget struct {
	kind  verdictKind // vJump, vGoto, vDrop, vAccept
	chain string
}

var protoNum = map[policy.Protocol]uint8{policy.ProtocolTCP: 6, policy.ProtocolUDP: 17, policy.ProtocolSCTP: 132}

// --- rendering of policies -------------------------------------------------

type variant struct {
	fam fam
	m   []match
}

// ruleVariants returns the (family, matches) combinations that together match
// exactly the packets rule r matches, for the policy's direction.
func ruleVariants(r *policy.PlanRule) []variant {
	var peers []variant
	if r.AnyPeer {
		peers = append(peers, variant{})
	} else {
		for _, f := range []fam{fam4, fam6} {
			if hasFamily(r.Prefixes, f) {
				peers = append(peers, variant{fam: f, m: []match{{kind: mAddrSet, src: r.Direction == policy.Ingress, set: prefixSetName(r, f)}}})
			}
		}
		if r.FQDN && r.Direction == policy.Egress {
			for _, f := range []fam{fam4, fam6} {
				peers = append(peers, variant{fam: f, m: []match{{kind: mFQDN, set: FQDNSetName(r.ID, ipsetFam(f))}}})
			}
		}
	}
	var ports []variant
	if r.AnyPort {
		ports = append(ports, variant{})
	} else {
		for _, p := range r.Ports {
			m := []match{{kind: mProto, proto: protoNum[p.Protocol]}}
			if !p.All {
				m = append(m, match{kind: mDport, lo: p.First, hi: p.Last})
			}
			ports = append(ports, variant{m: m})
		}
		for _, f := range []fam{fam4, fam6} {
			if hasNamed(r.NamedPorts, f) {
				ports = append(ports, variant{fam: f, m: []match{{kind: mNamedPort, set: namedSetName(r, f)}}})
			}
		}
	}
	var out []variant
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
			out = append(out, variant{fam: f, m: m})
		}
	}
	return out
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

func hasFamily(ps []netip.Prefix, f fam) bool {
	for _, p := range ps {
		if famOf(p.Addr()) == f {
			return true
		}
	}
	return false
}

func hasNamed(ns []policy.NamedPortTarget, f fam) bool {
	for _, n := range ns {
		if famOf(n.Addr) == f {
			return true
		}
	}
	return false
}

// ruleSets returns the sets a rule needs (prefix and named-port sets with their
// content; FQDN sets without content).
func ruleSets(r *policy.PlanRule) []*setDef {
	var out []*setDef
	for _, f := range []fam{fam4, fam6} {
		if !r.AnyPeer {
			var ps []netip.Prefix
			for _, p := range r.Prefixes {
				if famOf(p.Addr()) == f {
					ps = append(ps, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked())
				}
			}
			if len(ps) > 0 {
				out = append(out, &setDef{name: prefixSetName(r, f), kind: skPrefix, fam: f, prefixes: ps})
			}
		}
		if !r.AnyPort {
			var ns []policy.NamedPortTarget
			for _, n := range r.NamedPorts {
				if famOf(n.Addr) == f {
					n.Addr = n.Addr.Unmap()
					ns = append(ns, n)
				}
			}
			if len(ns) > 0 {
				out = append(out, &setDef{name: namedSetName(r, f), kind: skNamedPort, fam: f, nports: ns})
			}
		}
		if r.FQDN && r.Direction == policy.Egress && !r.AnyPeer {
			out = append(out, &setDef{name: FQDNSetName(r.ID, ipsetFam(f)), kind: skFQDN, fam: f})
		}
	}
	return out
}

func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// ruleVerdict renders the rules of one plan rule with the given verdict.
func (e *Enforcer) renderRule(out []rule, r *policy.PlanRule, v verdictKind) []rule {
	for _, va := range ruleVariants(r) {
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

func actionVerdict(a policy.Action) verdictKind {
	switch a {
	case policy.ActionAllow:
		return vAccept
	case policy.ActionDeny:
		return vDrop
	}
	return vVmap // Pass
}

// renderPolicy returns the chains and sets of a policy (both directions).
func (e *Enforcer) renderPolicy(pp *policy.PlanPolicy) ([]*chainDef, []*setDef) {
	var chains []*chainDef
	var sets []*setDef
	for _, dir := range policy.Directions {
		rules := pp.Rules(dir)
		for _, r := range rules {
			sets = append(sets, ruleSets(r)...)
		}
		if pp.Tier == policy.TierNamespaced {
			var deny, allow []rule
			for _, r := range rules {
				switch r.Action {
				case policy.ActionDeny:
					deny = e.renderRule(deny, r, vDrop)
				case policy.ActionAllow:
					allow = e.renderRule(allow, r, vAccept)
				}
			}
			chains = append(chains, newChain(policyChain(pp.Ref, dir, "nd"), deny), newChain(policyChain(pp.Ref, dir, "na"), allow))
			continue
		}
		var ordered, deny, allow, pass []rule
		for _, r := range rules {
			ordered = e.renderRule(ordered, r, actionVerdict(r.Action))
			switch r.Action {
			case policy.ActionDeny:
				deny = e.renderRule(deny, r, vDrop)
			case policy.ActionAllow:
				deny = e.renderRule(deny, r, vReturn)
				allow = e.renderRule(allow, r, vAccept)
			case policy.ActionPass:
				deny = e.renderRule(deny, r, vReturn)
				allow = e.renderRule(allow, r, vReturn)
				pass = e.renderRule(pass, r, vVmap)
			}
		}
		chains = append(chains,
			newChain(policyChain(pp.Ref, dir, ""), ordered),
			newChain(policyChain(pp.Ref, dir, "d"), trimTrailingReturns(deny)),
			newChain(policyChain(pp.Ref, dir, "a"), trimTrailingReturns(allow)),
			newChain(policyChain(pp.Ref, dir, "p"), pass))
	}
	return chains, sets
}

// trimTrailingReturns drops return rules at the end of a chain (they change
// nothing).
func trimTrailingReturns(rs []rule) []rule {
	for len(rs) > 0 && rs[len(rs)-1].v == vReturn {
		rs = rs[:len(rs)-1]
	}
	return rs
}

// renderProgram returns the chain of a program and of its after-admin part.
func (e *Enforcer) renderProgram(dir policy.Direction, prog *policy.Program, def policy.Verdict) []*chainDef {
	key := prog.Key()
	rest := programChain(dir, key, true)
	groups := func(gs [][]policy.PolicyRef) []rule {
		var rs []rule
		for _, g := range gs {
			if len(g) == 1 {
				rs = append(rs, rule{v: vJump, target: policyChain(g[0], dir, "")})
				continue
			}
			for _, kind := range []string{"d", "a", "p"} {
				for _, ref := range g {
					rs = append(rs, rule{v: vJump, target: policyChain(ref, dir, kind)})
				}
			}
		}
		return rs
	}
	head := groups(prog.Admin)
	head = append(head, rule{v: vGoto, target: rest})
	var tail []rule
	if prog.Isolated {
		for _, kind := range []string{"nd", "na"} {
			for _, ref := range prog.Namespaced {
				tail = append(tail, rule{v: vJump, target: policyChain(ref, dir, kind)})
			}
		}
		tail = append(tail, rule{v: vDrop, counter: true, log: true, comment: "isolated"})
	} else {
		tail = groups(prog.Baseline)
		if def == policy.Deny {
			tail = append(tail, rule{v: vDrop, counter: true, log: true, comment: "default"})
		} else {
			tail = append(tail, rule{v: vAccept})
		}
	}
	return []*chainDef{newChain(programChain(dir, key, false), head), newChain(rest, tail)}
}

// baseChains returns the hooked chains.
func (e *Enforcer) baseChains() []*chainDef {
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
	for _, ap := range e.opts.dnsExempt {
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

func ipKw(f fam) string {
	if f == fam6 {
		return "ip6"
	}
	return "ip"
}

var protoName = map[uint8]string{6: "tcp", 17: "udp", 132: "sctp"}

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
		if n, ok := protoName[m.proto]; ok {
			return "meta l4proto " + n
		}
		return fmt.Sprintf("meta l4proto %d", m.proto)
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
	}
	return "?"
}

func (r *rule) text() string {
	var parts []string
	if r.fam != famAny {
		needs := true
		for _, m := range r.m {
			if m.kind == mAddrSet || m.kind == mFQDN || m.kind == mNamedPort || m.kind == mDaddr {
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

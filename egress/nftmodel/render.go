package nftmodel

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/policy"
)

type variant struct {
	Fam Fam
	m   []Match
}

// ruleRender is a rule's rendering: the (family, matches) combinations that
// together match exactly the packets the rule matches, and the named sets they
// use.
type ruleRender struct {
	variants []variant
	sets     []*Set
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
		for _, f := range []Fam{Fam4, Fam6} {
			var ps []netip.Prefix
			for _, p := range r.Prefixes {
				if FamOf(p.Addr()) == f {
					ps = append(ps, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked())
				}
			}
			if len(ps) == 0 {
				continue
			}
			rs := Ranges(ps)
			if len(rs) == 1 {
				peers = append(peers, variant{Fam: f, m: []Match{{kind: mAddrRange, src: src, addr: rs[0].Lo, last: rs[0].Hi}}})
				continue
			}
			s := &Set{Kind: SkPrefix, Fam: f, ranges: rs}
			s.Name = contentName("r", f, rangesText(rs))
			out.sets = append(out.sets, s)
			peers = append(peers, variant{Fam: f, m: []Match{{kind: mAddrSet, src: src, set: s.Name}}})
		}
		if r.FQDN && r.Direction == policy.Egress {
			for _, f := range []Fam{Fam4, Fam6} {
				s := &Set{Name: FQDNSetName(r.ID, ipsetFam(f)), Kind: SkFQDN, Fam: f}
				out.sets = append(out.sets, s)
				peers = append(peers, variant{Fam: f, m: []Match{{kind: mFQDN, set: s.Name}}})
			}
			if len(r.DenyNames()) > 0 {
				for _, f := range []Fam{Fam4, Fam6} {
					s := &Set{Name: DenySetName(r.ID, ipsetFam(f)), Kind: SkFQDNDeny, Fam: f}
					out.sets = append(out.sets, s)
					peers = append(peers, variant{Fam: f, m: []Match{{kind: mAddrSet, set: s.Name}}})
				}
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
			m := []Match{{kind: mProto, proto: items[0].proto}}
			if items[0].lo != 0 || items[0].hi != 65535 {
				m = append(m, Match{kind: mDport, lo: items[0].lo, hi: items[0].hi})
			}
			ports = append(ports, variant{m: m})
		case len(items) > 1:
			ports = append(ports, variant{m: []Match{{kind: mPortSet, ports: items}}})
		}
		for _, f := range []Fam{Fam4, Fam6} {
			var ns []policy.NamedPortTarget
			for _, n := range r.NamedPorts {
				if FamOf(n.Addr) == f {
					n.Addr = n.Addr.Unmap()
					ns = append(ns, n)
				}
			}
			if len(ns) == 0 {
				continue
			}
			ns = sortNamed(ns)
			s := &Set{Kind: SkNamedPort, Fam: f, nports: ns}
			s.Name = contentName("np", f, namedText(ns))
			out.sets = append(out.sets, s)
			ports = append(ports, variant{Fam: f, m: []Match{{kind: mNamedPort, set: s.Name}}})
		}
	}
	for _, pe := range peers {
		for _, po := range ports {
			f := pe.Fam
			if po.Fam != FamAny {
				if f != FamAny && f != po.Fam {
					continue
				}
				f = po.Fam
			}
			m := append(slices.Clone(pe.m), po.m...)
			out.variants = append(out.variants, variant{Fam: f, m: m})
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
func rangesText(rs []AddrRange) string {
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

func ipsetFam(f Fam) ipset.Family {
	if f == Fam6 {
		return ipset.IPv6
	}
	return ipset.IPv4
}

// FamOf is the family of an address (IPv4-mapped: IPv4).
func FamOf(a netip.Addr) Fam {
	if a.Unmap().Is4() {
		return Fam4
	}
	return Fam6
}

func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

// renderRule appends the rules of one plan rule with the given verdict.
func renderRule(out []Rule, r *policy.PlanRule, rr *ruleRender, v VerdictKind) []Rule {
	for _, va := range rr.variants {
		base := Rule{Fam: va.Fam, m: va.m, v: v, comment: r.Ref.String()}
		switch v {
		case VDrop:
			base.counter = true
			base.log = true
		case VVmap:
			// Pass: goto the after-admin part of the workload's program, through
			// the pass map keyed by the workload's address (saddr for egress).
			src := r.Direction == policy.Egress
			fs := []Fam{va.Fam}
			if va.Fam == FamAny {
				fs = []Fam{Fam4, Fam6}
			}
			for _, f := range fs {
				rr := base
				rr.Fam = f
				rr.vmapSrc = src
				rr.target = VmapNames[VmapIndex(r.Direction, f, true)]
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
type PolicyChains struct {
	Chains map[string]*Chain
	Sets   []*Set
}

// renderPolicy renders a policy (both directions). Namespaced policies have a
// deny chain (_nd) and an allow chain (_na); Admin and Baseline policies an
// ordered chain (first match, for a priority group of one) and deny-, allow-
// and pass-check chains (_d, _a, _p, for groups of equal priority). Empty
// chains are left out.
func RenderPolicy(pp *policy.PlanPolicy) *PolicyChains {
	out := &PolicyChains{Chains: map[string]*Chain{}}
	seen := map[string]bool{}
	add := func(name string, rules []Rule) {
		if len(rules) > 0 {
			out.Chains[name] = newChain(name, rules)
		}
	}
	for _, dir := range policy.Directions {
		rules := pp.Rules(dir)
		rrs := make([]ruleRender, len(rules))
		for i, r := range rules {
			rrs[i] = renderRuleMatches(r)
			for _, s := range rrs[i].sets {
				if !seen[s.Name] {
					seen[s.Name] = true
					out.Sets = append(out.Sets, s)
				}
			}
		}
		if pp.Tier == policy.TierNamespaced {
			var deny, allow []Rule
			for i, r := range rules {
				switch r.Action {
				case policy.ActionDeny:
					deny = renderRule(deny, r, &rrs[i], VDrop)
				case policy.ActionAllow:
					allow = renderRule(allow, r, &rrs[i], VAccept)
				}
			}
			add(policyChain(pp.Ref, dir, "nd"), deny)
			add(policyChain(pp.Ref, dir, "na"), allow)
			continue
		}
		var ordered, deny, allow, pass []Rule
		for i, r := range rules {
			rr := &rrs[i]
			ordered = renderRule(ordered, r, rr, actionVerdict(r.Action))
			switch r.Action {
			case policy.ActionDeny:
				deny = renderRule(deny, r, rr, VDrop)
			case policy.ActionAllow:
				deny = renderRule(deny, r, rr, VReturn)
				allow = renderRule(allow, r, rr, VAccept)
			case policy.ActionPass:
				deny = renderRule(deny, r, rr, VReturn)
				allow = renderRule(allow, r, rr, VReturn)
				pass = renderRule(pass, r, rr, VVmap)
			}
		}
		add(policyChain(pp.Ref, dir, ""), ordered)
		add(policyChain(pp.Ref, dir, "d"), trimTrailingReturns(deny))
		add(policyChain(pp.Ref, dir, "a"), trimTrailingReturns(allow))
		add(policyChain(pp.Ref, dir, "p"), pass)
	}
	return out
}

func actionVerdict(a policy.Action) VerdictKind {
	switch a {
	case policy.ActionAllow:
		return VAccept
	case policy.ActionDeny:
		return VDrop
	}
	return VVmap // Pass
}

// trimTrailingReturns drops return rules at the end of a chain (they change
// nothing).
func trimTrailingReturns(rs []Rule) []Rule {
	for len(rs) > 0 && rs[len(rs)-1].v == VReturn {
		rs = rs[:len(rs)-1]
	}
	return rs
}

// progDef is a shared program chain: the Admin part (adm_*) or the rest
// (prog_*) of the programs of the workloads using it.
type Program struct {
	Name     string
	Dir      policy.Direction
	Admin    bool
	Groups   [][]policy.PolicyRef // Admin groups, or Baseline groups when !isolated
	Isolated bool
	Ns       []policy.PolicyRef
	Users    int
	Jumps    []string // policy chains the rendered chain jumps to
	Chain    *Chain   // rendered
}

// Refs are the policies the program chain names.
func (p *Program) Refs() []policy.PolicyRef {
	var out []policy.PolicyRef
	for _, g := range p.Groups {
		out = append(out, g...)
	}
	return append(out, p.Ns...)
}

// renderProg renders a program chain; has reports whether a policy chain
// exists (is not empty).
func RenderProg(p *Program, def policy.Verdict, has func(string) bool) *Chain {
	var rs []Rule
	p.Jumps = p.Jumps[:0]
	jump := func(name string) {
		if has(name) {
			rs = append(rs, Rule{v: VJump, target: name})
			p.Jumps = append(p.Jumps, name)
		}
	}
	groups := func(gs [][]policy.PolicyRef) {
		for _, g := range gs {
			if len(g) == 1 {
				jump(policyChain(g[0], p.Dir, ""))
				continue
			}
			for _, kind := range []string{"d", "a", "p"} {
				for _, ref := range g {
					jump(policyChain(ref, p.Dir, kind))
				}
			}
		}
	}
	switch {
	case p.Admin:
		groups(p.Groups)
		// Then the workload's rest chain, through the pass map.
		for _, f := range []Fam{Fam4, Fam6} {
			rs = append(rs, Rule{Fam: f, v: VVmap, vmapSrc: p.Dir == policy.Egress, target: VmapNames[VmapIndex(p.Dir, f, true)]})
		}
	case p.Isolated:
		for _, kind := range []string{"nd", "na"} {
			for _, ref := range p.Ns {
				jump(policyChain(ref, p.Dir, kind))
			}
		}
		rs = append(rs, Rule{v: VDrop, counter: true, log: true, comment: "isolated"})
	default:
		groups(p.Groups)
		if def == policy.Deny {
			rs = append(rs, Rule{v: VDrop, counter: true, log: true, comment: "default"})
		} else {
			rs = append(rs, Rule{v: VAccept})
		}
	}
	return newChain(p.Name, rs)
}

// baseChains returns the hooked chains; dnsExempt are the node resolver
// addresses pods may always reach on the node.
func BaseChains(dnsExempt []netip.AddrPort) []*Chain {
	est := Rule{m: []Match{{kind: mCtState, ct: CtEstablished | CtRelated}}, v: VAccept}
	inv := Rule{m: []Match{{kind: mCtState, ct: ctInvalid}}, v: VDrop}
	dispatch := func(dir policy.Direction) []Rule {
		var rs []Rule
		for _, f := range []Fam{Fam4, Fam6} {
			rs = append(rs, Rule{Fam: f, v: VVmap, vmapSrc: dir == policy.Egress, target: VmapNames[VmapIndex(dir, f, false)]})
		}
		return rs
	}
	eg := append([]Rule{est, inv}, dispatch(policy.Egress)...)
	in := append([]Rule{est, inv}, dispatch(policy.Ingress)...)
	local := []Rule{est}
	for _, ap := range dnsExempt {
		for _, p := range []uint8{6, 17} {
			local = append(local, Rule{Fam: FamOf(ap.Addr()), m: []Match{{kind: mDaddr, addr: ap.Addr().Unmap()}, {kind: mProto, proto: p}, {kind: mDport, lo: ap.Port(), hi: ap.Port()}}, v: VAccept, comment: "node resolver"})
		}
	}
	local = append(local, dispatch(policy.Egress)...)
	return []*Chain{
		withHook(newChain(chainEgress, eg), false, 0),
		withHook(newChain(chainIngress, in), false, 10),
		withHook(newChain(chainEgressLocal, local), true, 0),
	}
}

func withHook(c *Chain, input bool, prio int32) *Chain {
	c.Base = &BaseHook{input: input, priority: prio}
	return c
}

func newChain(name string, rules []Rule) *Chain {
	c := &Chain{Name: name, Rules: rules}
	var b strings.Builder
	for i := range rules {
		b.WriteString(rules[i].text())
		b.WriteByte('\n')
	}
	c.Text = b.String()
	return c
}

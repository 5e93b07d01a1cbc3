package egress

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/egressd/egressd/egress/nftmodel"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/policy"
)

// The DNS side doors (issue 16): pods' DNS that does not go to egressd. With
// WithSideDoors the enforcer keeps, next to the plan's chains and in the same
// table, two base chains and their sets ("sd_" objects, which the plan's full
// applies leave alone):
//
//	chain sd_filter { type filter hook prerouting priority -150; policy accept;
//	  ct state established,related accept
//	  iif "lo" accept                                  # the node's own packets
//	  ip daddr @sd_self_v4 accept                      # egressd itself
//	  ip saddr @sd_xs_<h>_v4 ip daddr @sd_xd_<h>_v4 accept   # dnsBypass.resolvers
//	  ip saddr @sd_drop_v4 meta l4proto udp|tcp th dport 53 counter log drop
//	  ip saddr @sd_enc_v4 meta l4proto tcp th dport 853 counter log drop    # DoT
//	  ip saddr @sd_enc_v4 meta l4proto udp th dport 853 counter log drop    # DoQ
//	  ip saddr @sd_enc_v4 ip daddr @sd_doh_v4 meta l4proto tcp|udp th dport != 53 counter log drop  # DoH
//	  … the IPv6 twins }
//	chain sd_dns_redirect { type nat hook prerouting priority dstnat - 5; policy accept;
//	  ip daddr @sd_self_v4 return
//	  ip saddr @sd_xs_<h>_v4 ip daddr @sd_xd_<h>_v4 return
//	  ip saddr @sd_redir_v4 meta l4proto udp|tcp th dport 53 counter dnat ip to <resolver> }
//
// The filter chain sits before NAT (it sees the destination the pod chose)
// and on prerouting, so it covers forwarded traffic and traffic to the node's
// own addresses alike. The redirect runs before kube-proxy's DNAT (priority
// dstnat) so a pod's query for the cluster DNS Service reaches egressd too.
// Workload sets hold the addresses of the enforced workloads of the plan by
// their effective setting (policy.DNSBypassNode.Effective): sd_redir (Redirect),
// sd_drop (Drop, and Redirect for a family egressd has no address of),
// sd_enc (Redirect and Drop, unless encrypted DNS is allowed on the node).
// Drops are logged to the WithNFLog group with the prefix BypassLogPrefix+door.
const (
	SideDoorFilterChain = "sd_filter"
	SideDoorNATChain    = "sd_dns_redirect"
	sideDoorPrefix      = "sd_"
	// BypassLogPrefix starts the nflog prefix of dropped side-door packets;
	// the door (policy.SideDoor: dns, dot, doq, doh) follows.
	BypassLogPrefix = "egressd bypass "
	sdFilterPrio    = -150 // NF_IP_PRI_MANGLE: after conntrack, before dstnat
	sdNATPrio       = -105 // dstnat - 5: before kube-proxy's dstnat
	// loopbackIfindex is lo's index in every network namespace
	// (LOOPBACK_IFINDEX).
	loopbackIfindex = 1
)

// SideDoors configures the side-door rules (WithSideDoors).
type SideDoors struct {
	// Node holds the node defaults (action, exempt namespaces, encrypted DNS).
	Node policy.DNSBypassNode
	// To4 and To6 are the resolver's addresses plain DNS is redirected to; a
	// family without one drops instead (fail closed).
	To4, To6 netip.AddrPort
	// DoH are the addresses of known DoH resolvers.
	DoH []netip.Prefix
}

// WithSideDoors makes the enforcer keep the side-door rules in line with
// every applied plan (see SideDoorFilterChain).
func WithSideDoors(sd SideDoors) Option {
	return func(o *options) { c := sd; c.DoH = slices.Clone(sd.DoH); o.sideDoors = &c }
}

// sdSet is one set of the side-door rules.
type sdSet struct {
	name     string
	fam      nftmodel.Fam
	interval bool
	addrs    []netip.Addr         // plain sets
	ranges   []nftmodel.AddrRange // interval sets
}

// sdRule is one rule: its text (nft syntax) and expressions.
type sdRule struct {
	text  string
	exprs []expr.Any
}

// sdRender is the rendered side-door state.
type sdRender struct {
	sets         []*sdSet
	filter, nat  []sdRule
	text         string
	workloadSets int // elements in workload sets (for logs)
}

func sdName(base string, f nftmodel.Fam) string {
	if f == nftmodel.Fam6 {
		return sideDoorPrefix + base + "_v6"
	}
	return sideDoorPrefix + base + "_v4"
}

// renderSideDoors renders the side-door objects for a plan.
func (e *Enforcer) renderSideDoors(plan *policy.Plan) *sdRender {
	sd := e.opts.sideDoors
	type famSets struct{ redir, drop, enc, self []netip.Addr }
	fs := map[nftmodel.Fam]*famSets{nftmodel.Fam4: {}, nftmodel.Fam6: {}}
	profiles := map[string]*struct {
		resolvers []netip.Prefix
		srcs      map[nftmodel.Fam][]netip.Addr
	}{}
	to := map[nftmodel.Fam]netip.AddrPort{nftmodel.Fam4: sd.To4, nftmodel.Fam6: sd.To6}
	for _, ap := range append(slices.Clone(e.opts.dnsExempt), sd.To4, sd.To6) {
		if ap.IsValid() {
			a := ap.Addr().Unmap()
			fs[nftmodel.FamOf(a)].self = append(fs[nftmodel.FamOf(a)].self, a)
		}
	}
	keys := make([]policy.WorkloadKey, 0, len(plan.Workloads))
	for k, w := range plan.Workloads {
		if e.enforced(w) {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	for _, k := range keys {
		w := plan.Workloads[k]
		s := sd.Node.Effective(k.Namespace, w.DNSBypass)
		if s.Action == policy.DNSBypassAllow {
			continue
		}
		var prof string
		if len(s.Resolvers) > 0 {
			var b strings.Builder
			for _, p := range s.Resolvers {
				b.WriteString(p.String() + ",")
			}
			prof = nftmodel.HashName(b.String())
			if profiles[prof] == nil {
				profiles[prof] = &struct {
					resolvers []netip.Prefix
					srcs      map[nftmodel.Fam][]netip.Addr
				}{resolvers: s.Resolvers, srcs: map[nftmodel.Fam][]netip.Addr{}}
			}
		}
		for _, ip := range w.IPs {
			ip = ip.Unmap()
			f := nftmodel.FamOf(ip)
			if s.Action == policy.DNSBypassRedirect && to[f].IsValid() {
				fs[f].redir = append(fs[f].redir, ip)
			} else {
				fs[f].drop = append(fs[f].drop, ip)
			}
			if !sd.Node.AllowEncrypted {
				fs[f].enc = append(fs[f].enc, ip)
			}
			if prof != "" {
				profiles[prof].srcs[f] = append(profiles[prof].srcs[f], ip)
			}
		}
	}
	r := &sdRender{}
	plain := func(base string, f nftmodel.Fam, addrs []netip.Addr) string {
		slices.SortFunc(addrs, netip.Addr.Compare)
		addrs = slices.Compact(addrs)
		s := &sdSet{name: sdName(base, f), fam: f, addrs: addrs}
		r.sets = append(r.sets, s)
		if base != "self" {
			r.workloadSets += len(addrs)
		}
		return s.name
	}
	interval := func(base string, f nftmodel.Fam, ps []netip.Prefix) string {
		var mine []netip.Prefix
		for _, p := range ps {
			if !p.Addr().Is4In6() && nftmodel.FamOf(p.Addr()) == f {
				mine = append(mine, p)
			}
		}
		s := &sdSet{name: sdName(base, f), fam: f, interval: true, ranges: nftmodel.Ranges(mine)}
		r.sets = append(r.sets, s)
		return s.name
	}
	var profNames []string
	for h := range profiles {
		profNames = append(profNames, h)
	}
	sort.Strings(profNames)
	r.filter = append(r.filter, sdRule{text: "ct state established,related accept", exprs: []expr.Any{
		&expr.Ct{Register: nftmodel.Reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: nftmodel.Reg1, DestRegister: nftmodel.Reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(nftmodel.CtEstablished | nftmodel.CtRelated), Xor: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: nftmodel.Reg1, Data: []byte{0, 0, 0, 0}},
		&expr.Verdict{Kind: expr.VerdictAccept}}})
	// The node's own packets (hostNetwork pods, node processes) reach
	// prerouting only through lo: they are never side-door traffic, whatever
	// the workload sets hold (a workloads file may list a node address).
	r.filter = append(r.filter, sdRule{text: `iif "lo" accept`, exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIF, Register: nftmodel.Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nftmodel.Reg1, Data: binaryutil.NativeEndian.PutUint32(loopbackIfindex)},
		&expr.Verdict{Kind: expr.VerdictAccept}}})
	for _, f := range []nftmodel.Fam{nftmodel.Fam4, nftmodel.Fam6} {
		self := plain("self", f, fs[f].self)
		redir := plain("redir", f, fs[f].redir)
		drop := plain("drop", f, fs[f].drop)
		enc := plain("enc", f, fs[f].enc)
		doh := interval("doh", f, sd.DoH)
		r.filter = append(r.filter, sdAddrRule(f, "", self, expr.VerdictAccept))
		r.nat = append(r.nat, sdAddrRule(f, "", self, expr.VerdictReturn))
		for _, h := range profNames {
			p := profiles[h]
			xs := plain("xs_"+h, f, p.srcs[f])
			xd := interval("xd_"+h, f, p.resolvers)
			r.filter = append(r.filter, sdAddrRule(f, xs, xd, expr.VerdictAccept))
			r.nat = append(r.nat, sdAddrRule(f, xs, xd, expr.VerdictReturn))
		}
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			r.filter = append(r.filter, e.sdDropRule(f, drop, "", proto, policy.DNSPort, false, policy.SideDoorDNS))
		}
		r.filter = append(r.filter,
			e.sdDropRule(f, enc, "", unix.IPPROTO_TCP, policy.EncryptedDNSPort, false, policy.SideDoorDoT),
			e.sdDropRule(f, enc, "", unix.IPPROTO_UDP, policy.EncryptedDNSPort, false, policy.SideDoorDoQ))
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			r.filter = append(r.filter, e.sdDropRule(f, enc, doh, proto, policy.DNSPort, true, policy.SideDoorDoH))
		}
		if to[f].IsValid() {
			for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
				r.nat = append(r.nat, sdRedirectRule(f, redir, proto, to[f]))
			}
		}
	}
	var b strings.Builder
	for _, s := range r.sets {
		fmt.Fprintf(&b, "set %s { type %s_addr;", s.name, map[nftmodel.Fam]string{nftmodel.Fam4: "ipv4", nftmodel.Fam6: "ipv6"}[s.fam])
		if s.interval {
			b.WriteString(" flags interval;")
			for _, rg := range s.ranges {
				fmt.Fprintf(&b, " %s-%s", rg.Lo, rg.Hi)
			}
		} else {
			for _, a := range s.addrs {
				fmt.Fprintf(&b, " %s", a)
			}
		}
		b.WriteString(" }\n")
	}
	fmt.Fprintf(&b, "chain %s { type filter hook prerouting priority %d; policy accept;\n", SideDoorFilterChain, sdFilterPrio)
	for _, rl := range r.filter {
		b.WriteString("\t" + rl.text + "\n")
	}
	fmt.Fprintf(&b, "}\nchain %s { type nat hook prerouting priority %d; policy accept;\n", SideDoorNATChain, sdNATPrio)
	for _, rl := range r.nat {
		b.WriteString("\t" + rl.text + "\n")
	}
	b.WriteString("}\n")
	r.text = b.String()
	return r
}

// sdAddrRule: [ip saddr @src] ip daddr @dst <verdict>.
func sdAddrRule(f nftmodel.Fam, src, dst string, v expr.VerdictKind) sdRule {
	var ex []expr.Any
	var txt []string
	ex = append(ex, &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: nftmodel.Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nftmodel.Reg1, Data: []byte{nftmodel.NfprotoOf(f)}})
	if src != "" {
		ex = append(ex, nftmodel.AddrPayload(f, true, nftmodel.Reg1), &expr.Lookup{SourceRegister: nftmodel.Reg1, SetName: src})
		txt = append(txt, nftmodel.IPKeyword(f)+" saddr @"+src)
	}
	ex = append(ex, nftmodel.AddrPayload(f, false, nftmodel.Reg1), &expr.Lookup{SourceRegister: nftmodel.Reg1, SetName: dst})
	txt = append(txt, nftmodel.IPKeyword(f)+" daddr @"+dst)
	vt := "accept"
	if v == expr.VerdictReturn {
		vt = "return"
	}
	ex = append(ex, &expr.Verdict{Kind: v})
	return sdRule{text: strings.Join(append(txt, vt), " "), exprs: ex}
}

// sdDropRule: ip saddr @src [ip daddr @dst] meta l4proto P th dport [!=] port
// counter [log] drop.
func (e *Enforcer) sdDropRule(f nftmodel.Fam, src, dst string, proto byte, port uint16, notPort bool, door policy.SideDoor) sdRule {
	ex := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: nftmodel.Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nftmodel.Reg1, Data: []byte{nftmodel.NfprotoOf(f)}},
		nftmodel.AddrPayload(f, true, nftmodel.Reg1), &expr.Lookup{SourceRegister: nftmodel.Reg1, SetName: src},
	}
	txt := nftmodel.IPKeyword(f) + " saddr @" + src
	if dst != "" {
		ex = append(ex, nftmodel.AddrPayload(f, false, nftmodel.Reg1), &expr.Lookup{SourceRegister: nftmodel.Reg1, SetName: dst})
		txt += " " + nftmodel.IPKeyword(f) + " daddr @" + dst
	}
	op, opText := expr.CmpOpEq, ""
	if notPort {
		op, opText = expr.CmpOpNeq, "!= "
	}
	ex = append(ex,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: nftmodel.Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nftmodel.Reg1, Data: []byte{proto}},
		nftmodel.DportPayload(nftmodel.Reg1),
		&expr.Cmp{Op: op, Register: nftmodel.Reg1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Counter{})
	txt += fmt.Sprintf(" meta l4proto %s th dport %s%d counter", nftmodel.ProtoName(proto), opText, port)
	if e.opts.logGroup >= 0 {
		prefix := BypassLogPrefix + string(door)
		ex = append(ex, &expr.Log{Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX, Group: uint16(e.opts.logGroup), Data: []byte(prefix)})
		txt += fmt.Sprintf(" log prefix %q group %d", prefix, e.opts.logGroup)
	}
	ex = append(ex, &expr.Verdict{Kind: expr.VerdictDrop})
	return sdRule{text: txt + " drop", exprs: ex}
}

// sdRedirectRule: ip saddr @src meta l4proto P th dport 53 counter dnat to <to>.
func sdRedirectRule(f nftmodel.Fam, src string, proto byte, to netip.AddrPort) sdRule {
	ex := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: nftmodel.Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nftmodel.Reg1, Data: []byte{nftmodel.NfprotoOf(f)}},
		nftmodel.AddrPayload(f, true, nftmodel.Reg1), &expr.Lookup{SourceRegister: nftmodel.Reg1, SetName: src},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: nftmodel.Reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: nftmodel.Reg1, Data: []byte{proto}},
		nftmodel.DportPayload(nftmodel.Reg1),
		&expr.Cmp{Op: expr.CmpOpEq, Register: nftmodel.Reg1, Data: binaryutil.BigEndian.PutUint16(policy.DNSPort)},
		&expr.Counter{},
		&expr.Immediate{Register: 1, Data: to.Addr().Unmap().AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(to.Port())},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nftmodel.NfprotoOf(f)), RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	}
	return sdRule{text: fmt.Sprintf("%s saddr @%s meta l4proto %s th dport 53 counter dnat %s to %s", nftmodel.IPKeyword(f), src, nftmodel.ProtoName(proto), nftmodel.IPKeyword(f), to), exprs: ex}
}

// applySideDoorsLocked brings the side-door objects in line with the plan,
// in one transaction; nothing is sent when the rendering did not change.
func (e *Enforcer) applySideDoorsLocked(plan *policy.Plan) error {
	if e.opts.sideDoors == nil || plan == nil {
		return nil
	}
	r := e.renderSideDoors(plan)
	if r.text == e.sdApplied {
		return nil
	}
	ks, err := e.conn.GetSets(e.table)
	if err != nil {
		return fmt.Errorf("egress: side doors: list sets: %w", err)
	}
	c := e.enc
	c.AddTable(e.table)
	pol := nftables.ChainPolicyAccept
	filter := c.AddChain(&nftables.Chain{Name: SideDoorFilterChain, Table: e.table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(sdFilterPrio), Policy: &pol})
	nat := c.AddChain(&nftables.Chain{Name: SideDoorNATChain, Table: e.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(sdNATPrio), Policy: &pol})
	c.FlushChain(filter)
	c.FlushChain(nat)
	want := map[string]bool{}
	for _, s := range r.sets {
		want[s.name] = true
		obj := &nftables.Set{Table: e.table, Name: s.name, KeyType: nftmodel.AddrType(s.fam), Interval: s.interval, KeyByteOrder: binaryutil.BigEndian}
		if err := c.AddSet(obj, nil); err != nil {
			e.discard()
			return fmt.Errorf("egress: side doors: set %s: %w", s.name, err)
		}
		c.FlushSet(obj)
		var elems []nftables.SetElement
		if s.interval {
			elems = nftmodel.RangeElems(s.ranges)
		} else {
			for _, a := range s.addrs {
				elems = append(elems, nftables.SetElement{Key: a.AsSlice()})
			}
		}
		if err := e.addElems(obj, elems, elemChunk); err != nil {
			e.discard()
			return fmt.Errorf("egress: side doors: set %s: %w", s.name, err)
		}
	}
	for _, rl := range r.filter {
		c.AddRule(&nftables.Rule{Table: e.table, Chain: filter, Exprs: rl.exprs})
	}
	for _, rl := range r.nat {
		c.AddRule(&nftables.Rule{Table: e.table, Chain: nat, Exprs: rl.exprs})
	}
	for _, s := range ks {
		if !s.Anonymous && strings.HasPrefix(s.Name, sideDoorPrefix) && !want[s.Name] {
			c.DelSet(s)
		}
	}
	if err := e.flush("side doors"); err != nil {
		e.discard()
		e.sdApplied = ""
		return err
	}
	e.sdApplied = r.text
	e.log.Debug("side doors applied", "workload-addresses", r.workloadSets, "sets", len(r.sets), "rules", len(r.filter)+len(r.nat))
	return nil
}

// RenderSideDoors returns the side-door objects a plan renders to (nft-like
// syntax; empty without WithSideDoors).
func (e *Enforcer) RenderSideDoors(plan *policy.Plan) string {
	if e.opts.sideDoors == nil {
		return ""
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.renderSideDoors(plan).text
}

// SetDoHResolvers replaces the known DoH resolver addresses and re-applies the
// side-door rules for the last applied plan.
func (e *Enforcer) SetDoHResolvers(doh []netip.Prefix) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.opts.sideDoors == nil {
		return nil
	}
	e.opts.sideDoors.DoH = slices.Clone(doh)
	if e.st == nil || e.st.plan == nil {
		return nil
	}
	return e.applySideDoorsLocked(e.st.plan)
}

// SideDoorRuleCount returns the number of side-door rules the last applied
// rendering has (both chains), for /status and the docs' figures.
func (e *Enforcer) SideDoorRuleCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Count(e.sdApplied, "\n\t")
}

// Package egress is the enforcer: it turns a compiled policy.Plan into one
// nftables table (inet egressd) and keeps it up to date with atomic netlink
// transactions, and it deletes the conntrack entries of flows a change revoked.
//
// # Kernel objects
//
// Base chains (policy accept):
//
//	egress        hook forward prio 0   ct state established,related accept; ct state invalid drop;
//	                                    ip saddr vmap @eg_v4; ip6 saddr vmap @eg_v6
//	ingress       hook forward prio 10  … ip daddr vmap @in_v4; ip6 daddr vmap @in_v6
//	egress_local  hook input   prio 0   ct state established,related accept; node resolver
//	                                    (DNS, TCP+UDP) accept; ip saddr vmap @eg_v4; …
//
// An accept in egress only ends the egress direction; the ingress chain (a
// separate base chain on the same hook) still decides the destination's side.
// Traffic the node itself originates (hook output: kubelet probes, the node's
// own clients) is not filtered: Kubernetes expects the node to reach its pods.
//
// Dispatch maps eg_v4/eg_v6 (source workload address) and in_v4/in_v6
// (destination workload address) map each enforced workload address to "jump
// prog_<e|i>_<hash(Program.Key())>". A workload whose program is empty has no
// entry (the base chain's accept is the default), or "drop" when the default
// verdict is Deny. Program chains are shared by every workload with the same
// program, so the number of rules a packet crosses depends on the policies that
// select its workload, never on the number of policies on the node:
//
//	prog_e_<h>       per Admin priority group: jump pol_e_<p> (a group of one), or
//	                 jump every pol_e_<p>_d, then every pol_e_<p>_a, then every
//	                 pol_e_<p>_p (equal priority: deny beats allow beats pass);
//	                 goto prog_e_<h>_rest
//	prog_e_<h>_rest  isolated: jump every pol_e_<p>_nd, then every pol_e_<p>_na, drop;
//	                 else the Baseline groups like Admin, then the default verdict.
//
// Per-policy chains pol_<e|i>_<hash(PolicyRef)>[_d|_a|_p|_nd|_na] are shared by
// every workload the policy selects. A rule renders as "<peer> <port> <verdict>",
// one nft rule per (peer variant × port variant): peers are interval sets
// r_<ruleID>_v4/_v6 of the rule's prefixes (daddr for egress, saddr for
// ingress), and for FQDN rules the concatenated timeout sets fq_<ruleID>_v4/_v6
// (ip saddr . ip daddr, filled by the resolver, see FQDNSetName); ports are
// "meta l4proto P th dport A-B" or the set np_<ruleID>_v4/_v6 (ip daddr . meta
// l4proto . th dport) of resolved named ports. Verdicts: Allow accept, Deny
// counter [log group N] drop, Pass "ip saddr vmap @egp_v4" (ingress: ip daddr
// vmap @inp_v4), a map from the workload's address to "goto
// prog_<dir>_<h>_rest" of its own program.
//
// # Transactions
//
// The first Apply (or Changes.Full) renders the whole table in one netlink
// batch. When the table exists (a restart), it is adopted in the same single
// batch: every existing chain is flushed and refilled, maps and rule sets are
// flushed and refilled, objects no longer wanted are deleted, FQDN sets are kept
// with their elements and timeouts. nftables applies the batch atomically, so no
// packet ever sees a partial ruleset. Later Applies send only differences:
// re-rendered chains of changed policies, set element changes of changed rules,
// program chains that appear or disappear, and map elements of changed workloads.
package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/egressd/egressd/policy"
	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// DefaultTable is the name of the inet table.
const DefaultTable = "egressd"

// DefaultDNSExempt is the node-local resolver address pods may always reach.
var DefaultDNSExempt = []netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:53")}

// Option configures an Enforcer.
type Option func(*options)

type options struct {
	table     string
	netns     int
	node      string
	def       policy.Verdict
	logGroup  int
	logger    *slog.Logger
	dnsExempt []netip.AddrPort
	decide    func(policy.Connection) policy.Verdict
}

// WithTable sets the table name (default "egressd").
func WithTable(name string) Option { return func(o *options) { o.table = name } }

// WithNetNS makes the Enforcer work in the network namespace of fd (nftables and
// conntrack); without it, the process's namespace.
func WithNetNS(fd int) Option { return func(o *options) { o.netns = fd } }

// WithNode enforces only workloads whose PlanWorkload.Node is node ("" : all).
func WithNode(node string) Option { return func(o *options) { o.node = node } }

// WithDefaultVerdict overrides the plan's default verdict.
func WithDefaultVerdict(v policy.Verdict) Option { return func(o *options) { o.def = v } }

// WithNFLog logs denied packets to nflog group g before dropping them.
func WithNFLog(g uint16) Option { return func(o *options) { o.logGroup = int(g) } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithDNSExempt sets the node resolver addresses (TCP and UDP) that pods may
// always reach on the node (default 169.254.20.10:53; none with no arguments).
func WithDNSExempt(aps ...netip.AddrPort) Option {
	return func(o *options) { o.dnsExempt = slices.Clone(aps) }
}

// WithRevocation makes Apply delete the conntrack entries of enforced workloads
// that decide (the agent passes the reference engine) now denies, after every
// Apply that changed policies, rules or workloads.
func WithRevocation(decide func(policy.Connection) policy.Verdict) Option {
	return func(o *options) { o.decide = decide }
}

// Enforcer programs the table. Its methods are safe for concurrent use (they
// serialize).
type Enforcer struct {
	mu    sync.Mutex
	opts  options
	conn  *nftables.Conn
	table *nftables.Table
	log   *slog.Logger
	st    *state // nil: the next Apply is full
}

// New returns an Enforcer. It does not touch the kernel before Apply.
func New(opts ...Option) (*Enforcer, error) {
	o := options{table: DefaultTable, logGroup: -1, dnsExempt: DefaultDNSExempt}
	for _, f := range opts {
		f(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.table == "" {
		return nil, errors.New("egress: empty table name")
	}
	e := &Enforcer{opts: o, log: o.logger, table: &nftables.Table{Name: o.table, Family: nftables.TableFamilyINet}}
	conn, err := e.dial()
	if err != nil {
		return nil, err
	}
	e.conn = conn
	return e, nil
}

func (e *Enforcer) dial() (*nftables.Conn, error) {
	copts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers(256 << 20))}
	if e.opts.netns > 0 {
		copts = append(copts, nftables.WithNetNSFd(e.opts.netns))
	}
	conn, err := nftables.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("egress: netlink: %w", err)
	}
	return conn, nil
}

// bigBuffers raises the socket buffers: a batch is one sendmsg, and the kernel
// queues one ack per message.
func bigBuffers(n int) nftables.SockOption {
	return func(c *netlink.Conn) error {
		rc, err := c.SyscallConn()
		if err != nil {
			return nil
		}
		_ = rc.Control(func(fd uintptr) {
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, n)
			}
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n)
			}
		})
		return nil
	}
}

// Table returns the name of the table.
func (e *Enforcer) Table() string { return e.opts.table }

// Close releases the netlink connection; the kernel state stays in place.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		return nil
	}
	err := e.conn.CloseLasting()
	e.conn = nil
	return err
}

// Remove deletes the table (and everything in it, FQDN sets included).
func (e *Enforcer) Remove(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.conn == nil {
		return errors.New("egress: closed")
	}
	e.st = nil
	if _, err := e.conn.ListTableOfFamily(e.opts.table, nftables.TableFamilyINet); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("egress: list table: %w", err)
	}
	e.conn.DelTable(e.table)
	if err := e.conn.Flush(); err != nil {
		return fmt.Errorf("egress: delete table: %w", err)
	}
	return nil
}

// --- state -------------------------------------------------------------------------

type polObjs struct {
	chains []string
	sets   []string
}

type wlState struct {
	ips  []netip.Addr
	prog [2]string // head program chain per direction (policy.Directions order), "" none
}

// state is what the kernel holds (as this Enforcer programmed it).
type state struct {
	def       policy.Verdict
	chains    map[string]*chainDef
	sets      map[string]*setDef
	vmaps     [numVmaps]map[netip.Addr]vtarget
	policies  map[policy.PolicyRef]*polObjs
	progUsers map[string]int
	wls       map[policy.WorkloadKey]*wlState
	plan      *policy.Plan
}

func newState(def policy.Verdict) *state {
	st := &state{
		def:       def,
		chains:    map[string]*chainDef{},
		sets:      map[string]*setDef{},
		policies:  map[policy.PolicyRef]*polObjs{},
		progUsers: map[string]int{},
		wls:       map[policy.WorkloadKey]*wlState{},
	}
	for i := range st.vmaps {
		st.vmaps[i] = map[netip.Addr]vtarget{}
	}
	return st
}

// tx is the set of changes of one Apply, against a state.
type tx struct {
	chains map[string]*chainDef // nil value: delete
	sets   map[string]*setDef   // nil value: delete
	vm     [numVmaps]map[netip.Addr]*vtarget
}

func newTx() *tx {
	t := &tx{chains: map[string]*chainDef{}, sets: map[string]*setDef{}}
	for i := range t.vm {
		t.vm[i] = map[netip.Addr]*vtarget{}
	}
	return t
}

func (e *Enforcer) defVerdict(plan *policy.Plan) policy.Verdict {
	if e.opts.def != "" {
		return e.opts.def
	}
	if plan.DefaultVerdict == "" {
		return policy.Allow
	}
	return plan.DefaultVerdict
}

func (e *Enforcer) enforced(w *policy.PlanWorkload) bool {
	return w != nil && (e.opts.node == "" || w.Node == e.opts.node)
}

// setPolicy renders a policy (nil: removed) into the tx and the state's bookkeeping.
func (e *Enforcer) setPolicy(st *state, t *tx, ref policy.PolicyRef, pp *policy.PlanPolicy) {
	old := st.policies[ref]
	var objs *polObjs
	keep := map[string]bool{}
	if pp != nil {
		chains, sets := e.renderPolicy(pp)
		objs = &polObjs{}
		for _, c := range chains {
			t.chains[c.name] = c
			objs.chains = append(objs.chains, c.name)
			keep[c.name] = true
		}
		for _, s := range sets {
			t.sets[s.name] = s
			objs.sets = append(objs.sets, s.name)
			keep[s.name] = true
		}
		st.policies[ref] = objs
	} else {
		delete(st.policies, ref)
	}
	if old != nil {
		for _, c := range old.chains {
			if !keep[c] {
				t.chains[c] = nil
			}
		}
		for _, s := range old.sets {
			if !keep[s] {
				t.sets[s] = nil
			}
		}
	}
}

// setWorkload updates the maps and program chains of one workload (pw nil or
// not enforced: removed).
func (e *Enforcer) setWorkload(st *state, t *tx, key policy.WorkloadKey, pw *policy.PlanWorkload) {
	old := st.wls[key]
	var nw *wlState
	want := map[int]map[netip.Addr]vtarget{}
	if e.enforced(pw) {
		nw = &wlState{ips: slices.Clone(pw.IPs)}
		for di, dir := range policy.Directions {
			prog := pw.Program(dir)
			var tgt vtarget
			if prog.Empty() {
				if st.def != policy.Deny {
					continue
				}
				tgt = vtarget{kind: vDrop}
			} else {
				head := programChain(dir, prog.Key(), false)
				nw.prog[di] = head
				if st.progUsers[head] == 0 {
					for _, c := range e.renderProgram(dir, prog, st.def) {
						t.chains[c.name] = c
					}
				}
				st.progUsers[head]++
				tgt = vtarget{kind: vJump, chain: head}
			}
			for _, ip := range pw.IPs {
				ip = ip.Unmap()
				f := famOf(ip)
				i := vmapIndex(dir, f, false)
				if want[i] == nil {
					want[i] = map[netip.Addr]vtarget{}
				}
				want[i][ip] = tgt
				if len(prog.Admin) > 0 {
					p := vmapIndex(dir, f, true)
					if want[p] == nil {
						want[p] = map[netip.Addr]vtarget{}
					}
					want[p][ip] = vtarget{kind: vGoto, chain: programChain(dir, prog.Key(), true)}
				}
			}
		}
		st.wls[key] = nw
	} else {
		delete(st.wls, key)
	}
	if old != nil {
		for di, dir := range policy.Directions {
			head := old.prog[di]
			if head == "" {
				continue
			}
			st.progUsers[head]--
			if st.progUsers[head] <= 0 {
				delete(st.progUsers, head)
				t.chains[head] = nil
				t.chains[head+"_rest"] = nil
			}
			_ = dir
		}
		for i := range t.vm {
			for _, ip := range old.ips {
				ip = ip.Unmap()
				if _, ok := want[i][ip]; ok {
					continue
				}
				if _, ok := st.vmaps[i][ip]; ok {
					t.vm[i][ip] = nil
				}
			}
		}
	}
	for i, m := range want {
		for ip, tgt := range m {
			tgt := tgt
			t.vm[i][ip] = &tgt
		}
	}
}

// Apply brings the kernel in line with plan. The first call, or changes.Full,
// renders (or adopts) the whole table in one transaction; later calls apply
// the differences changes names.
func (e *Enforcer) Apply(ctx context.Context, plan *policy.Plan, changes policy.Changes) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if e.conn == nil {
		return errors.New("egress: closed")
	}
	if plan == nil {
		return errors.New("egress: nil plan")
	}
	full := changes.Full || e.st == nil || e.st.def != e.defVerdict(plan)
	var err error
	if full {
		err = e.applyFull(plan)
	} else if !changes.Empty() {
		err = e.applyIncremental(plan, changes)
	} else {
		e.st.plan = plan
	}
	if err != nil {
		e.st = nil // resynchronise from the kernel on the next Apply
		return err
	}
	if e.opts.decide != nil && (full || len(changes.Policies) > 0 || len(changes.Rules) > 0 || len(changes.Workloads) > 0) {
		n, rerr := e.revokeLocked(plan, e.opts.decide)
		if rerr != nil {
			e.log.Warn("conntrack revocation failed", "err", rerr)
			return fmt.Errorf("egress: revoke: %w", rerr)
		}
		if n > 0 {
			e.log.Info("revoked connections", "count", n)
		}
	}
	return nil
}

// build renders the whole plan into a tx against an empty state.
func (e *Enforcer) build(plan *policy.Plan) (*state, *tx) {
	st := newState(e.defVerdict(plan))
	t := newTx()
	for _, c := range e.baseChains() {
		t.chains[c.name] = c
	}
	refs := make([]policy.PolicyRef, 0, len(plan.Policies))
	for ref := range plan.Policies {
		refs = append(refs, ref)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	for _, ref := range refs {
		e.setPolicy(st, t, ref, plan.Policies[ref])
	}
	for key, pw := range plan.Workloads {
		e.setWorkload(st, t, key, pw)
	}
	st.plan = plan
	return st, t
}

func (e *Enforcer) applyIncremental(plan *policy.Plan, ch policy.Changes) error {
	st := e.st
	t := newTx()
	pols := map[policy.PolicyRef]bool{}
	for _, ref := range ch.Policies {
		pols[ref] = true
	}
	for _, r := range ch.Rules {
		pols[r.Policy] = true
	}
	for ref := range pols {
		e.setPolicy(st, t, ref, plan.Policies[ref])
	}
	for _, key := range ch.Workloads {
		e.setWorkload(st, t, key, plan.Workloads[key])
	}
	if err := e.emitIncremental(st, t); err != nil {
		return err
	}
	st.plan = plan
	return nil
}

// Render returns the ruleset the plan renders to, in nft syntax (for debugging;
// sets list their elements, FQDN sets are shown empty).
func (e *Enforcer) Render(plan *policy.Plan) string {
	st, t := e.build(plan)
	commit(st, t)
	return st.text(e.opts.table)
}

// commit applies a tx to the state's kernel model.
func commit(st *state, t *tx) {
	for n, c := range t.chains {
		if c == nil {
			delete(st.chains, n)
		} else {
			st.chains[n] = c
		}
	}
	for n, s := range t.sets {
		if s == nil {
			delete(st.sets, n)
		} else {
			st.sets[n] = s
		}
	}
	for i := range t.vm {
		for ip, v := range t.vm[i] {
			if v == nil {
				delete(st.vmaps[i], ip)
			} else {
				st.vmaps[i][ip] = *v
			}
		}
	}
}

func (st *state) text(table string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", table)
	var names []string
	for n := range st.sets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := st.sets[n]
		var typ, flags string
		var elems []string
		switch s.kind {
		case skPrefix:
			typ, flags = ipKw(s.fam)+"_addr", "interval"
			for _, r := range ranges(s.prefixes) {
				if r.lo == r.hi {
					elems = append(elems, r.lo.String())
				} else {
					elems = append(elems, r.lo.String()+"-"+r.hi.String())
				}
			}
		case skNamedPort:
			typ = ipKw(s.fam) + "_addr . inet_proto . inet_service"
			for _, np := range s.nports {
				elems = append(elems, fmt.Sprintf("%s . %s . %d", np.Addr, strings.ToLower(string(np.Protocol)), np.Port))
			}
		case skFQDN:
			typ, flags = ipKw(s.fam)+"_addr . "+ipKw(s.fam)+"_addr", "timeout"
		}
		typ = strings.ReplaceAll(typ, "ip6_addr", "ipv6_addr")
		typ = strings.ReplaceAll(typ, "ip_addr", "ipv4_addr")
		fmt.Fprintf(&b, "\tset %s {\n\t\ttype %s\n", n, typ)
		if flags != "" {
			fmt.Fprintf(&b, "\t\tflags %s\n", flags)
		}
		if len(elems) > 0 {
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
		}
		b.WriteString("\t}\n")
	}
	for i, m := range st.vmaps {
		typ := "ipv4_addr"
		if i%2 == 1 {
			typ = "ipv6_addr"
		}
		fmt.Fprintf(&b, "\tmap %s {\n\t\ttype %s : verdict\n", vmapNames[i], typ)
		var ips []netip.Addr
		for ip := range m {
			ips = append(ips, ip)
		}
		slices.SortFunc(ips, netip.Addr.Compare)
		var elems []string
		for _, ip := range ips {
			v := m[ip]
			s := map[verdictKind]string{vJump: "jump " + v.chain, vGoto: "goto " + v.chain, vDrop: "drop", vAccept: "accept"}[v.kind]
			elems = append(elems, ip.String()+" : "+s)
		}
		if len(elems) > 0 {
			fmt.Fprintf(&b, "\t\telements = { %s }\n", strings.Join(elems, ", "))
		}
		b.WriteString("\t}\n")
	}
	names = names[:0]
	for n := range st.chains {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		bi, bj := st.chains[names[i]].base != nil, st.chains[names[j]].base != nil
		if bi != bj {
			return bi
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		c := st.chains[n]
		fmt.Fprintf(&b, "\tchain %s {\n", n)
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
	}
	b.WriteString("}\n")
	return b.String()
}

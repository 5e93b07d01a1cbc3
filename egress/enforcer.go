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
// (destination workload address) map each enforced workload address to the
// first chain of its program for the direction. A workload whose program is
// empty has no entry (the base chain's accept is the default), or "drop" when
// the default verdict is Deny. A program is split into two shared parts, so
// the number of rules a packet crosses depends on the policies that select its
// workload, never on the number of policies on the node:
//
//	adm_<e|i>_<h>   the Admin groups (h: hash of the groups), shared by every
//	                workload with the same Admin policies: per group, jump
//	                pol_<p> (a group of one), or jump every pol_<p>_d, then
//	                every pol_<p>_a, then every pol_<p>_p (equal priority: deny
//	                beats allow beats pass); then "ip saddr vmap @egp_v4" (ingress
//	                ip daddr vmap @inp_v4), the pass map, which sends the workload
//	                to its own rest chain (goto).
//	prog_<e|i>_<h>  the rest (h: hash of the namespaced policies or Baseline
//	                groups): isolated, jump every pol_<p>_nd, then every
//	                pol_<p>_na, drop; else the Baseline groups like Admin, then
//	                the default verdict.
//
// A workload with Admin policies is dispatched to adm_*, others to prog_*.
//
// Per-policy chains pol_<e|i>_<hash(PolicyRef)>[_d|_a|_p|_nd|_na] are shared by
// every workload the policy selects; only non-empty chains that some program
// chain jumps to are in the kernel (no _nd for a policy without Deny rules,
// check chains only for groups of equal priority). A rule renders as "<peer>
// <port> <verdict>", one nft rule per family variant: a family's peers are
// matched inline when they merge into one address range, else by an interval
// set r4_/r6_<digest of the ranges> shared by every rule with the same
// addresses (daddr for egress, saddr for ingress); FQDN rules match the
// concatenated timeout sets fq_<ruleID>_v4/_v6 (ip saddr . ip daddr, filled by
// the resolver, see FQDNSetName); a Deny rule with exact names also matches
// "ip daddr @fqd_<ruleID>_v4/_v6", the addresses egressd resolved itself for
// them (DenySetName). Ports: one entry renders inline ("meta
// l4proto P th dport A-B"), several one anonymous interval set "meta l4proto
// . th dport { tcp . 80, udp . 53 }"; resolved named ports the set
// np4_/np6_<digest> (ip daddr . meta l4proto . th dport). Verdicts: Allow
// accept, Deny counter [log group N] drop, Pass the pass map.
//
// # Transactions
//
// The first Apply (or Changes.Full) renders the whole table in one netlink
// batch. When the table exists (a restart), it is adopted in the same single
// batch: every existing chain is flushed and refilled, maps are flushed and
// refilled, content-named sets and FQDN sets (with their elements and
// timeouts) are kept, objects no longer wanted are deleted. nftables applies
// the batch atomically, so no packet ever sees a partial ruleset. Later Applies
// send only differences: policy and program chains whose rendering changed
// (flushed and refilled), chains and sets that appear or disappear, and map
// elements of changed workloads. Batches are sent in one sendmsg without
// per-message acknowledgements (see batcher).
package egress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/egressd/egressd/egress/nftmodel"
	"github.com/egressd/egressd/ipset"

	"github.com/egressd/egressd/ipset/nftset"
	"github.com/egressd/egressd/policy"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// DefaultTable is the name of the inet table.
const DefaultTable = "egressd"

// DefaultDNSExempt is the node-local resolver address pods may always reach.
var DefaultDNSExempt = []netip.AddrPort{netip.MustParseAddrPort("169.254.20.10:53")}

// FQDNSetName returns the name of the kernel set of an FQDN rule for a family
// (nftmodel.FQDNSetName): the concatenated set (workload address . answer
// address, with timeouts) the Enforcer creates and the resolver fills.
func FQDNSetName(ruleID string, family ipset.Family) string {
	return nftmodel.FQDNSetName(ruleID, family)
}

// FQDNSetSpec returns the ipset.Spec of an FQDN rule's set
// (nftmodel.FQDNSetSpec).
func FQDNSetSpec(ruleID string, family ipset.Family) ipset.Spec {
	return nftmodel.FQDNSetSpec(ruleID, family)
}

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
	sideDoors *SideDoors // sidedoors.go; nil: none
	// planObserver is told every applied plan (denyset.go); nil: none.
	planObserver func(*policy.Plan)
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
	conn  *nftables.Conn // listings and Remove
	enc   *nftables.Conn // encodes transactions for bat
	bat   *batcher
	table *nftables.Table
	log   *slog.Logger
	nft   nftmodel.Encoder // the model's nftables objects for the table
	st    *state           // nil: the next Apply is full
	// sdApplied is the side-door rendering in the kernel ("": unknown).
	sdApplied string
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
	e.nft = nftmodel.Encoder{Table: e.table, LogGroup: o.logGroup, LogPrefix: LogPrefix}
	conn, err := e.dial()
	if err != nil {
		return nil, err
	}
	e.conn = conn
	if e.bat, err = dialBatcher(o.netns, 256<<20); err != nil {
		conn.CloseLasting()
		return nil, fmt.Errorf("egress: netlink: %w", err)
	}
	if e.enc, err = e.bat.encoder(); err != nil {
		conn.CloseLasting()
		e.bat.close()
		return nil, fmt.Errorf("egress: netlink: %w", err)
	}
	return e, nil
}

func (e *Enforcer) dial() (*nftables.Conn, error) {
	copts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(nftset.BufferForce(256 << 20))}
	if e.opts.netns > 0 {
		copts = append(copts, nftables.WithNetNSFd(e.opts.netns))
	}
	conn, err := nftables.New(copts...)
	if err != nil {
		return nil, fmt.Errorf("egress: netlink: %w", err)
	}
	return conn, nil
}

// Table returns the name of the table.
func (e *Enforcer) Table() string { return e.opts.table }

// SetCounts lists the named sets and maps of the table with their element
// counts (an interval counts once), counted from a streamed dump without
// keeping the elements, at most limit per set (nftset.Counts): the kernel
// sets of /status.
func (e *Enforcer) SetCounts(ctx context.Context, limit int) ([]nftset.SetCount, error) {
	return nftset.Counts(ctx, e.opts.table, limit)
}

// Close releases the netlink connection; the kernel state stays in place.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn == nil {
		return nil
	}
	err := e.conn.CloseLasting()
	e.conn = nil
	if berr := e.bat.close(); err == nil {
		err = berr
	}
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
	e.sdApplied = ""
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

type wlState struct {
	ips   []netip.Addr
	progs []string // program chains the workload uses (adm_*, prog_*)
}

// state is the model of what the kernel holds (as this Enforcer programmed
// it) and of what it should hold.
type state struct {
	def policy.Verdict
	// Kernel contents.
	chains map[string]*nftmodel.Chain
	sets   map[string]*nftmodel.Set
	vmaps  [nftmodel.NumVmaps]map[netip.Addr]nftmodel.VmapTarget
	// Wanted contents.
	base       map[string]*nftmodel.Chain
	pols       map[policy.PolicyRef]*nftmodel.PolicyChains
	polChains  map[string]*nftmodel.Chain // every non-empty policy chain, by name
	chainUsers map[string]int             // policy chain → program chains jumping to it
	setDefs    map[string]*nftmodel.Set
	setRefs    map[string]int // set → policies using it
	progs      map[string]*nftmodel.Program
	polProgs   map[policy.PolicyRef]map[string]bool // policy → program chains naming it
	wls        map[policy.WorkloadKey]*wlState
	plan       *policy.Plan
}

func newState(def policy.Verdict) *state {
	st := &state{
		def:        def,
		chains:     map[string]*nftmodel.Chain{},
		sets:       map[string]*nftmodel.Set{},
		base:       map[string]*nftmodel.Chain{},
		pols:       map[policy.PolicyRef]*nftmodel.PolicyChains{},
		polChains:  map[string]*nftmodel.Chain{},
		chainUsers: map[string]int{},
		setDefs:    map[string]*nftmodel.Set{},
		setRefs:    map[string]int{},
		progs:      map[string]*nftmodel.Program{},
		polProgs:   map[policy.PolicyRef]map[string]bool{},
		wls:        map[policy.WorkloadKey]*wlState{},
	}
	for i := range st.vmaps {
		st.vmaps[i] = map[netip.Addr]nftmodel.VmapTarget{}
	}
	return st
}

// tx is what one Apply touched: chain and set names whose wanted contents may
// have changed, program chains to re-render, and map elements.
type tx struct {
	chains map[string]bool
	sets   map[string]bool
	dirty  map[string]bool // program chains
	vm     [nftmodel.NumVmaps]map[netip.Addr]*nftmodel.VmapTarget
}

func newTx() *tx {
	t := &tx{chains: map[string]bool{}, sets: map[string]bool{}, dirty: map[string]bool{}}
	for i := range t.vm {
		t.vm[i] = map[netip.Addr]*nftmodel.VmapTarget{}
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

// setPolicy renders a policy (nil: removed) into the state and marks what it
// touched; the program chains that name it are re-rendered (a policy chain
// that becomes empty or non-empty changes their jumps).
func (st *state) setPolicy(t *tx, ref policy.PolicyRef, pp *policy.PlanPolicy) {
	old := st.pols[ref]
	var nw *nftmodel.PolicyChains
	if pp != nil {
		nw = nftmodel.RenderPolicy(pp)
		st.pols[ref] = nw
	} else {
		delete(st.pols, ref)
	}
	if old != nil {
		for n := range old.Chains {
			delete(st.polChains, n)
			t.chains[n] = true
		}
		for _, s := range old.Sets {
			if st.setRefs[s.Name]--; st.setRefs[s.Name] <= 0 {
				delete(st.setRefs, s.Name)
				delete(st.setDefs, s.Name)
			}
			t.sets[s.Name] = true
		}
	}
	if nw != nil {
		for n, c := range nw.Chains {
			st.polChains[n] = c
			t.chains[n] = true
		}
		for _, s := range nw.Sets {
			st.setRefs[s.Name]++
			st.setDefs[s.Name] = s
			t.sets[s.Name] = true
		}
	}
	for p := range st.polProgs[ref] {
		t.dirty[p] = true
	}
}

// useProg takes (n>0) or releases (n<0) a program chain.
func (st *state) useProg(t *tx, pd *nftmodel.Program, n int) string {
	if cur, ok := st.progs[pd.Name]; ok {
		pd = cur
	} else {
		st.progs[pd.Name] = pd
		for _, ref := range pd.Refs() {
			m := st.polProgs[ref]
			if m == nil {
				m = map[string]bool{}
				st.polProgs[ref] = m
			}
			m[pd.Name] = true
		}
	}
	pd.Users += n
	if pd.Users <= 0 || n > 0 && pd.Users == n {
		t.dirty[pd.Name] = true // new or gone
	}
	return pd.Name
}

// setWorkload updates the maps and program chains of one workload (pw nil or
// not enforced: removed).
func (e *Enforcer) setWorkload(st *state, t *tx, key policy.WorkloadKey, pw *policy.PlanWorkload) {
	old := st.wls[key]
	want := map[int]map[netip.Addr]nftmodel.VmapTarget{}
	put := func(i int, ip netip.Addr, v nftmodel.VmapTarget) {
		if want[i] == nil {
			want[i] = map[netip.Addr]nftmodel.VmapTarget{}
		}
		want[i][ip] = v
	}
	if e.enforced(pw) {
		nw := &wlState{ips: slices.Clone(pw.IPs)}
		for _, dir := range policy.Directions {
			prog := pw.Program(dir)
			var tgt, pass nftmodel.VmapTarget
			if prog.Empty() {
				if st.def != policy.Deny {
					continue
				}
				tgt = nftmodel.VmapTarget{Kind: nftmodel.VDrop}
			} else {
				rk := nftmodel.RestKey(prog)
				rest := st.useProg(t, &nftmodel.Program{Name: nftmodel.RestChain(dir, rk), Dir: dir, Groups: prog.Baseline, Isolated: prog.Isolated, Ns: prog.Namespaced}, 1)
				nw.progs = append(nw.progs, rest)
				tgt = nftmodel.VmapTarget{Kind: nftmodel.VJump, Chain: rest}
				if len(prog.Admin) > 0 {
					adm := st.useProg(t, &nftmodel.Program{Name: nftmodel.AdminChain(dir, nftmodel.AdminKey(prog)), Dir: dir, Admin: true, Groups: prog.Admin}, 1)
					nw.progs = append(nw.progs, adm)
					tgt = nftmodel.VmapTarget{Kind: nftmodel.VJump, Chain: adm}
					pass = nftmodel.VmapTarget{Kind: nftmodel.VGoto, Chain: rest}
				}
			}
			for _, ip := range pw.IPs {
				ip = ip.Unmap()
				f := nftmodel.FamOf(ip)
				put(nftmodel.VmapIndex(dir, f, false), ip, tgt)
				if pass.Kind != 0 {
					put(nftmodel.VmapIndex(dir, f, true), ip, pass)
				}
			}
		}
		st.wls[key] = nw
	} else {
		delete(st.wls, key)
	}
	if old != nil {
		for _, name := range old.progs {
			st.useProg(t, st.progs[name], -1)
		}
		for i := range t.vm {
			for _, ip := range old.ips {
				ip = ip.Unmap()
				if _, ok := want[i][ip]; ok {
					continue
				}
				if _, ok := st.vmaps[i][ip]; ok || t.vm[i][ip] != nil {
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

// settle re-renders the dirty program chains and updates the policy chains'
// users.
func (st *state) settle(t *tx) {
	has := func(n string) bool { return st.polChains[n] != nil }
	for name := range t.dirty {
		pd := st.progs[name]
		if pd == nil {
			continue
		}
		t.chains[name] = true
		for _, j := range pd.Jumps {
			st.chainUsers[j]--
			if st.chainUsers[j] <= 0 {
				delete(st.chainUsers, j)
			}
			t.chains[j] = true
		}
		pd.Jumps = nil
		if pd.Users <= 0 {
			delete(st.progs, name)
			for _, ref := range pd.Refs() {
				if m := st.polProgs[ref]; m != nil {
					delete(m, name)
					if len(m) == 0 {
						delete(st.polProgs, ref)
					}
				}
			}
			continue
		}
		pd.Chain = nftmodel.RenderProg(pd, st.def, has)
		for _, j := range pd.Jumps {
			st.chainUsers[j]++
			t.chains[j] = true
		}
	}
}

// wantChain returns the chain the kernel should hold under a name (nil: none).
func (st *state) wantChain(n string) *nftmodel.Chain {
	if c := st.base[n]; c != nil {
		return c
	}
	if pd := st.progs[n]; pd != nil {
		return pd.Chain
	}
	if st.chainUsers[n] > 0 {
		return st.polChains[n]
	}
	return nil
}

// wantAll returns every chain and set the kernel should hold.
func (st *state) wantAll() (map[string]*nftmodel.Chain, map[string]*nftmodel.Set) {
	chains := map[string]*nftmodel.Chain{}
	for n, c := range st.base {
		chains[n] = c
	}
	for n, pd := range st.progs {
		chains[n] = pd.Chain
	}
	for n := range st.chainUsers {
		if c := st.polChains[n]; c != nil {
			chains[n] = c
		}
	}
	return chains, maps.Clone(st.setDefs)
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
		e.sdApplied = "" // re-check the side doors against the kernel
		err = e.applyFull(plan)
	} else if !changes.Empty() {
		err = e.applyIncremental(plan, changes)
	} else {
		e.st.plan = plan
	}
	if err == nil {
		err = e.applySideDoorsLocked(plan) // sidedoors.go
	}
	if err != nil {
		e.st = nil // resynchronise from the kernel on the next Apply
		return err
	}
	if e.opts.planObserver != nil {
		e.opts.planObserver(plan)
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

// build renders the whole plan into a new state (its kernel part empty).
func (e *Enforcer) build(plan *policy.Plan) *state {
	st := newState(e.defVerdict(plan))
	t := newTx()
	for _, c := range nftmodel.BaseChains(e.opts.dnsExempt) {
		st.base[c.Name] = c
	}
	for ref, pp := range plan.Policies {
		st.setPolicy(t, ref, pp)
	}
	for key, pw := range plan.Workloads {
		e.setWorkload(st, t, key, pw)
	}
	st.settle(t)
	st.commitVmaps(t) // the maps are empty: only additions
	st.plan = plan
	return st
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
		st.setPolicy(t, ref, plan.Policies[ref])
	}
	for _, key := range ch.Workloads {
		e.setWorkload(st, t, key, plan.Workloads[key])
	}
	st.settle(t)
	if err := e.emitIncremental(st, t); err != nil {
		return err
	}
	st.plan = plan
	return nil
}

// Render returns the ruleset the plan renders to, in nft syntax (for debugging;
// sets list their elements, FQDN sets are shown empty).
func (e *Enforcer) Render(plan *policy.Plan) string {
	st := e.build(plan)
	chains, sets := st.wantAll()
	return nftmodel.TableText(e.opts.table, sets, &st.vmaps, chains) // model.go

}

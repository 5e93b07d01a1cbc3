package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Elements per netlink message: the element list is one attribute, whose length
// is 16 bits.
const (
	elemChunk = 512
	vmapChunk = 256
)

func (e *Enforcer) chainObj(c *chainDef) *nftables.Chain {
	ch := &nftables.Chain{Name: c.name, Table: e.table}
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

func (e *Enforcer) addRules(c *chainDef) {
	ch := &nftables.Chain{Name: c.name, Table: e.table}
	for i := range c.rules {
		e.conn.AddRule(&nftables.Rule{Table: e.table, Chain: ch, Exprs: e.exprs(&c.rules[i])})
	}
}

func (e *Enforcer) addElems(s *nftables.Set, elems []nftables.SetElement, chunk int) error {
	for i := 0; i < len(elems); i += chunk {
		if err := e.conn.SetAddElements(s, elems[i:min(i+chunk, len(elems))]); err != nil {
			return err
		}
	}
	return nil
}

func (e *Enforcer) delElems(s *nftables.Set, elems []nftables.SetElement, chunk int) error {
	for i := 0; i < len(elems); i += chunk {
		if err := e.conn.SetDeleteElements(s, elems[i:min(i+chunk, len(elems))]); err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// flush sends the queued batch; on an encoding error the connection is replaced
// so that no half-built batch survives.
func (e *Enforcer) flush(what string) error {
	if err := e.conn.Flush(); err != nil {
		return fmt.Errorf("egress: %s: %w", what, err)
	}
	return nil
}

func (e *Enforcer) discard() {
	_ = e.conn.CloseLasting()
	if c, err := e.dial(); err == nil {
		e.conn = c
	}
}

// applyFull renders the whole plan; an existing table is adopted in the same
// transaction (FQDN sets and their elements are kept).
func (e *Enforcer) applyFull(plan *policy.Plan) error {
	t0 := time.Now()
	st, t := e.build(plan)
	e.log.Debug("full apply rendered", "took", time.Since(t0))
	kchains := map[string]bool{}
	ksets := map[string]*nftables.Set{}
	if _, err := e.conn.ListTableOfFamily(e.opts.table, nftables.TableFamilyINet); err == nil {
		chains, err := e.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("egress: list chains: %w", err)
		}
		for _, c := range chains {
			if c.Table.Name == e.opts.table {
				kchains[c.Name] = true
			}
		}
		sets, err := e.conn.GetSets(e.table)
		if err != nil {
			return fmt.Errorf("egress: list sets: %w", err)
		}
		for _, s := range sets {
			ksets[s.Name] = s
		}
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("egress: list table: %w", err)
	}
	commit(st, t)
	if err := e.emitFull(st, kchains, ksets); err != nil {
		e.discard()
		return err
	}
	e.st = st
	e.log.Debug("applied full ruleset", "chains", len(st.chains), "sets", len(st.sets), "adopted", len(kchains) > 0)
	return nil
}

func (e *Enforcer) emitFull(st *state, kchains map[string]bool, ksets map[string]*nftables.Set) error {
	c := e.conn
	c.AddTable(e.table)
	names := sortedKeys(st.chains)
	// Hooked chains and new chains first (jump targets must exist).
	for _, n := range names {
		if !kchains[n] || st.chains[n].base != nil {
			c.AddChain(e.chainObj(st.chains[n]))
		}
	}
	// Empty every existing chain: no rule references an old object any more.
	for _, n := range sortedKeys(kchains) {
		c.FlushChain(&nftables.Chain{Name: n, Table: e.table})
	}
	// Maps and rule sets that stay are emptied and refilled; unwanted ones go.
	kept := map[string]bool{}
	for _, n := range sortedKeys(ksets) {
		ks := ksets[n]
		want, isSet := st.sets[n]
		isMap := slices.Contains(vmapNames[:], n)
		switch {
		case isMap && ks.IsMap:
			c.FlushSet(ks)
			kept[n] = true
		case isSet && want.kind == skFQDN && ks.Concatenation && ks.HasTimeout:
			kept[n] = true // keep the resolver's elements and their timeouts
		case isSet && want.kind != skFQDN && sameKind(ks, want):
			c.FlushSet(ks)
			kept[n] = true
		default:
			c.DelSet(ks)
		}
	}
	// Chains that are no longer wanted (now empty and unreferenced: every chain was
	// flushed and every map emptied above).
	for _, n := range sortedKeys(kchains) {
		if _, ok := st.chains[n]; !ok {
			c.DelChain(&nftables.Chain{Name: n, Table: e.table})
		}
	}
	for _, n := range sortedKeys(st.sets) {
		s := st.sets[n]
		obj := e.nftSet(s)
		if kept[n] {
			if err := e.addElems(obj, e.setElems(s), elemChunk); err != nil {
				return fmt.Errorf("egress: set %s: %w", n, err)
			}
			continue
		}
		if ksets[n] != nil {
			// same name, different definition: it was deleted above; a new
			// object with that name in the same batch is refused by the kernel,
			// so fail loudly (names encode the kind, this does not happen).
			return fmt.Errorf("egress: set %s exists with another definition", n)
		}
		if err := c.AddSet(obj, nil); err != nil {
			return fmt.Errorf("egress: set %s: %w", n, err)
		}
		if err := e.addElems(obj, e.setElems(s), elemChunk); err != nil {
			return fmt.Errorf("egress: set %s: %w", n, err)
		}
	}
	for i := range st.vmaps {
		obj := e.vmapSet(i)
		if !kept[vmapNames[i]] {
			if err := c.AddSet(obj, nil); err != nil {
				return fmt.Errorf("egress: map %s: %w", vmapNames[i], err)
			}
		}
	}
	for _, n := range names {
		e.addRules(st.chains[n])
	}
	for i, m := range st.vmaps {
		obj := e.vmapSet(i)
		elems := make([]nftables.SetElement, 0, len(m))
		for ip, v := range m {
			elems = append(elems, vmapElem(ip, v))
		}
		if err := e.addElems(obj, elems, vmapChunk); err != nil {
			return fmt.Errorf("egress: map %s: %w", vmapNames[i], err)
		}
	}
	t0 := time.Now()
	err := e.flush("apply table")
	e.log.Debug("full apply flushed", "flush", time.Since(t0))
	return err
}

func sameKind(ks *nftables.Set, want *setDef) bool {
	switch want.kind {
	case skPrefix:
		return ks.Interval && !ks.Concatenation && !ks.IsMap
	case skNamedPort:
		return ks.Concatenation && !ks.Interval && !ks.HasTimeout && !ks.IsMap
	}
	return false
}

// emitIncremental sends the difference between the state (the kernel) and tx.
func (e *Enforcer) emitIncremental(st *state, t *tx) error {
	c := e.conn
	var addChains, changed, delChains []*chainDef
	for _, n := range sortedKeys(t.chains) {
		nc, oc := t.chains[n], st.chains[n]
		switch {
		case nc == nil && oc != nil:
			delChains = append(delChains, oc)
		case nc != nil && oc == nil:
			addChains = append(addChains, nc)
		case nc != nil && oc.text != nc.text:
			changed = append(changed, nc)
		}
	}
	var delSets []*setDef
	for _, n := range sortedKeys(t.sets) {
		ns, os := t.sets[n], st.sets[n]
		switch {
		case ns == nil && os != nil:
			delSets = append(delSets, os)
		case ns != nil && os == nil:
			obj := e.nftSet(ns)
			if err := c.AddSet(obj, nil); err != nil {
				e.discard()
				return fmt.Errorf("egress: set %s: %w", n, err)
			}
			if err := e.addElems(obj, e.setElems(ns), elemChunk); err != nil {
				e.discard()
				return fmt.Errorf("egress: set %s: %w", n, err)
			}
		case ns != nil && ns.kind != skFQDN && !ns.equalContent(os):
			if err := e.updateSet(os, ns); err != nil {
				e.discard()
				return fmt.Errorf("egress: set %s: %w", n, err)
			}
		}
	}
	for _, ch := range addChains {
		c.AddChain(e.chainObj(ch))
	}
	for _, ch := range changed {
		c.FlushChain(e.chainObj(ch))
		e.addRules(ch)
	}
	for _, ch := range addChains {
		e.addRules(ch)
	}
	for i := range t.vm {
		var del, add []nftables.SetElement
		for ip, v := range t.vm[i] {
			old, had := st.vmaps[i][ip]
			switch {
			case v == nil && had:
				del = append(del, vmapElem(ip, old))
			case v != nil && had && old != *v:
				del = append(del, vmapElem(ip, old))
				add = append(add, vmapElem(ip, *v))
			case v != nil && !had:
				add = append(add, vmapElem(ip, *v))
			}
		}
		obj := e.vmapSet(i)
		if err := e.delElems(obj, del, vmapChunk); err != nil {
			e.discard()
			return err
		}
		if err := e.addElems(obj, add, vmapChunk); err != nil {
			e.discard()
			return err
		}
	}
	for _, ch := range delChains {
		c.FlushChain(e.chainObj(ch))
	}
	for _, ch := range delChains {
		c.DelChain(e.chainObj(ch))
	}
	for _, s := range delSets {
		c.DelSet(e.nftSet(s))
	}
	if err := e.flush("apply changes"); err != nil {
		e.discard()
		return err
	}
	commit(st, t)
	return nil
}

// updateSet queues the element changes that turn old into new.
func (e *Enforcer) updateSet(old, nw *setDef) error {
	obj := e.nftSet(nw)
	switch nw.kind {
	case skPrefix:
		or, nr := ranges(old.prefixes), ranges(nw.prefixes)
		in := func(rs []addrRange, r addrRange) bool {
			i := sort.Search(len(rs), func(i int) bool { return rs[i].lo.Compare(r.lo) >= 0 })
			return i < len(rs) && rs[i] == r
		}
		var del, add []addrRange
		for _, r := range or {
			if !in(nr, r) {
				del = append(del, r)
			}
		}
		for _, r := range nr {
			if !in(or, r) {
				add = append(add, r)
			}
		}
		if err := e.delElems(obj, rangeElems(del), elemChunk); err != nil {
			return err
		}
		return e.addElems(obj, rangeElems(add), elemChunk)
	case skNamedPort:
		oldSet := map[namedKey]bool{}
		for _, n := range old.nports {
			oldSet[namedKey{n.Addr, n.Protocol, n.Port}] = true
		}
		newSet := map[namedKey]bool{}
		for _, n := range nw.nports {
			newSet[namedKey{n.Addr, n.Protocol, n.Port}] = true
		}
		var del, add []policy.NamedPortTarget
		for _, n := range old.nports {
			if !newSet[namedKey{n.Addr, n.Protocol, n.Port}] {
				del = append(del, n)
			}
		}
		for _, n := range nw.nports {
			if !oldSet[namedKey{n.Addr, n.Protocol, n.Port}] {
				add = append(add, n)
			}
		}
		if err := e.delElems(obj, namedElems(del), elemChunk); err != nil {
			return err
		}
		return e.addElems(obj, namedElems(add), elemChunk)
	}
	return nil
}

type namedKey struct {
	addr  netip.Addr
	proto policy.Protocol
	port  uint16
}

func (k namedKey) String() string {
	return strings.Join([]string{k.addr.String(), string(k.proto), fmt.Sprint(k.port)}, "/")
}

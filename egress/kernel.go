package egress

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/egressd/egressd/egress/nftmodel"
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

func (e *Enforcer) addRules(c *nftmodel.Chain) error {
	ch := &nftables.Chain{Name: c.Name, Table: e.table}
	var err error
	anon := func(m *nftmodel.Match) (string, uint32) {
		s, elems := e.nft.PortSet(m)
		if aerr := e.enc.AddSet(s, elems); aerr != nil && err == nil {
			err = fmt.Errorf("chain %s: port set: %w", c.Name, aerr)
		}
		return s.Name, s.ID
	}
	for i := range c.Rules {
		e.enc.AddRule(&nftables.Rule{Table: e.table, Chain: ch, Exprs: e.nft.Exprs(&c.Rules[i], anon)})
	}
	return err
}

func (e *Enforcer) addElems(s *nftables.Set, elems []nftables.SetElement, chunk int) error {
	for i := 0; i < len(elems); i += chunk {
		if err := e.enc.SetAddElements(s, elems[i:min(i+chunk, len(elems))]); err != nil {
			return err
		}
	}
	return nil
}

func (e *Enforcer) delElems(s *nftables.Set, elems []nftables.SetElement, chunk int) error {
	for i := 0; i < len(elems); i += chunk {
		if err := e.enc.SetDeleteElements(s, elems[i:min(i+chunk, len(elems))]); err != nil {
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
	if err := e.enc.Flush(); err != nil {
		return fmt.Errorf("egress: %s: %w", what, err)
	}
	return nil
}

// discard drops whatever the encoder holds (after an encoding or kernel
// error), so that no half-built batch survives.
func (e *Enforcer) discard() {
	if c, err := e.bat.encoder(); err == nil {
		e.enc = c
	}
}

// applyFull renders the whole plan; an existing table is adopted in the same
// transaction (FQDN sets and their elements are kept, so are content-named
// sets: their name is a digest of their elements).
// foreignObject reports whether a chain or set of the table belongs to another
// component (the L7 redirect and the DNS interception, "l7_*"): a full apply
// leaves those untouched, and so are the side doors ("sd_*", applied after
// the plan by applySideDoorsLocked).
func foreignObject(name string) bool {
	return strings.HasPrefix(name, "l7_") || strings.HasPrefix(name, sideDoorPrefix)
}

func (e *Enforcer) applyFull(plan *policy.Plan) error {
	t0 := time.Now()
	st := e.build(plan)
	chains, sets := st.wantAll()
	e.log.Debug("full apply rendered", "took", time.Since(t0))
	kchains := map[string]bool{}
	ksets := map[string]*nftables.Set{}
	if _, err := e.conn.ListTableOfFamily(e.opts.table, nftables.TableFamilyINet); err == nil {
		kc, err := e.conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
		if err != nil {
			return fmt.Errorf("egress: list chains: %w", err)
		}
		for _, c := range kc {
			if c.Table.Name == e.opts.table && !foreignObject(c.Name) {
				kchains[c.Name] = true
			}
		}
		ks, err := e.conn.GetSets(e.table)
		if err != nil {
			return fmt.Errorf("egress: list sets: %w", err)
		}
		for _, s := range ks {
			if !s.Anonymous && !foreignObject(s.Name) {
				ksets[s.Name] = s
			}
		}
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("egress: list table: %w", err)
	}
	if err := e.emitFull(st, chains, sets, kchains, ksets); err != nil {
		e.discard()
		return err
	}
	st.chains, st.sets = chains, sets
	e.st = st
	e.log.Debug("applied full ruleset", "chains", len(chains), "sets", len(sets), "adopted", len(kchains) > 0)
	return nil
}

func (e *Enforcer) emitFull(st *state, chains map[string]*nftmodel.Chain, sets map[string]*nftmodel.Set, kchains map[string]bool, ksets map[string]*nftables.Set) error {
	c := e.enc
	c.AddTable(e.table)
	names := sortedKeys(chains)
	// Hooked chains and new chains first (jump targets must exist).
	for _, n := range names {
		if !kchains[n] || chains[n].Base != nil {
			c.AddChain(e.nft.Chain(chains[n]))
		}
	}
	// Empty every existing chain: no rule references an old object any more.
	for _, n := range sortedKeys(kchains) {
		c.FlushChain(&nftables.Chain{Name: n, Table: e.table})
	}
	// Maps are emptied and refilled; FQDN sets and content-named sets that stay
	// are kept as they are; unwanted ones go.
	kept := map[string]bool{}
	for _, n := range sortedKeys(ksets) {
		ks := ksets[n]
		want, isSet := sets[n]
		isMap := slices.Contains(nftmodel.VmapNames[:], n)
		switch {
		case isMap && ks.IsMap:
			c.FlushSet(ks)
			kept[n] = true
		case isSet && want.Kind == nftmodel.SkFQDN && ks.Concatenation && ks.HasTimeout:
			kept[n] = true // keep the resolver's elements and their timeouts
		case isSet && want.Kind == nftmodel.SkFQDNDeny && !ks.Concatenation && !ks.Interval && !ks.IsMap && ks.HasTimeout:
			kept[n] = true // keep the pre-resolver's elements and their timeouts
		case isSet && want.Kind != nftmodel.SkFQDN && want.Kind != nftmodel.SkFQDNDeny && sameKind(ks, want):
			kept[n] = true // the name is a digest of the elements
		default:
			c.DelSet(ks)
		}
	}
	// Chains that are no longer wanted (now empty and unreferenced: every chain was
	// flushed and every map emptied above).
	for _, n := range sortedKeys(kchains) {
		if _, ok := chains[n]; !ok {
			c.DelChain(&nftables.Chain{Name: n, Table: e.table})
		}
	}
	for _, n := range sortedKeys(sets) {
		if kept[n] {
			continue
		}
		if ksets[n] != nil {
			// same name, different definition: it was deleted above; a new
			// object with that name in the same batch is refused by the kernel,
			// so fail loudly (names encode the kind, this does not happen).
			return fmt.Errorf("egress: set %s exists with another definition", n)
		}
		if err := e.addSet(sets[n]); err != nil {
			return err
		}
	}
	for i := range st.vmaps {
		obj := e.nft.Vmap(i)
		if !kept[nftmodel.VmapNames[i]] {
			if err := c.AddSet(obj, nil); err != nil {
				return fmt.Errorf("egress: map %s: %w", nftmodel.VmapNames[i], err)
			}
		}
	}
	for _, n := range names {
		if err := e.addRules(chains[n]); err != nil {
			return err
		}
	}
	for i, m := range st.vmaps {
		obj := e.nft.Vmap(i)
		elems := make([]nftables.SetElement, 0, len(m))
		for ip, v := range m {
			elems = append(elems, nftmodel.VmapElem(ip, v))
		}
		if err := e.addElems(obj, elems, vmapChunk); err != nil {
			return fmt.Errorf("egress: map %s: %w", nftmodel.VmapNames[i], err)
		}
	}
	t0 := time.Now()
	err := e.flush("apply table")
	e.log.Debug("full apply flushed", "flush", time.Since(t0))
	return err
}

func (e *Enforcer) addSet(s *nftmodel.Set) error {
	obj := e.nft.Set(s)
	if err := e.enc.AddSet(obj, nil); err != nil {
		return fmt.Errorf("egress: set %s: %w", s.Name, err)
	}
	if err := e.addElems(obj, nftmodel.SetElems(s), elemChunk); err != nil {
		return fmt.Errorf("egress: set %s: %w", s.Name, err)
	}
	return nil
}

func sameKind(ks *nftables.Set, want *nftmodel.Set) bool {
	switch want.Kind {
	case nftmodel.SkPrefix:
		return ks.Interval && !ks.Concatenation && !ks.IsMap
	case nftmodel.SkNamedPort:
		return ks.Concatenation && !ks.Interval && !ks.HasTimeout && !ks.IsMap
	}
	return false
}

// emitIncremental sends, in one batch, the difference between the kernel
// part of the state and what it wants for the names tx touched; once the
// kernel took it, the state's kernel part is updated (commit).
func (e *Enforcer) emitIncremental(st *state, t *tx) error {
	err := e.emitDiff(st, t)
	if err == nil {
		err = e.flush("apply changes")
	}
	if err != nil {
		e.discard()
		return err
	}
	st.commit(t)
	return nil
}

// emitDiff encodes the difference: new sets, new chains and rewritten ones
// (jump targets before the jumps), map elements, then what goes away.
func (e *Enforcer) emitDiff(st *state, t *tx) error {
	c := e.enc
	addChains, changed, delChains := st.chainDiff(t)
	addSets, delSets := st.setDiff(t)
	for _, s := range addSets {
		if err := e.addSet(s); err != nil {
			return err
		}
	}
	for _, ch := range addChains {
		c.AddChain(e.nft.Chain(ch))
	}
	for _, ch := range changed {
		c.FlushChain(e.nft.Chain(ch))
		if err := e.addRules(ch); err != nil {
			return err
		}
	}
	for _, ch := range addChains {
		if err := e.addRules(ch); err != nil {
			return err
		}
	}
	for i := range t.vm {
		del, add := vmapDiff(st.vmaps[i], t.vm[i])
		obj := e.nft.Vmap(i)
		if err := e.delElems(obj, del, vmapChunk); err != nil {
			return err
		}
		if err := e.addElems(obj, add, vmapChunk); err != nil {
			return err
		}
	}
	for _, ch := range delChains {
		c.FlushChain(e.nft.Chain(ch))
	}
	for _, ch := range delChains {
		c.DelChain(e.nft.Chain(ch))
	}
	for _, s := range delSets {
		c.DelSet(e.nft.Set(s))
	}
	return nil
}

// chainDiff sorts the chains tx touched into those to add, to rewrite and to
// delete.
func (st *state) chainDiff(t *tx) (add, changed, del []*nftmodel.Chain) {
	for _, n := range sortedKeys(t.chains) {
		nc, oc := st.wantChain(n), st.chains[n]
		switch {
		case nc == nil && oc != nil:
			del = append(del, oc)
		case nc != nil && oc == nil:
			add = append(add, nc)
		case nc != nil && oc.Text != nc.Text:
			changed = append(changed, nc)
		}
	}
	return add, changed, del
}

// setDiff sorts the sets tx touched into those to add and to delete (a set's
// name says its content: one that stays is not rewritten).
func (st *state) setDiff(t *tx) (add, del []*nftmodel.Set) {
	for _, n := range sortedKeys(t.sets) {
		ns, os := st.setDefs[n], st.sets[n]
		switch {
		case ns == nil && os != nil:
			del = append(del, os)
		case ns != nil && os == nil:
			add = append(add, ns)
		}
	}
	return add, del
}

// vmapDiff returns the elements of a verdict map to delete and to add to go
// from its kernel contents to the wanted ones of the addresses a change
// touched (nil: no element).
func vmapDiff(kernel map[netip.Addr]nftmodel.VmapTarget, want map[netip.Addr]*nftmodel.VmapTarget) (del, add []nftables.SetElement) {
	for ip, v := range want {
		old, had := kernel[ip]
		switch {
		case v == nil && had:
			del = append(del, nftmodel.VmapElem(ip, old))
		case v != nil && had && old != *v:
			del = append(del, nftmodel.VmapElem(ip, old))
			add = append(add, nftmodel.VmapElem(ip, *v))
		case v != nil && !had:
			add = append(add, nftmodel.VmapElem(ip, *v))
		}
	}
	return del, add
}

// commit records that the kernel now holds what the state wants for the
// names tx touched.
func (st *state) commit(t *tx) {
	for _, n := range sortedKeys(t.chains) {
		if nc := st.wantChain(n); nc != nil {
			st.chains[n] = nc
		} else {
			delete(st.chains, n)
		}
	}
	for n := range t.sets {
		if ns := st.setDefs[n]; ns != nil {
			st.sets[n] = ns
		} else {
			delete(st.sets, n)
		}
	}
	st.commitVmaps(t)
}

// commitVmaps records the map elements tx touched as the kernel's.
func (st *state) commitVmaps(t *tx) {
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

package tunnel

import (
	"hash/maphash"
	"sync"
)

// prepared is what the detector derives from a query name alone: the
// registered domain, whether the name is scored at all, its lexical features
// and its hash. Check (before forwarding) and Observe (after the answer) need
// the same, so the latest names are memoized (memo).
type prepared struct {
	qname    string // the name as passed: the memo key
	domain   string
	lower    string
	scored   bool // not ignored (cluster/search domain, public suffix) nor allow-listed
	ignored  bool // RegisteredDomain said no
	lx       Lexical
	nameHash uint64
}

const (
	memoStripes = 16
	memoSlots   = 64 // per stripe
)

// memo is a small direct-mapped cache of prepared names, striped to keep lock
// contention low. A collision simply recomputes.
type memo struct {
	stripes [memoStripes]struct {
		mu    sync.Mutex
		slots [memoSlots]prepared
	}
}

// prepare returns the prepared form of qname, from the memo when the same
// name was prepared recently (Check then Observe of one query).
func (d *Detector) prepare(qname string) prepared {
	h := maphash.String(d.seed, qname)
	st := &d.memo.stripes[h&(memoStripes-1)]
	slot := &st.slots[(h>>8)&(memoSlots-1)]
	st.mu.Lock()
	if slot.qname == qname && qname != "" {
		p := *slot
		st.mu.Unlock()
		return p
	}
	st.mu.Unlock()
	p := prepared{qname: qname}
	domain, sub, lower, ok := d.RegisteredDomain(qname)
	switch {
	case !ok:
		p.ignored = true
	case d.allowed(lower):
		p.domain, p.lower = domain, lower
	default:
		p.domain, p.lower, p.scored = domain, lower, true
		p.lx = analyze(sub)
		p.nameHash = maphash.String(d.seed, lower)
	}
	st.mu.Lock()
	*slot = p
	st.mu.Unlock()
	return p
}

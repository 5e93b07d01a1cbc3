package dnsproxy

import (
	"container/list"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/policy"
)

// tracker remembers, per (workload, name), every address written to the
// kernel sets with the time its set entry expires: the name → IP state that
// the checkpoint carries across restarts, and the count of what is in the
// sets, which bounds them. Each (workload, name) holds at most maxPerName
// addresses and each workload at most maxPerWorkload set elements (entries
// that have not expired): admit refuses a new address beyond either bound —
// the caller neither writes it nor hands it out — and never evicts one
// already written, so every address a workload was given stays allowed for
// its TTL plus grace.
type tracker struct {
	maxPerName, maxPerWorkload int
	mu                         sync.Mutex
	names                      map[trackKey]*trackedName
	elems                      map[policy.WorkloadKey]int // set elements per workload
}

type trackKey struct {
	w    policy.WorkloadKey
	name string // lower case, fully qualified
}

type trackedName struct {
	lru *list.List // of *trackedIP, most recent first
	idx map[netip.Addr]*list.Element
}

type trackedIP struct {
	ip      netip.Addr
	expires time.Time
	elems   int // set elements written for it (rules × workload IPs of its family)
	// via are the alias chain links the address was reached through (the
	// CNAME/DNAME names between the question and the address's owner);
	// Restore decides them again.
	via []string
}

func newTracker(maxPerName, maxPerWorkload int) *tracker {
	return &tracker{maxPerName: maxPerName, maxPerWorkload: maxPerWorkload,
		names: map[trackKey]*trackedName{}, elems: map[policy.WorkloadKey]int{}}
}

func trackName(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// grant is what admit reserved: ok[i] says whether ips[i] may be written;
// undo takes the reservation back when the write fails.
type grant struct {
	ok []bool
	// overName and overWorkload count the addresses refused by each bound.
	overName, overWorkload int
	k                      trackKey
	added                  []netip.Addr
	refreshed              []refresh
}

// refresh is an entry admit updated, with its values before.
type refresh struct {
	ip              netip.Addr
	expires, before time.Time
	elems           int
}

// refused returns the number of addresses refused.
func (g *grant) refused() int { return g.overName + g.overWorkload }

// admit reserves, for workload w and name answered through the alias chain
// links via, the addresses ips with their
// expiry and the set elements each one takes (elems; zero when nothing is
// written for it). An address already tracked is always admitted (its
// expiry is extended). A new one is admitted while the name holds fewer than
// maxPerName addresses and the workload's elements stay within
// maxPerWorkload; the others are refused and counted in the grant. Expired
// entries of the name are dropped first (the sweep drops the others).
func (t *tracker) admit(w policy.WorkloadKey, name string, via []string, ips []netip.Addr, expires []time.Time, elems []int, now time.Time) *grant {
	g := &grant{ok: make([]bool, len(ips)), k: trackKey{w, trackName(name)}}
	t.mu.Lock()
	defer t.mu.Unlock()
	tn := t.names[g.k]
	if tn == nil {
		tn = &trackedName{lru: list.New(), idx: map[netip.Addr]*list.Element{}}
		t.names[g.k] = tn
	}
	for e := tn.lru.Back(); e != nil; {
		prev := e.Prev()
		if ti := e.Value.(*trackedIP); !ti.expires.After(now) {
			t.removeLocked(g.k, tn, e)
		}
		e = prev
	}
	for i, ip := range ips {
		ip = ip.Unmap()
		if e, ok := tn.idx[ip]; ok {
			ti := e.Value.(*trackedIP)
			g.ok[i] = true
			if expires[i].After(ti.expires) || elems[i] > ti.elems {
				g.refreshed = append(g.refreshed, refresh{ip, ti.expires, ti.expires, ti.elems})
				if expires[i].After(ti.expires) {
					ti.expires = expires[i]
				}
				if elems[i] > ti.elems {
					t.elems[w] += elems[i] - ti.elems
					ti.elems = elems[i]
				}
				g.refreshed[len(g.refreshed)-1].expires = ti.expires
			}
			ti.via = via
			tn.lru.MoveToFront(e)
			continue
		}
		switch {
		case tn.lru.Len() >= t.maxPerName:
			g.overName++
		case t.elems[w]+elems[i] > t.maxPerWorkload:
			g.overWorkload++
		default:
			g.ok[i] = true
			tn.idx[ip] = tn.lru.PushFront(&trackedIP{ip, expires[i], elems[i], via})
			t.elems[w] += elems[i]
			g.added = append(g.added, ip)
		}
	}
	if tn.lru.Len() == 0 {
		delete(t.names, g.k)
	}
	return g
}

// undo takes back what admit reserved (the kernel write failed): the
// addresses it added are forgotten, the ones it refreshed get their previous
// expiry back unless a later admission changed them again.
func (t *tracker) undo(g *grant) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tn := t.names[g.k]
	if tn == nil {
		return
	}
	for _, ip := range g.added {
		if e, ok := tn.idx[ip]; ok {
			t.removeLocked(g.k, tn, e)
		}
	}
	for _, r := range g.refreshed {
		if e, ok := tn.idx[r.ip]; ok {
			if ti := e.Value.(*trackedIP); ti.expires.Equal(r.expires) {
				ti.expires = r.before
			}
		}
	}
	if tn.lru.Len() == 0 {
		delete(t.names, g.k)
	}
}

// removeLocked forgets one entry of tn and its elements.
func (t *tracker) removeLocked(k trackKey, tn *trackedName, e *list.Element) {
	ti := e.Value.(*trackedIP)
	delete(tn.idx, ti.ip)
	tn.lru.Remove(e)
	if n := t.elems[k.w] - ti.elems; n > 0 {
		t.elems[k.w] = n
	} else {
		delete(t.elems, k.w)
	}
}

// workloadElements returns the set elements tracked for w.
func (t *tracker) workloadElements(w policy.WorkloadKey) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.elems[w]
}

// Tracked is one tracked address of a (workload, name).
type Tracked struct {
	Workload policy.WorkloadKey
	Name     string
	IP       netip.Addr
	Expires  time.Time
	// Via are the alias chain links the address was answered through.
	Via []string
}

// snapshot returns the entries that have not expired at now (oldest answer
// first per name, so that restoring them in order keeps the LRU order) and
// forgets the expired ones.
func (t *tracker) snapshot(now time.Time) []Tracked {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Tracked
	t.pruneLocked(now, func(k trackKey, ti *trackedIP) {
		out = append(out, Tracked{k.w, k.name, ti.ip, ti.expires, ti.via})
	})
	slices.SortStableFunc(out, func(a, b Tracked) int {
		if c := strings.Compare(a.Workload.String(), b.Workload.String()); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// prune drops the expired addresses (and names left without any) and returns
// how many it dropped.
func (t *tracker) prune(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pruneLocked(now, nil)
}

// pruneLocked drops expired addresses and calls keep, if set, for the others.
func (t *tracker) pruneLocked(now time.Time, keep func(trackKey, *trackedIP)) int {
	n := 0
	for k, tn := range t.names {
		for e := tn.lru.Back(); e != nil; {
			prev := e.Prev()
			ti := e.Value.(*trackedIP)
			if !ti.expires.After(now) {
				t.removeLocked(k, tn, e)
				n++
			} else if keep != nil {
				keep(k, ti)
			}
			e = prev
		}
		if tn.lru.Len() == 0 {
			delete(t.names, k)
		}
	}
	return n
}

// sweep drops what expired from the tracker and from the reference model
// (Store.ExpireLookups), so that both stay as bounded as the kernel sets.
func (srv *Server) sweep() {
	now := srv.now()
	n := srv.track.prune(now)
	if srv.deps.Engine != nil {
		n += srv.deps.Engine.Store().ExpireLookups(now)
	}
	srv.st.swept.Add(uint64(n))
}

// sweeper runs sweep every interval until the server stops.
func (srv *Server) sweeper(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-srv.ctx.Done():
			return
		case <-t.C:
			srv.sweep()
		}
	}
}

// len returns the number of tracked addresses.
func (t *tracker) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, tn := range t.names {
		n += tn.lru.Len()
	}
	return n
}

// trackAnswer records the addresses of an answer just written to the kernel
// (program.go; admitAnswer tracked them before the write) in the reference
// model, with the expiry of their set entries.
func (srv *Server) trackAnswer(w policy.WorkloadKey, qname string, addrs []answerAddr) {
	if srv.deps.RecordLookup == nil || len(addrs) == 0 {
		return
	}
	now := srv.now()
	ips := make([]netip.Addr, len(addrs))
	exp := make([]time.Time, len(addrs))
	for i, a := range addrs {
		ips[i] = a.ip
		exp[i] = now.Add(time.Duration(srv.s.setTimeout(a.ttl)) * time.Second)
	}
	// The reference model, per group of addresses with one expiry.
	for i := 0; i < len(ips); {
		j := i + 1
		for j < len(ips) && exp[j].Equal(exp[i]) {
			j++
		}
		srv.deps.RecordLookup(w, qname, ips[i:j], exp[i])
		i = j
	}
}

// Tracked returns the name → IP state: every address handed to a workload
// whose kernel set entry has not expired yet.
func (srv *Server) Tracked() []Tracked { return srv.track.snapshot(srv.now()) }

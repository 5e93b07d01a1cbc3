package dnsproxy

import (
	"container/list"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/policy"
)

// tracker remembers, per (workload, name), every address handed out with the
// time its kernel set entry expires: the name → IP state that the checkpoint
// carries across restarts. Names whose answers rotate through many addresses
// (S3-like) are bounded: each (workload, name) keeps at most max addresses,
// the least recently answered one is forgotten first (LRU) and counted. The
// kernel entry of a forgotten address is left to expire with its own timeout,
// so every address handed to a workload stays allowed for its TTL plus grace.
type tracker struct {
	max       int
	mu        sync.Mutex
	names     map[trackKey]*trackedName
	evictions atomic.Uint64
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
	// via are the alias chain links the address was reached through (the
	// CNAME/DNAME names between the question and the address's owner);
	// Restore decides them again.
	via []string
}

func newTracker(max int) *tracker {
	return &tracker{max: max, names: map[trackKey]*trackedName{}}
}

func trackName(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// record notes that w was answered ips for name through the alias chain
// links via, each allowed until its expiry; it returns the number of
// addresses evicted by the bound.
func (t *tracker) record(w policy.WorkloadKey, name string, via []string, ips []netip.Addr, expires []time.Time) int {
	k := trackKey{w, trackName(name)}
	t.mu.Lock()
	defer t.mu.Unlock()
	tn := t.names[k]
	if tn == nil {
		tn = &trackedName{lru: list.New(), idx: map[netip.Addr]*list.Element{}}
		t.names[k] = tn
	}
	for i, ip := range ips {
		ip = ip.Unmap()
		if e, ok := tn.idx[ip]; ok {
			ti := e.Value.(*trackedIP)
			if expires[i].After(ti.expires) {
				ti.expires = expires[i]
			}
			ti.via = via
			tn.lru.MoveToFront(e)
			continue
		}
		tn.idx[ip] = tn.lru.PushFront(&trackedIP{ip, expires[i], via})
	}
	evicted := 0
	for tn.lru.Len() > t.max {
		e := tn.lru.Back()
		delete(tn.idx, e.Value.(*trackedIP).ip)
		tn.lru.Remove(e)
		evicted++
	}
	if evicted > 0 {
		t.evictions.Add(uint64(evicted))
	}
	return evicted
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

// len returns the number of tracked addresses.
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
				delete(tn.idx, ti.ip)
				tn.lru.Remove(e)
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
// (program.go), with the expiry of their set entries and the alias chain
// links of the answer.
func (srv *Server) trackAnswer(w policy.WorkloadKey, qname string, links []string, addrs []answerAddr) {
	if srv.track == nil || len(addrs) == 0 {
		return
	}
	now := srv.now()
	ips := make([]netip.Addr, len(addrs))
	exp := make([]time.Time, len(addrs))
	for i, a := range addrs {
		ips[i] = a.ip
		exp[i] = now.Add(time.Duration(srv.s.setTimeout(a.ttl)) * time.Second)
	}
	srv.track.record(w, qname, links, ips, exp)
	if srv.deps.RecordLookup != nil {
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
}

// Tracked returns the name → IP state: every address handed to a workload
// whose kernel set entry has not expired yet.
func (srv *Server) Tracked() []Tracked { return srv.track.snapshot(srv.now()) }

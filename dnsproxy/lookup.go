package dnsproxy

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/chain"
	"github.com/egressd/egressd/policy"
)

// lookup is what the policy said about one query: made by decideLookup,
// extended by decideChain once the answer is known, and carried to the
// programming of the answer (program, fastProgram) and its report.
type lookup struct {
	// name is the question name, lower case and fully qualified (trackName):
	// computed once, it keys the tracker and the reference model.
	name string
	// wl is the client's workload; nil: served without policy (no engine,
	// or a source ServeUnknown lets through): nothing is decided or written.
	wl *policy.Workload
	// decision is the engine's decision on the question and, after
	// decideChain, on the answer's alias chain.
	decision policy.LookupDecision
	// rules are the FQDN rules whose sets receive the answer's addresses.
	rules []policy.RuleRef
	// links are the answer's alias chain links (chain.Of), tracked with the
	// addresses so that Restore decides them again.
	links []string
}

// decideLookup decides the lookup of qname by workload wl and finds the FQDN
// rules whose sets its answer fills, in one call to the engine (one walk of
// its index: Engine.DecideLookupRules).
func (srv *Server) decideLookup(wl *policy.Workload, qname string) lookup {
	name := trackName(qname)
	d, rules := srv.deps.Engine.DecideLookupRules(wl.Key(), name, nil)
	return lookup{name: name, wl: wl, decision: d, rules: rules}
}

// decideChain extends the decision to every other name of the answer's alias
// chain (CNAME targets, DNAME owners and targets, substituted names:
// Engine.DecideChain): a link that a Deny rule matches blocks the lookup.
// Answers without a CNAME or DNAME do no chain work.
func (srv *Server) decideChain(lk *lookup, answer *dns.Msg) {
	if lk.wl == nil || lk.decision.Blocked() || !chain.HasAlias(answer.Answer) {
		return
	}
	if lk.links = chain.Of(answer).Links; len(lk.links) > 0 {
		lk.decision = srv.deps.Engine.DecideChain(lk.decision, lk.links)
	}
}

// auditDenied returns the Audit-mode deny of a decision that is not blocked:
// the outcome to report as dns.lookup.audit, or nil.
func auditDenied(d policy.LookupDecision) *policy.Outcome {
	if a := d.Audit; a != nil && a.Verdict == policy.Deny {
		return a
	}
	return nil
}

// The fast path (fastpath.go) decides once per store generation: the
// workload of a client address, and per cache entry the lookup of each
// workload that asked.

// wlRecord is what the fast path keeps per cache entry and workload, valid
// for one store generation: the lookup decided (the question and the
// answer's alias chain, its rules and links) and until when the kernel
// entries written for it last.
type wlRecord struct {
	key    policy.WorkloadKey
	gen    uint64
	wlName string // "namespace/name"
	lookup
	// until is when the earliest kernel entry written for this answer and
	// workload expires (zero: nothing written yet).
	until time.Time
}

// workloadOf returns the workload of a client (nil: not a workload), cached
// per store generation.
func (srv *Server) workloadOf(client netip.Addr, gen uint64) *policy.Workload {
	c := &srv.fast.wls
	c.mu.RLock()
	if c.gen == gen && c.m != nil {
		if w, ok := c.m[client]; ok {
			c.mu.RUnlock()
			return w
		}
	}
	c.mu.RUnlock()
	store := srv.deps.Engine.Store()
	var wl *policy.Workload
	if key, ok := store.WorkloadByIP(client); ok {
		if w, ok := store.Workload(key); ok {
			wl = &w
		}
	}
	c.mu.Lock()
	if c.gen != gen || c.m == nil || len(c.m) >= 65536 {
		c.gen, c.m = gen, make(map[netip.Addr]*policy.Workload)
	}
	c.m[client] = wl
	c.mu.Unlock()
	return wl
}

// fastState is the fast path's part of a Server.
type fastState struct {
	wls  wlCache
	hits atomic.Uint64 // queries answered by the fast path
}

// wlCache maps client addresses to workloads for one store generation.
type wlCache struct {
	mu  sync.RWMutex
	gen uint64
	m   map[netip.Addr]*policy.Workload
}

// record returns the lookup of workload w for the entry's name, decided once
// per store generation. The decision covers the answer's alias chain
// (decideChain): a CNAME or DNAME into a denied name is blocked, and the
// slow path answers it.
func (srv *Server) record(e *cacheEntry, w *policy.Workload, gen uint64) *wlRecord {
	k := w.Key()
	var rec *wlRecord
	e.mu.Lock()
	for _, r := range e.wl {
		if r.key == k {
			rec = r
			break
		}
	}
	e.mu.Unlock()
	if rec != nil && rec.gen == gen {
		return rec
	}
	rec = &wlRecord{key: k, gen: gen, wlName: k.String(), lookup: srv.decideLookup(w, e.msg.Question[0].Name)}
	srv.decideChain(&rec.lookup, e.msg)
	e.mu.Lock()
	e.wl = slices.DeleteFunc(e.wl, func(r *wlRecord) bool { return r.key == k || r.gen != gen })
	if len(e.wl) < 64 { // bounded: beyond, decisions are recomputed
		e.wl = append(e.wl, rec)
	}
	e.mu.Unlock()
	return rec
}

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/ipset/nftset"
)

// The /status endpoint (docs/egressd.md, rendered by `egressctl status`): policy
// sync state, kernel sets with element counts, blocked lookups of the last
// minutes (from a bounded in-memory ring) and resolver counters.

// blockedRingSize bounds the blocked lookups remembered for /status.
const blockedRingSize = 4096

// blockedLookup is one blocked lookup remembered for /status.
type blockedLookup struct {
	at             time.Time
	workload, name string
}

// blockedRing keeps the last blockedRingSize blocked lookups.
type blockedRing struct {
	mu    sync.Mutex
	buf   []blockedLookup
	next  int
	total uint64
}

func (r *blockedRing) add(b blockedLookup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < blockedRingSize {
		r.buf = append(r.buf, b)
	} else {
		r.buf[r.next] = b
		r.next = (r.next + 1) % blockedRingSize
	}
	r.total++
}

// Counted is a name or workload with its count.
type Counted struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}

// BlockedStatus summarises the blocked lookups since a time.
type BlockedStatus struct {
	Since time.Time `json:"since"`
	Count int       `json:"count"`
	// Truncated: the ring wrapped after Since, older lookups are not counted.
	Truncated    bool      `json:"truncated,omitempty"`
	TopNames     []Counted `json:"topNames"`
	TopWorkloads []Counted `json:"topWorkloads"`
	// Total counts every blocked lookup since the agent started.
	Total uint64 `json:"total"`
}

func (r *blockedRing) since(t time.Time, top int) BlockedStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := BlockedStatus{Since: t, Total: r.total, TopNames: []Counted{}, TopWorkloads: []Counted{}}
	names, wls := map[string]int{}, map[string]int{}
	oldest := time.Time{}
	for i, b := range r.buf {
		if i == 0 || b.at.Before(oldest) {
			oldest = b.at
		}
		if b.at.Before(t) {
			continue
		}
		st.Count++
		names[b.name]++
		wl := b.workload
		if wl == "" {
			wl = "(unknown client)"
		}
		wls[wl]++
	}
	st.Truncated = len(r.buf) == blockedRingSize && oldest.After(t)
	st.TopNames, st.TopWorkloads = topN(names, top), topN(wls, top)
	return st
}

func topN(m map[string]int, n int) []Counted {
	out := make([]Counted, 0, len(m))
	for k, v := range m {
		out = append(out, Counted{k, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Key < out[j].Key
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// statusReporter records blocked lookups in the ring and passes every event on.
type statusReporter struct {
	dnsproxy.Reporter
	ring *blockedRing
}

func (s statusReporter) LookupBlocked(ctx context.Context, ev dnsproxy.Event) {
	s.ring.add(blockedLookup{at: ev.Time, workload: ev.Workload, name: strings.TrimSuffix(ev.QName, ".")})
	s.Reporter.LookupBlocked(ctx, ev)
}

// TunnelEvent passes tunnel events on (the embedded Reporter's optional
// TunnelReporter would be hidden by the wrapper otherwise); lookups refused
// by a tunnel quarantine are blocked lookups for /status too.
func (s statusReporter) TunnelEvent(ctx context.Context, ev dnsproxy.Event) {
	if ev.Event == dnsproxy.EventTunnelBlocked {
		s.ring.add(blockedLookup{at: ev.Time, workload: ev.Workload, name: strings.TrimSuffix(ev.QName, ".")})
	}
	if tr, ok := s.Reporter.(dnsproxy.TunnelReporter); ok {
		tr.TunnelEvent(ctx, ev)
	}
}

// RebindingBlocked passes rebinding events on (hidden by the wrapper
// otherwise).
func (s statusReporter) RebindingBlocked(ctx context.Context, ev dnsproxy.Event) {
	if rr, ok := s.Reporter.(dnsproxy.RebindReporter); ok {
		rr.RebindingBlocked(ctx, ev)
	}
}

var (
	_ dnsproxy.TunnelReporter = statusReporter{}
	_ dnsproxy.RebindReporter = statusReporter{}
	_ dnsproxy.RebindReporter = dnsReporter{}
)

// AnswerCapped passes dns.answer.capped events on (hidden by the wrapper
// otherwise, as TunnelEvent).
func (s statusReporter) AnswerCapped(ctx context.Context, ev dnsproxy.Event) {
	if r, ok := s.Reporter.(dnsproxy.CapReporter); ok {
		r.AnswerCapped(ctx, ev)
	}
}

var _ dnsproxy.CapReporter = statusReporter{}

// withStatus wraps the resolver's reporter for /status.
func (a *agent) withStatus(r dnsproxy.Reporter) dnsproxy.Reporter {
	return statusReporter{Reporter: r, ring: &a.blocked}
}

// SetStatus is one kernel set (or map) of the agent's table.
type SetStatus struct {
	Name     string `json:"name"`
	Map      bool   `json:"map,omitempty"`
	Elements int    `json:"elements"`
	// Truncated: counting stopped at Elements, the set holds more.
	Truncated bool `json:"truncated,omitempty"`
}

// SyncStatus is the policy source and dataplane state.
type SyncStatus struct {
	Source          string    `json:"source"` // kubernetes or files
	SourceSynced    bool      `json:"sourceSynced"`
	StoreGeneration uint64    `json:"storeGeneration"`
	Policies        int       `json:"policies"`
	Workloads       int       `json:"workloads"`
	AppliedPlan     int64     `json:"appliedPlanGeneration"`
	LastApply       time.Time `json:"lastApplyTime,omitzero"`
	LastError       string    `json:"lastError,omitempty"`
	// InvalidPolicies (cluster mode): rejected policies and why.
	InvalidPolicies map[string]string `json:"invalidPolicies,omitempty"`
	// Reload (files mode): the last load of the policy and workload files.
	Reload *ReloadStatus `json:"reload,omitempty"`
}

// ReloadStatus is the outcome of the last load of the policy and workload
// files. While a file is not taken, its last good content is in force.
type ReloadStatus struct {
	OK bool `json:"ok"`
	// LastError is the first problem (clipped), File its file, Since when
	// the current problems were first seen, Problems how many files have one.
	LastError string    `json:"lastError,omitempty"`
	File      string    `json:"file,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	Problems  int       `json:"problems,omitempty"`
	// LastOK is the last load without a problem.
	LastOK time.Time `json:"lastOK,omitzero"`
}

// Status is the JSON document of GET /status.
type Status struct {
	Node      string          `json:"node"`
	Ready     bool            `json:"ready"`
	StartedAt time.Time       `json:"startedAt"`
	Now       time.Time       `json:"now"`
	Sync      SyncStatus      `json:"sync"`
	Dataplane string          `json:"dataplane"`
	Table     string          `json:"table,omitempty"`
	Sets      []SetStatus     `json:"sets"`
	SetsError string          `json:"setsError,omitempty"`
	Blocked   BlockedStatus   `json:"blocked"`
	Resolver  *dnsproxy.Stats `json:"resolver,omitempty"`
	// Upstreams is the health of each upstream resolver.
	Upstreams []dnsproxy.UpstreamState `json:"upstreams,omitempty"`
	Intercept []string                 `json:"dnsIntercept,omitempty"`
}

// statusCountLimit bounds the elements counted per set for /status: a set
// with more is reported with truncated (its count is then "at least").
const statusCountLimit = 100_000

// kernelSets lists the named sets of the agent's table with their element
// counts (an interval counts once, not as its two boundaries), counted from a
// streamed dump without keeping the elements (nftset.Counts), at most
// statusCountLimit per set.
func kernelSets(ctx context.Context, table string) ([]SetStatus, error) {
	counts, err := nftset.Counts(ctx, table, statusCountLimit)
	if err != nil {
		return nil, err
	}
	out := make([]SetStatus, 0, len(counts))
	for _, c := range counts {
		out = append(out, SetStatus{Name: c.Name, Map: c.Map, Elements: c.Elements, Truncated: c.Truncated})
	}
	return out, nil
}

func (a *agent) status(ctx context.Context, since time.Duration) Status {
	now := time.Now()
	st := Status{
		Node: a.cfg.NodeName, Ready: a.ready.Load(), StartedAt: a.started, Now: now,
		Dataplane: a.cfg.Dataplane, Sets: []SetStatus{},
		Sync: SyncStatus{
			Source: "files", SourceSynced: true,
			StoreGeneration: a.store.Generation(),
			Policies:        len(a.store.Policies()), Workloads: len(a.store.Workloads()),
			AppliedPlan: a.synced.Load(),
		},
		Blocked: a.blocked.since(now.Add(-since), 10),
	}
	if t := a.lastApply.Load(); t != 0 {
		st.Sync.LastApply = time.Unix(0, t)
	}
	st.Sync.LastError, _ = a.lastErr.Load().(string)
	if a.kube == nil {
		h := a.source.Health()
		st.Sync.Reload = &ReloadStatus{OK: h.OK, LastError: h.LastError, File: h.File, Since: h.Since, Problems: len(h.Problems), LastOK: h.LastOK}
	}
	if a.kube != nil {
		st.Sync.Source, st.Sync.SourceSynced = "kubernetes", a.kube.Synced()
		for ref, err := range a.kube.Invalid() {
			if st.Sync.InvalidPolicies == nil {
				st.Sync.InvalidPolicies = map[string]string{}
			}
			st.Sync.InvalidPolicies[ref.String()] = err.Error()
		}
	}
	if a.enforcer != nil {
		st.Table = a.enforcer.Table()
		sets, err := kernelSets(ctx, st.Table)
		if err != nil {
			st.SetsError = err.Error()
		} else {
			st.Sets = sets
		}
	}
	if srv := a.dnsServer(); srv != nil {
		s := srv.Stats()
		st.Resolver = &s
		st.Upstreams = srv.Upstreams()
	}
	st.Intercept, _ = a.interceptView.Load().([]string)
	return st
}

// dnsServer returns the resolver once it runs.
func (a *agent) dnsServer() *dnsproxy.Server {
	if !a.ready.Load() {
		return nil
	}
	return a.dns
}

// registerStatus serves GET /status[?since=DURATION] (default 10m).
func (a *agent) registerStatus(mux *http.ServeMux) {
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		since := 10 * time.Minute
		if s := r.URL.Query().Get("since"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				http.Error(w, "since: want a positive duration like 10m", http.StatusBadRequest)
				return
			}
			since = d
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.status(r.Context(), since))
	})
}

package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/telemetry/statusapi"
)

// The /status endpoint (docs/egressd.md, rendered by `egressctl status`): policy
// sync state, kernel sets with element counts, blocked lookups of the last
// minutes (from a bounded in-memory ring) and resolver counters. The document's
// types are telemetry/statusapi's, shared with egressctl.

// statusCountLimit bounds the elements counted per set for /status: a set
// with more is reported with truncated (its count is then "at least").
const statusCountLimit = 100_000

// kernelSets lists the named sets of the agent's table with their element
// counts, at most statusCountLimit per set.
func kernelSets(ctx context.Context, e *egress.Enforcer) ([]statusapi.SetStatus, error) {
	counts, err := e.SetCounts(ctx, statusCountLimit)
	if err != nil {
		return nil, err
	}
	out := make([]statusapi.SetStatus, 0, len(counts))
	for _, c := range counts {
		out = append(out, statusapi.SetStatus{Name: c.Name, Map: c.Map, Elements: c.Elements, Truncated: c.Truncated})
	}
	return out, nil
}

func (a *Agent) status(ctx context.Context, since time.Duration) statusapi.Status {
	now := time.Now()
	workloads, policies := a.store.Counts() // not Workloads(): it sorts every key
	st := statusapi.Status{
		Node: a.cfg.NodeName, Ready: a.ready.Load(), StartedAt: a.started, Now: now,
		Dataplane: a.cfg.Dataplane, Sets: []statusapi.SetStatus{},
		Sync: statusapi.SyncStatus{
			Source: "files", SourceSynced: true,
			StoreGeneration: a.store.Generation(),
			Policies:        policies, Workloads: workloads,
			AppliedPlan: a.synced.Load(),
		},
		Blocked: a.blocked.Since(now.Add(-since), 10),
	}
	if t := a.lastApply.Load(); t != 0 {
		st.Sync.LastApply = time.Unix(0, t)
	}
	st.Sync.LastError, _ = a.lastErr.Load().(string)
	if a.kube == nil {
		h := a.source.Health()
		st.Sync.Reload = &statusapi.ReloadStatus{OK: h.OK, LastError: h.LastError, File: h.File, Since: h.Since, Problems: len(h.Problems), LastOK: h.LastOK}
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
		sets, err := kernelSets(ctx, a.enforcer)
		if err != nil {
			st.SetsError = err.Error()
		} else {
			st.Sets = sets
		}
	}
	if srv := a.dnsServer(); srv != nil {
		st.Resolver = srv.Stats().Counters()
		for _, u := range srv.Upstreams() {
			st.Upstreams = append(st.Upstreams, statusapi.UpstreamStatus{Addr: u.Addr, Up: u.Up, Since: u.Since})
		}
	}
	st.Intercept, _ = a.interceptView.Load().([]string)
	return st
}

// dnsServer returns the resolver once it runs.
func (a *Agent) dnsServer() *dnsproxy.Server {
	if !a.ready.Load() {
		return nil
	}
	return a.dns
}

// registerStatus serves GET /status[?since=DURATION] (default 10m).
func (a *Agent) registerStatus(mux *http.ServeMux) {
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

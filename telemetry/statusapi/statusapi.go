// Package statusapi is the wire form of the agent's GET /status document
// (docs/egressd.md, "HTTP endpoints"): cmd/egressd fills a Status and encodes
// it, `egressctl status` decodes the same types. It imports only the standard
// library so that the CLI stays light; the agent converts its own types
// (dnsproxy counters and upstream states, kernel set counts) into these.
//
// The JSON names are the contract with existing clients: change a tag only
// together with every reader (egressctl, test/kube, test/attack) and the docs.
package statusapi

import "time"

// Status is the JSON document of GET /status.
type Status struct {
	// Node is the agent's node name (empty: the agent enforces for all pods).
	Node string `json:"node"`
	// Ready is the agent's readiness (/readyz), true once it serves DNS.
	Ready bool `json:"ready"`
	// StartedAt is when the agent started.
	StartedAt time.Time `json:"startedAt"`
	// Now is when the document was made; durations are relative to it.
	Now time.Time `json:"now"`
	// Sync is the policy source and dataplane state.
	Sync SyncStatus `json:"sync"`
	// Dataplane is the agent's --dataplane (nftables or none).
	Dataplane string `json:"dataplane"`
	// Table is the agent's nftables table (family inet), empty without one.
	Table string `json:"table,omitempty"`
	// Sets are the named sets and maps of Table with their element counts
	// (never nil in the agent's document).
	Sets []SetStatus `json:"sets"`
	// SetsError is why Sets could not be read from the kernel.
	SetsError string `json:"setsError,omitempty"`
	// Blocked summarises the blocked lookups of the requested window.
	Blocked BlockedStatus `json:"blocked"`
	// Resolver holds the resolver's counters and gauges keyed by their
	// dnsproxy.Stats field name ("Queries", "Blocked", "CacheHits", …);
	// absent until the resolver runs.
	Resolver map[string]uint64 `json:"resolver,omitempty"`
	// Upstreams is the health of each upstream resolver.
	Upstreams []UpstreamStatus `json:"upstreams,omitempty"`
	// Intercept lists the DNS Service addresses whose traffic the agent
	// intercepts.
	Intercept []string `json:"dnsIntercept,omitempty"`
}

// SyncStatus is the policy source and dataplane state.
type SyncStatus struct {
	// Source is where policies come from: "kubernetes" or "files".
	Source string `json:"source"`
	// SourceSynced reports that the source delivered its initial state.
	SourceSynced bool `json:"sourceSynced"`
	// StoreGeneration counts the changes of the policy store.
	StoreGeneration uint64 `json:"storeGeneration"`
	// Policies is the number of policies in the store.
	Policies int `json:"policies"`
	// Workloads is the number of workloads in the store.
	Workloads int `json:"workloads"`
	// AppliedPlan is the generation of the plan last applied to the kernel.
	AppliedPlan int64 `json:"appliedPlanGeneration"`
	// LastApply is when a plan was last applied (zero: never).
	LastApply time.Time `json:"lastApplyTime,omitzero"`
	// LastError is the last error of the kernel sync.
	LastError string `json:"lastError,omitempty"`
	// InvalidPolicies (cluster mode): rejected policies and why.
	InvalidPolicies map[string]string `json:"invalidPolicies,omitempty"`
	// Reload (files mode): the last load of the policy and workload files.
	Reload *ReloadStatus `json:"reload,omitempty"`
}

// ReloadStatus is the outcome of the last load of the policy and workload
// files. While a file is not taken, its last good content is in force.
type ReloadStatus struct {
	// OK reports that the last load had no problem.
	OK bool `json:"ok"`
	// LastError is the first problem (clipped).
	LastError string `json:"lastError,omitempty"`
	// File is the file of LastError.
	File string `json:"file,omitempty"`
	// Since is when the current problems were first seen.
	Since time.Time `json:"since,omitzero"`
	// Problems is how many files have a problem.
	Problems int `json:"problems,omitempty"`
	// LastOK is the last load without a problem.
	LastOK time.Time `json:"lastOK,omitzero"`
}

// SetStatus is one kernel set (or map) of the agent's table.
type SetStatus struct {
	// Name is the set's name in the table.
	Name string `json:"name"`
	// Map reports a map rather than a set.
	Map bool `json:"map,omitempty"`
	// Elements is the element count (an interval counts once).
	Elements int `json:"elements"`
	// Truncated: counting stopped at Elements, the set holds more.
	Truncated bool `json:"truncated,omitempty"`
}

// BlockedStatus summarises the blocked lookups since a time.
type BlockedStatus struct {
	// Since is the start of the window.
	Since time.Time `json:"since"`
	// Count is the number of blocked lookups in the window.
	Count int `json:"count"`
	// Truncated: the ring wrapped after Since, older lookups are not counted.
	Truncated bool `json:"truncated,omitempty"`
	// TopNames are the most blocked names of the window, most first.
	TopNames []Counted `json:"topNames"`
	// TopWorkloads are the workloads with the most blocked lookups in the
	// window, most first ("(unknown client)" for sources of no workload).
	TopWorkloads []Counted `json:"topWorkloads"`
	// Total counts every blocked lookup since the agent started.
	Total uint64 `json:"total"`
}

// Counted is a name or workload with its count.
type Counted struct {
	// Key is the name or workload.
	Key string `json:"key"`
	// Count is how often it was seen.
	Count int `json:"count"`
}

// UpstreamStatus is the health of one upstream resolver.
type UpstreamStatus struct {
	// Addr is the upstream's address (host:port).
	Addr string `json:"addr"`
	// Up reports that the upstream answers.
	Up bool `json:"up"`
	// Since is the time of the last change (zero: up since the start).
	Since time.Time `json:"since,omitzero"`
}

package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"

	"github.com/egressd/egressd/policy/domain"
)

// Store holds the workloads, namespaces and policies of the cluster (or of a
// standalone host) and the names each workload resolved. Sources write into it;
// the Engine evaluates over it and the Compiler turns it into Plans. A Store is
// safe for concurrent use.
type Store struct {
	mu         sync.RWMutex
	namespaces map[string]*Namespace
	workloads  map[WorkloadKey]*Workload
	byIP       map[netip.Addr]WorkloadKey
	byNS       map[string]map[WorkloadKey]*Workload
	// byNode indexes the workloads by Workload.Node (a node-scoped compiler
	// reads its node's workloads without visiting the cluster's).
	byNode   map[string]map[WorkloadKey]*Workload
	policies map[PolicyRef]*compiledPolicy
	// nodes and nodeByIP are the nodes (ClusterNetworkPolicy nodes peers).
	nodes    map[string]*Node
	nodeByIP map[netip.Addr]string
	// resolved[w][ip][name] records that w resolved name to ip through the
	// node resolver, until when (zero: no expiry) — the reference model of the
	// FQDN kernel sets, whose entries time out likewise.
	resolved map[WorkloadKey]map[netip.Addr]map[string]time.Time
	// denyResolved are the addresses of Deny rules' exact names that egressd
	// resolved itself (denynames.go).
	denyResolved denyResolved
	// pending records what changed since the compiler last looked.
	pending changeLog
	// gen counts changes to workloads, namespaces and policies.
	gen uint64
	// policyGen counts changes to policies (the FQDN index is rebuilt when
	// it moves); selGen counts changes to policies and namespaces (which
	// policies select a workload depends on them and on the workload only).
	policyGen, selGen uint64
	// audits counts Audit-mode policies.
	audits int
	// tunnels counts policies that set spec.tunnelDetection.
	tunnels int
	// maxPolicies bounds len(policies) (0: MaxPolicies).
	maxPolicies int
	// fqdn is the index of the policies' FQDN rules (lookups).
	fqdn fqdnIndexCache
	// wlChanged is closed at the next change of workloads (wait.go); nil
	// until someone waits.
	wlChanged chan struct{}
}

// changeLog is the set of keys changed since the last compile.
type changeLog struct {
	all        bool
	workloads  map[WorkloadKey]*Workload // old value (nil when added)
	touched    map[WorkloadKey]bool
	namespaces map[string]bool
	policies   map[PolicyRef]bool
}

func (c *changeLog) reset() {
	*c = changeLog{workloads: map[WorkloadKey]*Workload{}, touched: map[WorkloadKey]bool{}, namespaces: map[string]bool{}, policies: map[PolicyRef]bool{}}
}

// NewStore returns an empty store.
func NewStore() *Store {
	s := &Store{
		namespaces: map[string]*Namespace{},
		workloads:  map[WorkloadKey]*Workload{},
		byIP:       map[netip.Addr]WorkloadKey{},
		byNS:       map[string]map[WorkloadKey]*Workload{},
		byNode:     map[string]map[WorkloadKey]*Workload{},
		policies:   map[PolicyRef]*compiledPolicy{},
		nodes:      map[string]*Node{},
		nodeByIP:   map[netip.Addr]string{},
		resolved:   map[WorkloadKey]map[netip.Addr]map[string]time.Time{},
	}
	s.pending.reset()
	return s
}

// UpsertNamespace adds or replaces a namespace. The label
// kubernetes.io/metadata.name is always set to the namespace's name.
func (s *Store) UpsertNamespace(ns Namespace) error {
	if ns.Name == "" {
		return fmt.Errorf("namespace: empty name")
	}
	l := make(map[string]string, len(ns.Labels)+1)
	for k, v := range ns.Labels {
		l[k] = v
	}
	l[NamespaceNameLabel] = ns.Name
	ns.Labels = l
	s.mu.Lock()
	defer s.mu.Unlock()
	s.namespaces[ns.Name] = &ns
	s.pending.namespaces[ns.Name] = true
	s.gen++
	s.selGen++
	return nil
}

// DeleteNamespace removes a namespace's labels; its workloads stay until deleted.
func (s *Store) DeleteNamespace(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.namespaces, name)
	s.pending.namespaces[name] = true
	s.gen++
	s.selGen++
}

// namespaceLocked returns the namespace, or one with only the name label.
func (s *Store) namespaceLocked(name string) *Namespace {
	if ns, ok := s.namespaces[name]; ok {
		return ns
	}
	return &Namespace{Name: name, Labels: map[string]string{NamespaceNameLabel: name}}
}

// UpsertWorkload adds or replaces a workload. An IP held by another workload is
// an error (the caller deletes the old one first).
func (s *Store) UpsertWorkload(w Workload) error {
	if w.Namespace == "" || w.Name == "" {
		return fmt.Errorf("workload %s/%s: namespace and name are required", w.Namespace, w.Name)
	}
	ips := make([]netip.Addr, 0, len(w.IPs))
	for _, ip := range w.IPs {
		if !ip.IsValid() {
			return fmt.Errorf("workload %s: invalid IP", w.Key())
		}
		ips = append(ips, ip.Unmap())
	}
	w.IPs = ips
	key := w.Key()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ip := range w.IPs {
		if other, ok := s.byIP[ip]; ok && other != key {
			return fmt.Errorf("workload %s: IP %s already belongs to %s", key, ip, other)
		}
	}
	old := s.workloads[key]
	s.removeWorkloadLocked(key)
	nw := w
	s.workloads[key] = &nw
	for _, ip := range nw.IPs {
		s.byIP[ip] = key
	}
	if s.byNS[nw.Namespace] == nil {
		s.byNS[nw.Namespace] = map[WorkloadKey]*Workload{}
	}
	s.byNS[nw.Namespace][key] = &nw
	if s.byNode[nw.Node] == nil {
		s.byNode[nw.Node] = map[WorkloadKey]*Workload{}
	}
	s.byNode[nw.Node][key] = &nw
	s.markWorkloadLocked(key, old)
	return nil
}

// DeleteWorkload removes a workload and the names it resolved.
func (s *Store) DeleteWorkload(key WorkloadKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.workloads[key]
	if old == nil {
		return
	}
	s.removeWorkloadLocked(key)
	delete(s.resolved, key)
	s.markWorkloadLocked(key, old)
}

func (s *Store) markWorkloadLocked(key WorkloadKey, old *Workload) {
	s.gen++
	s.notifyWorkloadsLocked() // wait.go
	if !s.pending.touched[key] {
		s.pending.touched[key] = true
		s.pending.workloads[key] = old
	}
}

func (s *Store) removeWorkloadLocked(key WorkloadKey) {
	w := s.workloads[key]
	if w == nil {
		return
	}
	for _, ip := range w.IPs {
		if s.byIP[ip] == key {
			delete(s.byIP, ip)
		}
	}
	delete(s.byNS[w.Namespace], key)
	if len(s.byNS[w.Namespace]) == 0 {
		delete(s.byNS, w.Namespace)
	}
	delete(s.byNode[w.Node], key)
	if len(s.byNode[w.Node]) == 0 {
		delete(s.byNode, w.Node)
	}
	delete(s.workloads, key)
}

// Workload returns a copy of a workload.
func (s *Store) Workload(key WorkloadKey) (Workload, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	w, ok := s.workloads[key]
	if !ok {
		return Workload{}, false
	}
	return *w, true
}

// WorkloadByIP returns the key of the workload that holds ip.
func (s *Store) WorkloadByIP(ip netip.Addr) (WorkloadKey, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	k, ok := s.byIP[ip.Unmap()]
	return k, ok
}

// Counts returns the number of workloads and of policies without listing them
// (Workloads and Policies sort every key: too slow for a status page at 50,000
// pods).
func (s *Store) Counts() (workloads, policies int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.workloads), len(s.policies)
}

// Workloads returns the keys of all workloads, sorted.
func (s *Store) Workloads() []WorkloadKey {
	s.mu.RLock()
	defer s.mu.RUnlock()
	keys := make([]WorkloadKey, 0, len(s.workloads))
	for k := range s.workloads {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

// UpsertFirewallPolicy validates and adds or replaces a FirewallPolicy. An invalid
// policy is rejected with a *ValidationError and the previous version (if any)
// stays in force.
func (s *Store) UpsertFirewallPolicy(p *FirewallPolicy) error {
	cp, err := compileFirewallPolicy(p)
	if err != nil {
		return err
	}
	return s.putPolicy(cp)
}

// UpsertClusterFirewallPolicy validates and adds or replaces a ClusterFirewallPolicy.
func (s *Store) UpsertClusterFirewallPolicy(p *ClusterFirewallPolicy) error {
	cp, err := compileClusterFirewallPolicy(p)
	if err != nil {
		return err
	}
	return s.putPolicy(cp)
}

// UpsertClusterNetworkPolicy translates and adds or replaces a
// ClusterNetworkPolicy (policy.networking.k8s.io). Invalid fields are
// rejected as for the other kinds; a peer or protocol with no known field
// (an object written against a newer CRD) follows upstream's fail-closed
// rule instead (ValidateClusterNetworkPolicy reports it).
func (s *Store) UpsertClusterNetworkPolicy(p *cnpv1alpha2.ClusterNetworkPolicy) error {
	cp, err := compileClusterNetworkPolicy(p, false)
	if err != nil {
		return err
	}
	return s.putPolicy(cp)
}

// UpsertNetworkPolicy validates and adds or replaces a Kubernetes NetworkPolicy.
func (s *Store) UpsertNetworkPolicy(p *networkingv1.NetworkPolicy) error {
	cp, err := compileNetworkPolicy(p)
	if err != nil {
		return err
	}
	return s.putPolicy(cp)
}

func (s *Store) putPolicy(cp *compiledPolicy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.policies[cp.ref]; !ok && len(s.policies) >= s.policyLimitLocked() {
		return &PolicyLimitError{Policy: cp.ref, Limit: s.policyLimitLocked()}
	}
	s.putLocked(cp)
	s.fqdn.notePutLocked(cp)
	s.gen++
	s.policyGen++
	s.selGen++
	return nil
}

func (s *Store) putLocked(cp *compiledPolicy) {
	if old, ok := s.policies[cp.ref]; ok {
		s.countLocked(old, -1)
		old.retired = true
	}
	s.countLocked(cp, 1)
	cp.retired = false
	s.policies[cp.ref] = cp
	s.pending.policies[cp.ref] = true
}

// countLocked adds d to the counters of policy features p has.
func (s *Store) countLocked(p *compiledPolicy, d int) {
	if p.audit {
		s.audits += d
	}
	if p.tunnel != "" {
		s.tunnels += d
	}
}

// DeletePolicy removes a policy of any kind.
func (s *Store) DeletePolicy(ref PolicyRef) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.policies[ref]; ok {
		s.countLocked(old, -1)
		old.retired = true
		delete(s.policies, ref)
		s.pending.policies[ref] = true
		s.gen++
		s.policyGen++
		s.selGen++
	}
}

// Policies returns the references of all policies, sorted.
func (s *Store) Policies() []PolicyRef {
	s.mu.RLock()
	defer s.mu.RUnlock()
	refs := make([]PolicyRef, 0, len(s.policies))
	for r := range s.policies {
		refs = append(refs, r)
	}
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	return refs
}

// RecordLookup records that workload w resolved name to ips through the node
// resolver, with no expiry. This is the reference model of the FQDN kernel
// sets: an FQDN peer matches a destination IP for w when w resolved a matching
// name to it.
func (s *Store) RecordLookup(w WorkloadKey, name string, ips ...netip.Addr) {
	s.RecordLookupUntil(w, name, time.Time{}, ips...)
}

// RecordLookupUntil records that workload w resolved name to ips, valid until
// the given time (as the kernel set entries written for the answer); zero
// means no expiry. A later record of the same address extends it. A record
// matches until ExpireLookups removes it after its time (the resolver sweeps
// every 30s), as a kernel set entry lasts until the kernel's garbage collection.
func (s *Store) RecordLookupUntil(w WorkloadKey, name string, until time.Time, ips ...netip.Addr) {
	n, err := domain.NormalizeName(name)
	if err != nil || len(ips) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	byIP := s.resolved[w]
	if byIP == nil {
		byIP = map[netip.Addr]map[string]time.Time{}
		s.resolved[w] = byIP
	}
	for _, ip := range ips {
		ip = ip.Unmap()
		names := byIP[ip]
		if names == nil {
			names = map[string]time.Time{}
			byIP[ip] = names
		}
		if old, ok := names[n]; ok && (old.IsZero() || (!until.IsZero() && !until.After(old))) {
			continue
		}
		names[n] = until
	}
}

// ExpireLookups removes the lookup records that expired at or before now and
// returns how many it removed. The agent calls it periodically so that the
// model of names and addresses stays as bounded as the kernel sets.
func (s *Store) ExpireLookups(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for w, byIP := range s.resolved {
		for ip, names := range byIP {
			for name, until := range names {
				if !until.IsZero() && !until.After(now) {
					delete(names, name)
					n++
				}
			}
			if len(names) == 0 {
				delete(byIP, ip)
			}
		}
		if len(byIP) == 0 {
			delete(s.resolved, w)
		}
	}
	return n
}

// LookupRecords returns how many (workload, address, name) lookup records the
// store holds.
func (s *Store) LookupRecords() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, byIP := range s.resolved {
		for _, names := range byIP {
			n += len(names)
		}
	}
	return n
}

// ForgetLookups drops every recorded lookup of w (as when its set entries expire).
func (s *Store) ForgetLookups(w WorkloadKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.resolved, w)
}

// UpsertNode adds or replaces a node (its labels and addresses), for the
// nodes peers of ClusterNetworkPolicies. Only the policies with a nodes peer
// are recompiled.
func (s *Store) UpsertNode(n Node) error {
	if n.Name == "" {
		return fmt.Errorf("node: empty name")
	}
	ips := make([]netip.Addr, 0, len(n.IPs))
	for _, ip := range n.IPs {
		if !ip.IsValid() {
			return fmt.Errorf("node %s: invalid IP", n.Name)
		}
		ips = append(ips, ip.Unmap())
	}
	n.IPs = nil
	if len(ips) > 0 {
		n.IPs = ips
	}
	n.Labels = maps.Clone(n.Labels)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeNodeLocked(n.Name)
	s.nodes[n.Name] = &n
	for _, ip := range n.IPs {
		s.nodeByIP[ip] = n.Name
	}
	s.nodesChangedLocked()
	return nil
}

// Node returns a copy of a node.
func (s *Store) Node(name string) (Node, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.nodes[name]
	if !ok {
		return Node{}, false
	}
	return *n, true
}

// DeleteNode removes a node.
func (s *Store) DeleteNode(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nodes[name]; !ok {
		return
	}
	s.removeNodeLocked(name)
	s.nodesChangedLocked()
}

// Nodes returns the names of the nodes, sorted.
func (s *Store) Nodes() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := slices.Collect(maps.Keys(s.nodes))
	slices.Sort(names)
	return names
}

func (s *Store) removeNodeLocked(name string) {
	if old := s.nodes[name]; old != nil {
		for _, ip := range old.IPs {
			if s.nodeByIP[ip] == name {
				delete(s.nodeByIP, ip)
			}
		}
		delete(s.nodes, name)
	}
}

// nodesChangedLocked marks the policies with a nodes peer for the compiler.
func (s *Store) nodesChangedLocked() {
	s.gen++
	for ref, p := range s.policies {
		if p.nodePeers {
			s.pending.policies[ref] = true
		}
	}
}

// nodeLocked returns the node holding ip, or nil.
func (s *Store) nodeLocked(ip netip.Addr) *Node {
	if name, ok := s.nodeByIP[ip]; ok {
		return s.nodes[name]
	}
	return nil
}

// LoadWorkloads puts the namespaces, pods and nodes of a workloads file into
// the store.
func (s *Store) LoadWorkloads(ws *Workloads) error {
	for _, n := range ws.Nodes {
		if err := s.UpsertNode(n); err != nil {
			return err
		}
	}
	for _, ns := range ws.Namespaces {
		if err := s.UpsertNamespace(ns); err != nil {
			return err
		}
	}
	for _, p := range ws.Pods {
		if err := s.UpsertWorkload(p); err != nil {
			return err
		}
	}
	return nil
}

package policy

import (
	"maps"

	networkingv1 "k8s.io/api/networking/v1"
	cnpv1alpha2 "sigs.k8s.io/network-policy-api/apis/v1alpha2"
)

// PolicyBatch collects policy changes to apply to a Store in one step
// (Store.ApplyPolicies): lookups and decisions see the policies before the
// batch or after it, never a mix, and the FQDN index and the per-workload
// caches are rebuilt once instead of once per policy. Policies are validated
// when added, outside the store's lock. A PolicyBatch is not safe for
// concurrent use.
type PolicyBatch struct {
	puts    []*compiledPolicy
	deletes []PolicyRef
}

// UpsertFirewallPolicy validates p and adds it to the batch; an invalid policy
// is returned as a *ValidationError and not added.
func (b *PolicyBatch) UpsertFirewallPolicy(p *FirewallPolicy) error {
	return b.add(compileFirewallPolicy(p))
}

// UpsertClusterFirewallPolicy validates p and adds it to the batch.
func (b *PolicyBatch) UpsertClusterFirewallPolicy(p *ClusterFirewallPolicy) error {
	return b.add(compileClusterFirewallPolicy(p))
}

// UpsertClusterNetworkPolicy translates p and adds it to the batch (see
// Store.UpsertClusterNetworkPolicy).
func (b *PolicyBatch) UpsertClusterNetworkPolicy(p *cnpv1alpha2.ClusterNetworkPolicy) error {
	return b.add(compileClusterNetworkPolicy(p, false))
}

// UpsertNetworkPolicy validates p and adds it to the batch.
func (b *PolicyBatch) UpsertNetworkPolicy(p *networkingv1.NetworkPolicy) error {
	return b.add(compileNetworkPolicy(p))
}

func (b *PolicyBatch) add(cp *compiledPolicy, err error) error {
	if err != nil {
		return err
	}
	b.puts = append(b.puts, cp)
	return nil
}

// DeletePolicy adds the removal of a policy to the batch.
func (b *PolicyBatch) DeletePolicy(ref PolicyRef) { b.deletes = append(b.deletes, ref) }

// Len returns the number of changes in the batch.
func (b *PolicyBatch) Len() int { return len(b.puts) + len(b.deletes) }

// ApplyPolicies applies the batch under one lock: first the deletions, then
// the upserts in order (a later upsert of the same policy wins). When the
// result would hold more policies than the store's limit, nothing is applied
// and a *PolicyLimitError is returned. An empty batch changes nothing.
func (s *Store) ApplyPolicies(b *PolicyBatch) error {
	if b.Len() == 0 {
		return nil
	}
	next, policyGen := s.prepareFQDNIndex(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	gone := make(map[PolicyRef]bool, len(b.deletes))
	for _, ref := range b.deletes {
		if _, ok := s.policies[ref]; ok {
			gone[ref] = true
		}
	}
	added := make(map[PolicyRef]bool)
	var first PolicyRef // the first policy the store did not hold
	for _, cp := range b.puts {
		_, held := s.policies[cp.ref]
		if (!held || gone[cp.ref]) && !added[cp.ref] {
			added[cp.ref] = true
		}
		if !held && first.Kind == "" {
			first = cp.ref
		}
	}
	if len(gone) == 0 && len(b.puts) == 0 {
		return nil // deletions of policies the store does not hold
	}
	if n := len(s.policies) - len(gone) + len(added); len(added) > 0 && n > s.policyLimitLocked() {
		return &PolicyLimitError{Policy: first, Limit: s.policyLimitLocked(), Count: n}
	}
	for ref := range gone {
		s.countLocked(s.policies[ref], -1)
		s.policies[ref].retired = true
		delete(s.policies, ref)
		s.pending.policies[ref] = true
	}
	for _, cp := range b.puts {
		s.putLocked(cp)
	}
	// The batch's policies are not in the delta: the current index no
	// longer serves, the prepared one does if no change came in between.
	s.fqdn.gen++
	if s.policyGen == policyGen {
		next.gen, next.seq = s.fqdn.gen, s.fqdn.base+uint64(len(s.fqdn.delta))
		s.fqdn.cur.Store(next)
	}
	s.gen++
	s.policyGen++
	s.selGen++
	return nil
}

// prepareFQDNIndex builds, outside the store's write lock, the FQDN index of
// the policies the store will hold after b if no other change comes first
// (ApplyPolicies checks the returned policy generation). Lookups go on with
// the current index meanwhile instead of waiting for a rebuild after the swap.
func (s *Store) prepareFQDNIndex(b *PolicyBatch) (*fqdnIndex, uint64) {
	s.mu.RLock()
	next := maps.Clone(s.policies)
	policyGen := s.policyGen
	s.mu.RUnlock()
	if next == nil {
		next = map[PolicyRef]*compiledPolicy{}
	}
	for _, ref := range b.deletes {
		delete(next, ref)
	}
	for _, cp := range b.puts {
		next[cp.ref] = cp
	}
	return buildFQDNIndex(next, 0), policyGen
}

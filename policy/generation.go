package policy

// Generation returns a number that changes whenever workloads, namespaces or
// policies change (not on RecordLookup): callers may cache what they derived
// from the store (lookup decisions, FQDN rules, workload by IP) and drop it
// when the generation moves.
func (s *Store) Generation() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.gen
}

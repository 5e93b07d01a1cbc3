package policy

import (
	"context"
	"net/netip"
)

// WaitWorkloadByIP returns the key of the workload that holds ip, waiting
// until one does or ctx is done (ok=false). It does not poll: it sleeps until
// the next change of workloads, so a pod whose address the source has not
// delivered yet is found as soon as it is.
func (s *Store) WaitWorkloadByIP(ctx context.Context, ip netip.Addr) (WorkloadKey, bool) {
	ip = ip.Unmap()
	for {
		s.mu.Lock()
		k, ok := s.byIP[ip]
		if ok {
			s.mu.Unlock()
			return k, true
		}
		if s.wlChanged == nil {
			s.wlChanged = make(chan struct{})
		}
		ch := s.wlChanged
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return WorkloadKey{}, false
		}
	}
}

// notifyWorkloadsLocked wakes the waiters of WaitWorkloadByIP after a change
// of workloads.
func (s *Store) notifyWorkloadsLocked() {
	if s.wlChanged != nil {
		close(s.wlChanged)
		s.wlChanged = nil
	}
}

package policy

import (
	"context"
	"net/netip"
	"testing"
)

func TestWaitWorkloadByIP(t *testing.T) {
	s := NewStore()
	ip := netip.MustParseAddr("10.244.0.7")
	if err := s.UpsertWorkload(Workload{Namespace: "a", Name: "known", IPs: []netip.Addr{netip.MustParseAddr("10.244.0.6")}}); err != nil {
		t.Fatal(err)
	}
	if k, ok := s.WaitWorkloadByIP(context.Background(), netip.MustParseAddr("10.244.0.6")); !ok || k.Name != "known" {
		t.Fatalf("known address: %v %v", k, ok)
	}

	type result struct {
		k  WorkloadKey
		ok bool
	}
	done := make(chan result, 1)
	waiting := make(chan struct{})
	go func() {
		close(waiting)
		k, ok := s.WaitWorkloadByIP(context.Background(), netip.AddrFrom16(ip.As16())) // mapped form
		done <- result{k, ok}
	}()
	<-waiting
	// An unrelated change wakes the waiter, which keeps waiting.
	if err := s.UpsertWorkload(Workload{Namespace: "a", Name: "other", IPs: []netip.Addr{netip.MustParseAddr("10.244.0.8")}}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("returned before the address appeared: %+v", r)
	default:
	}
	if err := s.UpsertWorkload(Workload{Namespace: "a", Name: "late", IPs: []netip.Addr{ip}}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; !r.ok || r.k != (WorkloadKey{"a", "late"}) {
		t.Fatalf("got %+v, want a/late", r)
	}

	// Cancelled: not found.
	ctx, cancel := context.WithCancel(context.Background())
	go cancel()
	if k, ok := s.WaitWorkloadByIP(ctx, netip.MustParseAddr("10.244.0.99")); ok {
		t.Fatalf("cancelled wait found %v", k)
	}
}

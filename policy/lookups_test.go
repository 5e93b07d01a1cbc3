package policy_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

// TestLookupRecordsExpire: records made with an expiry match FQDN peers until
// ExpireLookups removes them; later records extend, records without expiry
// stay, and the model is empty again once everything expired.
func TestLookupRecordsExpire(t *testing.T) {
	const yaml = `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: fqdn, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress:
  - action: Allow
    to: [{fqdn: {matchPattern: "*.example.com"}}]
`
	e := loadEngine(t, yaml, policy.Options{}, nil)
	s := e.Store()
	w := policy.WorkloadKey{Namespace: "x", Name: "a"}
	src := addr("x/a", false)
	ip1, ip2, ip3 := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2"), netip.MustParseAddr("203.0.113.3")
	t0 := time.Unix(1_800_000_000, 0)
	allowed := func(ip netip.Addr) bool {
		return e.Decide(policy.Connection{Src: src, Dst: ip, Port: 443, Protocol: policy.ProtocolTCP}).Verdict == policy.Allow
	}

	s.RecordLookupUntil(w, "a.example.com", t0.Add(time.Minute), ip1, ip2)
	s.RecordLookupUntil(w, "a.example.com", t0.Add(10*time.Second), ip2) // earlier: does not shorten
	s.RecordLookupUntil(w, "b.example.com", t0.Add(5*time.Minute), ip2)
	s.RecordLookup(w, "c.example.com", ip3) // no expiry
	if n := s.LookupRecords(); n != 4 {
		t.Fatalf("records %d, want 4", n)
	}
	for _, ip := range []netip.Addr{ip1, ip2, ip3} {
		if !allowed(ip) {
			t.Fatalf("%v denied before expiry", ip)
		}
	}
	if n := s.ExpireLookups(t0.Add(30 * time.Second)); n != 0 {
		t.Fatalf("expired %d at +30s, want 0 (a.example.com lasts 1m on both)", n)
	}
	if n := s.ExpireLookups(t0.Add(2 * time.Minute)); n != 2 {
		t.Fatalf("expired %d at +2m, want 2 (a.example.com on .1 and .2)", n)
	}
	if allowed(ip1) {
		t.Error("203.0.113.1 still allowed after its only record expired")
	}
	if !allowed(ip2) || !allowed(ip3) {
		t.Error("203.0.113.2 (b.example.com) or .3 (no expiry) denied")
	}
	if n := s.ExpireLookups(t0.Add(time.Hour)); n != 1 || s.LookupRecords() != 1 {
		t.Fatalf("at +1h expired %d, %d left; want 1 and 1 (the record without expiry)", n, s.LookupRecords())
	}
	// A record without expiry is not given one by a later timed record.
	s.RecordLookupUntil(w, "c.example.com", t0, ip3)
	if n := s.ExpireLookups(t0.Add(2 * time.Hour)); n != 0 || !allowed(ip3) {
		t.Fatalf("record without expiry expired (%d)", n)
	}
}

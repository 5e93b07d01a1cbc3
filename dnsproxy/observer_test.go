package dnsproxy

import (
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// resultCounter counts Observer.Result and Observer.CacheHit calls.
type resultCounter struct {
	mu      sync.Mutex
	results map[string]int
	hits    int
}

func (c *resultCounter) observer() Observer {
	return Observer{
		Result:   func(r string) { c.mu.Lock(); c.results[r]++; c.mu.Unlock() },
		CacheHit: func() { c.mu.Lock(); c.hits++; c.mu.Unlock() },
	}
}

func (c *resultCounter) snapshot() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.results), c.hits
}

// TestObserverResultsAndCacheHits: every query's outcome reaches
// Observer.Result with the label egressd_dns_queries_total uses, and every
// cache hit (slow path over TCP, fast path over UDP) Observer.CacheHit.
func TestObserverResultsAndCacheHits(t *testing.T) {
	up := startCoreDNS(t)
	rc := &resultCounter{results: map[string]int{}}
	h := start(t, []string{up}, func(c *Config, d *Deps) { d.Observer = rc.observer(); c.RateLimit, c.RateBurst = 1, 6 })
	h.query(t, unknownIP, "udp", "api.test", dns.TypeA, true)         // allowed (miss)
	h.query(t, unknownIP, "udp", "api.test", dns.TypeA, true)         // allowed (fast-path hit)
	h.query(t, unknownIP, "tcp", "api.test", dns.TypeA, true)         // allowed (slow-path hit)
	h.query(t, runnerIP, "udp", "xmr.minepool.test", dns.TypeA, true) // blocked
	h.query(t, gatewayIP, "udp", "txt.test", dns.TypeTXT, true)       // audit
	m := new(dns.Msg)
	m.SetQuestion("api.test.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	if r, err := exchangeFrom(gatewayIP, "udp", h.addr, m); err != nil || r.Rcode != dns.RcodeRefused {
		t.Fatalf("CHAOS query: %v %v", r, err)
	}
	// The unknown client's bucket (burst 6) is empty after 6 more queries.
	for i := 0; i < 6; i++ {
		h.query(t, unknownIP, "udp", "api.test", dns.TypeA, true)
	}
	// Result is called after the reply is written: wait for all 12.
	got, hits := rc.snapshot()
	for i := 0; i < 200 && total(got) < 12; i++ {
		time.Sleep(10 * time.Millisecond)
		got, hits = rc.snapshot()
	}
	want := map[string]int{ResultAllowed: 3 + 3, ResultBlocked: 1, ResultAudit: 1, ResultRefused: 1 + 3}
	if !maps.Equal(got, want) {
		t.Errorf("results %v, want %v", got, want)
	}
	if hits != 2+3 {
		t.Errorf("%d cache hits observed, want 5", hits)
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

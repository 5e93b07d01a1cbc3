package dnsproxy

import (
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// rateLimiter is a token bucket per client address.
type rateLimiter struct {
	rate    float64 // tokens per second
	burst   float64
	clients *lru.Cache[netip.Addr, *bucket]
}

type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newRateLimiter(s *settings) (*rateLimiter, error) {
	if s.RateLimit <= 0 {
		return nil, nil
	}
	c, err := lru.New[netip.Addr, *bucket](s.RateClients)
	if err != nil {
		return nil, err
	}
	return &rateLimiter{rate: s.RateLimit, burst: float64(s.RateBurst), clients: c}, nil
}

// allow takes a token from the client's bucket.
func (r *rateLimiter) allow(client netip.Addr, now time.Time) bool {
	if r == nil {
		return true
	}
	b, ok := r.clients.Get(client)
	if !ok {
		nb := &bucket{tokens: r.burst, last: now}
		if prev, found, _ := r.clients.PeekOrAdd(client, nb); found {
			b = prev
		} else {
			b = nb
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(r.burst, b.tokens+el*r.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

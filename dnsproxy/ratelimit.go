package dnsproxy

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Per-client limits (issue 17 item 6): a token bucket of queries per client
// (RateLimit), queries in flight per client (MaxInflightPerClient, counted
// in Server.inflightPer), and response-rate limiting of the same answer to
// the same client (RRL*). The state of every limiter is bounded: buckets live
// in LRU caches of RateClients entries (a forgotten client starts again with
// a full bucket), in-flight counts only exist while above zero.

// rateLimiter is a token bucket per key.
type rateLimiter[K comparable] struct {
	rate    float64 // tokens per second
	burst   float64
	clients *lru.Cache[K, *bucket]
}

type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	over   uint32 // tokens refused in a row (RRL slip)
}

func newBuckets[K comparable](rate float64, burst, size int) (*rateLimiter[K], error) {
	if rate <= 0 {
		return nil, nil
	}
	c, err := lru.New[K, *bucket](size)
	if err != nil {
		return nil, err
	}
	return &rateLimiter[K]{rate: rate, burst: float64(max(burst, 1)), clients: c}, nil
}

func newRateLimiter(s *settings) (*rateLimiter[netip.Addr], error) {
	return newBuckets[netip.Addr](s.RateLimit, s.RateBurst, s.RateClients)
}

// allow takes a token from the key's bucket.
func (r *rateLimiter[K]) allow(key K, now time.Time) bool {
	ok, _ := r.take(key, now)
	return ok
}

// take takes a token from the key's bucket; when there is none it returns
// false and how many tokens in a row were refused, this one included.
func (r *rateLimiter[K]) take(key K, now time.Time) (bool, uint32) {
	if r == nil {
		return true, 0
	}
	b, ok := r.clients.Get(key)
	if !ok {
		nb := &bucket{tokens: r.burst, last: now}
		if prev, found, _ := r.clients.PeekOrAdd(key, nb); found {
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
		b.over++
		return false, b.over
	}
	b.tokens--
	b.over = 0
	return true, 0
}

// rrlKey is one answer to one client: the client and a hash of the lower-case
// query name, type and response code (a collision only shares a bucket).
type rrlKey struct {
	client netip.Addr
	answer uint64
}

// rrl is response-rate limiting: at most RRLRate identical responses per
// second to one client over UDP. Of the responses over the rate, every
// RRLSlip-th is sent as an empty truncated reply (TC: a real client retries
// over TCP, which is not limited by RRL), the others are dropped; RRLSlip 0
// drops them all, 1 truncates them all. As BIND's and Knot's RRL.
type rrl struct {
	buckets *rateLimiter[rrlKey]
	slip    uint32
	seed    maphash.Seed
}

func newRRL(s *settings) (*rrl, error) {
	b, err := newBuckets[rrlKey](s.RRLRate, int(max(s.RRLRate, 1)), s.RateClients)
	if err != nil || b == nil {
		return nil, err
	}
	return &rrl{buckets: b, slip: uint32(max(s.RRLSlip, 0)), seed: maphash.MakeSeed()}, nil
}

// rrlAction is what to do with a UDP response.
type rrlAction int

const (
	rrlSend     rrlAction = iota // within the rate: send it
	rrlTruncate                  // over: send an empty truncated reply instead
	rrlDrop                      // over: send nothing
)

// check takes a token for the response (name in any case, qtype, rcode) to
// client.
func (r *rrl) check(client netip.Addr, name string, qtype uint16, rcode int, now time.Time) rrlAction {
	if r == nil {
		return rrlSend
	}
	var h maphash.Hash
	h.SetSeed(r.seed)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h.WriteByte(c)
	}
	h.WriteByte(0)
	h.WriteByte(byte(qtype >> 8))
	h.WriteByte(byte(qtype))
	h.WriteByte(byte(rcode))
	ok, over := r.buckets.take(rrlKey{client, h.Sum64()}, now)
	switch {
	case ok:
		return rrlSend
	case r.slip > 0 && over%r.slip == 0:
		return rrlTruncate
	}
	return rrlDrop
}

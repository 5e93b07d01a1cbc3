package dnsproxy

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/miekg/dns"
)

// cacheEntry is a stored answer. Its message is never modified after put:
// readers copy it.
type cacheEntry struct {
	msg     *dns.Msg // TTLs as stored (clamped), no OPT, ID 0
	stored  time.Time
	ttl     uint32 // lifetime in seconds
	expires time.Time

	// wire is the packed reply of the fast path, built on its first hit.
	wire atomic.Pointer[wireForm]
	// touched is the Unix second the fast path last promoted the entry in
	// the LRU (fast hits do not take the LRU's lock on every query).
	touched atomic.Int64
	// mu guards wl: per workload, the cached decision and what was written
	// to the kernel sets for this answer (fastpath.go).
	mu sync.Mutex
	wl []*wlRecord
}

// cache holds answers keyed by question and the flags that change them.
// idx mirrors the LRU's keys for the fast path's lock-light lookups: it is
// changed only under mu.Lock, together with the LRU's membership (Add,
// Remove and the eviction callback).
type cache struct {
	s   *settings
	lru *lru.Cache[string, *cacheEntry]
	mu  sync.RWMutex
	idx map[string]*cacheEntry
}

func newCache(s *settings) (*cache, error) {
	if s.CacheSize < 0 {
		return &cache{s: s}, nil
	}
	c := &cache{s: s, idx: make(map[string]*cacheEntry)}
	l, err := lru.NewWithEvict[string, *cacheEntry](s.CacheSize, func(k string, _ *cacheEntry) {
		delete(c.idx, k) // called under c.mu.Lock: every membership change holds it
	})
	if err != nil {
		return nil, err
	}
	c.lru = l
	return c, nil
}

// fresh returns the live entry of key (a cache key as bytes) for the fast
// path, or nil when there is none or it expired. It does not allocate.
func (c *cache) fresh(key []byte, now time.Time) *cacheEntry {
	if c.lru == nil {
		return nil
	}
	c.mu.RLock()
	e := c.idx[string(key)]
	c.mu.RUnlock()
	if e == nil || !now.Before(e.expires) {
		return nil
	}
	// Keep hot entries recent in the LRU, at most once a second each.
	if sec := now.Unix(); e.touched.Load() != sec {
		e.touched.Store(sec)
		c.lru.Get(string(key))
	}
	return e
}

// cacheKey identifies a question: lower-cased name, type, class and the flags
// forwarded upstream (RD, CD, DO).
func cacheKey(q dns.Question, rd, cd, do bool) string {
	var b strings.Builder
	b.Grow(len(q.Name) + 8)
	for i := 0; i < len(q.Name); i++ {
		c := q.Name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b.WriteByte(c)
	}
	flags := byte(0)
	if rd {
		flags |= 1
	}
	if cd {
		flags |= 2
	}
	if do {
		flags |= 4
	}
	b.Write([]byte{0, byte(q.Qtype >> 8), byte(q.Qtype), byte(q.Qclass >> 8), byte(q.Qclass), flags})
	return b.String()
}

// get returns a copy of the answer with TTLs decremented by its age. fresh is
// false for an expired answer still inside the serve-stale window (its TTLs
// are then StaleTTL); ok is false when nothing usable is cached.
func (c *cache) get(key string, now time.Time) (m *dns.Msg, fresh, ok bool) {
	if c.lru == nil {
		return nil, false, false
	}
	e, ok := c.lru.Get(key)
	if !ok {
		return nil, false, false
	}
	if now.Before(e.expires) {
		age := uint32(now.Sub(e.stored) / time.Second)
		return copyWithTTL(e.msg, func(ttl uint32) uint32 { return ttl - min(age, ttl) }), true, true
	}
	if now.Before(e.expires.Add(c.s.ServeStale)) {
		stale := c.s.staleTTL
		return copyWithTTL(e.msg, func(uint32) uint32 { return stale }), false, true
	}
	c.mu.Lock()
	if cur, ok := c.lru.Peek(key); ok && cur == e {
		c.lru.Remove(key)
	}
	c.mu.Unlock()
	return nil, false, false
}

// put stores an upstream answer when it is cacheable and returns the message
// as stored (TTLs clamped), or m unchanged when it is not cached.
func (c *cache) put(key string, m *dns.Msg, now time.Time) *dns.Msg {
	stored, ttl, ok := c.prepare(m)
	if !ok {
		return m
	}
	if ttl == 0 || c.lru == nil {
		return stored
	}
	c.add(key, &cacheEntry{msg: stored, stored: now, ttl: ttl, expires: now.Add(time.Duration(ttl) * time.Second)})
	return stored
}

// prepare returns the message to store for an answer (TTLs clamped) and its
// lifetime; ok is false when the answer is not cacheable.
func (c *cache) prepare(m *dns.Msg) (stored *dns.Msg, ttl uint32, ok bool) {
	ttl, ok = c.lifetime(m)
	if !ok {
		return nil, 0, false
	}
	if m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0 {
		// Positive: TTLs clamped; the lifetime is the least of them.
		stored = copyWithTTL(m, func(t uint32) uint32 { return min(max(t, c.s.minTTL), c.s.maxTTL) })
		ttl = ^uint32(0)
		for _, rrs := range [][]dns.RR{stored.Answer, stored.Ns} {
			for _, rr := range rrs {
				ttl = min(ttl, rr.Header().Ttl)
			}
		}
	} else {
		// Negative: no record outlives the negative TTL.
		stored = copyWithTTL(m, func(t uint32) uint32 { return min(t, ttl) })
	}
	return stored, ttl, true
}

func (c *cache) add(key string, e *cacheEntry) {
	c.mu.Lock()
	c.lru.Add(key, e)
	c.idx[key] = e
	c.mu.Unlock()
}

// snapshot returns the entries to checkpoint at now, least recently used
// first: the most recently used ones whose packed answers fit in maxBytes,
// fresh ones and, with serve-stale, stale ones still inside the window.
func (c *cache) snapshot(now time.Time, maxBytes int) []CachedAnswer {
	if c.lru == nil || maxBytes <= 0 {
		return nil
	}
	keys := c.lru.Keys() // least recently used first
	var out []CachedAnswer
	size := 0
	for i := len(keys) - 1; i >= 0; i-- {
		e, ok := c.lru.Peek(keys[i])
		if !ok || !now.Before(e.expires.Add(c.s.ServeStale)) {
			continue
		}
		b, err := copyWithTTL(e.msg, func(t uint32) uint32 { return t }).Pack()
		if err != nil {
			continue
		}
		if size += len(b) + 96; size > maxBytes { // + the JSON around it
			break
		}
		k := keys[i]
		out = append(out, CachedAnswer{Msg: b, Flags: k[len(k)-1], Stored: e.stored.UTC(), Expires: e.expires.UTC()})
	}
	slices.Reverse(out)
	return out
}

// restore puts a checkpointed answer back, cached at stored: its TTLs count
// down from then. The expiry is the least of the one recorded and the one
// this process's clamps give. It reports whether the answer was restored: not
// when it is not cacheable, has expired beyond the serve-stale window, or a
// fresher answer is cached already.
func (c *cache) restore(key string, m *dns.Msg, stored, expires, now time.Time) bool {
	if c.lru == nil {
		return false
	}
	msg, ttl, ok := c.prepare(m)
	if !ok || ttl == 0 {
		return false
	}
	exp := stored.Add(time.Duration(ttl) * time.Second)
	if expires.Before(exp) {
		exp = expires
	}
	if !now.Before(exp.Add(c.s.ServeStale)) {
		return false
	}
	if cur, ok := c.lru.Peek(key); ok && !cur.expires.Before(exp) {
		return false
	}
	c.add(key, &cacheEntry{msg: msg, stored: stored, ttl: ttl, expires: exp})
	return true
}

// lifetime says whether m may be cached and, for negative answers, for how
// long (RFC 2308: min(SOA TTL, SOA MINIMUM), capped by MaxNegativeTTL).
func (c *cache) lifetime(m *dns.Msg) (uint32, bool) {
	if m.Truncated {
		return 0, false
	}
	switch {
	case m.Rcode == dns.RcodeSuccess && len(m.Answer) > 0:
		return 0, true
	case m.Rcode == dns.RcodeSuccess || m.Rcode == dns.RcodeNameError:
		for _, rr := range m.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				return min(soa.Hdr.Ttl, soa.Minttl, c.s.maxNeg), true
			}
		}
	}
	return 0, false
}

// len returns the number of cached answers.
func (c *cache) len() int {
	if c.lru == nil {
		return 0
	}
	return c.lru.Len()
}

// copyWithTTL copies m (without its OPT record) with every TTL mapped by f.
func copyWithTTL(m *dns.Msg, f func(uint32) uint32) *dns.Msg {
	out := new(dns.Msg)
	out.MsgHdr = m.MsgHdr
	out.Compress = true
	out.Question = append([]dns.Question(nil), m.Question...)
	cp := func(rrs []dns.RR) []dns.RR {
		if len(rrs) == 0 {
			return nil
		}
		res := make([]dns.RR, 0, len(rrs))
		for _, rr := range rrs {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			c := dns.Copy(rr)
			c.Header().Ttl = f(c.Header().Ttl)
			res = append(res, c)
		}
		return res
	}
	out.Answer, out.Ns, out.Extra = cp(m.Answer), cp(m.Ns), cp(m.Extra)
	return out
}

package tunnel

import (
	"hash/maphash"
	"strings"
	"sync"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/net/publicsuffix"
)

// pslDepth is the number of rightmost labels that decide a name's registered
// domain: the deepest Public Suffix List rule has 5 labels, a wildcard rule
// adds one, the registered domain one more.
const pslDepth = 7

// pslCache memoizes registered-domain lookups by the rightmost pslDepth
// labels of a name. publicsuffix.PublicSuffix allocates on every call (it
// first tries to parse the name as an IP address); the cache keeps the hot
// path allocation-free for names seen before.
type pslCache struct {
	shards [nShards]struct {
		mu  sync.Mutex
		lru *simplelru.LRU[string, int]
	}
}

func (c *pslCache) init() {
	for i := range c.shards {
		c.shards[i].lru, _ = simplelru.NewLRU[string, int](2048, nil)
	}
}

// registered returns the index of the dot before the registered domain of
// name (lowercase, no trailing dot): -1 when name is the registered domain
// itself, < -1 when name has none (a public suffix or malformed).
func (c *pslCache) registered(seed maphash.Seed, name string) int {
	key := name
	for i, n := len(name)-1, 0; i >= 0; i-- {
		if name[i] == '.' {
			if n++; n == pslDepth {
				key = name[i+1:]
				break
			}
		}
	}
	off := len(name) - len(key)
	sh := &c.shards[maphash.String(seed, key)%nShards]
	sh.mu.Lock()
	j, ok := sh.lru.Get(key)
	sh.mu.Unlock()
	if !ok {
		j = registeredIndex(key)
		sh.mu.Lock()
		sh.lru.Add(strings.Clone(key), j)
		sh.mu.Unlock()
	}
	if j < -1 {
		return j
	}
	return off + j
}

func registeredIndex(name string) int {
	suffix, _ := publicsuffix.PublicSuffix(name)
	if len(name) <= len(suffix) {
		return -2
	}
	i := len(name) - len(suffix) - 1
	if name[i] != '.' {
		return -2
	}
	return strings.LastIndexByte(name[:i], '.')
}

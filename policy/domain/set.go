package domain

import (
	"bytes"
	"slices"
	"strings"
)

// Builder collects (pattern, value) pairs and builds immutable [Set]s from
// them. Policies change at runtime: keep one Builder, Add and Remove pairs as
// rules come and go, and Build a new Set to publish (for example through an
// atomic.Pointer). The zero Builder is empty and ready to use. A Builder is
// not safe for concurrent use.
type Builder[V comparable] struct {
	pairs map[pair[V]]uint64 // pair -> insertion sequence number
	next  uint64
}

type pair[V comparable] struct {
	p Pattern
	v V
}

// Add adds the pair (p, v) and reports whether it was new. Adding a pair
// that is already present changes nothing (it keeps its original insertion
// position). The zero Pattern is ignored (Add returns false).
func (b *Builder[V]) Add(p Pattern, v V) bool {
	if p.kind == kindNone {
		return false
	}
	k := pair[V]{p, v}
	if _, ok := b.pairs[k]; ok {
		return false
	}
	if b.pairs == nil {
		b.pairs = make(map[pair[V]]uint64)
	}
	b.pairs[k] = b.next
	b.next++
	return true
}

// Remove removes the pair (p, v) and reports whether it was present.
func (b *Builder[V]) Remove(p Pattern, v V) bool {
	k := pair[V]{p, v}
	if _, ok := b.pairs[k]; !ok {
		return false
	}
	delete(b.pairs, k)
	return true
}

// Len returns the number of pairs in the Builder.
func (b *Builder[V]) Len() int { return len(b.pairs) }

// Build returns a Set holding the Builder's current pairs. The Set shares
// nothing with the Builder, which stays usable. Build costs time linear in
// the total length of the patterns (a few milliseconds for 10,000).
func (b *Builder[V]) Build() *Set[V] {
	es := make([]entry[V], 0, len(b.pairs))
	for k, seq := range b.pairs {
		es = append(es, entry[V]{seq: seq, p: k.p, v: k.v})
	}
	slices.SortFunc(es, func(a, b entry[V]) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	s := &Set[V]{root: new(node[V]), n: len(es)}
	for _, e := range es {
		s.insert(e)
	}
	s.root.finish()
	return s
}

// Set is an immutable collection of (pattern, value) pairs that finds the
// values of all patterns matching a name, agreeing exactly with
// [Pattern.Match]. It is a trie keyed by labels from the right (TLD first):
// exact labels are map children, a label that is only "*" is one child, other
// labels with '*' are a short per-node list of precompiled globs (indexed by
// first or last byte when long), "**." patterns hang off the node of their
// suffix, and bare "*" patterns are kept apart. The cost of a lookup depends
// on the name and on the patterns that could match it, not on the size of the
// Set.
//
// A Set never changes after [Builder.Build], so any number of goroutines may
// use it at once without locking. A nil *Set is empty.
type Set[V comparable] struct {
	root *node[V]
	any  []entry[V] // bare "*" patterns
	n    int
}

type entry[V comparable] struct {
	seq uint64
	p   Pattern
	v   V
}

type node[V comparable] struct {
	exact map[string]*node[V]
	star  *node[V] // child for a label that is only "*"
	globs []globEdge[V]
	gidx  *globIndex
	here  []entry[V] // patterns ending at this node
	deep  []entry[V] // "**." patterns whose suffix ends at this node

	globPos map[string]int // build only: glob label -> index in globs
}

type globEdge[V comparable] struct {
	g     glob
	child *node[V]
}

// glob is a precompiled label pattern with at least one '*':
// prefix*middle[0]*...*middle[n-1]*suffix.
type glob struct {
	prefix, suffix string
	middle         []string
	min            int // shortest label it can match
}

func compileGlob(label string) glob {
	parts := strings.Split(label, "*")
	g := glob{prefix: parts[0], suffix: parts[len(parts)-1]}
	for _, m := range parts[1 : len(parts)-1] {
		if m != "" {
			g.middle = append(g.middle, m)
		}
	}
	for _, p := range parts {
		g.min += len(p)
	}
	return g
}

func (g *glob) match(l []byte) bool {
	if len(l) < g.min || string(l[:len(g.prefix)]) != g.prefix || string(l[len(l)-len(g.suffix):]) != g.suffix {
		return false
	}
	l = l[len(g.prefix) : len(l)-len(g.suffix)]
	for _, m := range g.middle {
		i := index(l, m) // the leftmost occurrence is always the best choice
		if i < 0 {
			return false
		}
		l = l[i+len(m):]
	}
	return true
}

// index is bytes.Index for a string needle, without converting it.
func index(l []byte, m string) int {
	for i := 0; i+len(m) <= len(l); i++ {
		if l[i] == m[0] && string(l[i:i+len(m)]) == m {
			return i
		}
	}
	return -1
}

// globIndex narrows down which globs of a node can match a label.
type globIndex struct {
	byFirst map[byte][]int // globs with a literal prefix, by its first byte
	byLast  map[byte][]int // globs with no prefix but a literal suffix, by its last byte
	rest    []int          // globs starting and ending with '*'
}

// globIndexMin is the number of globs at one node from which they are indexed.
const globIndexMin = 8

func (s *Set[V]) insert(e entry[V]) {
	if e.p.kind == kindAny {
		s.any = append(s.any, e)
		return
	}
	pat := e.p.s
	deep := strings.HasPrefix(pat, "**.")
	if deep {
		pat = pat[3:]
	}
	n := s.root
	for pat != "" {
		i := strings.LastIndexByte(pat, '.')
		n = n.child(pat[i+1:])
		pat = pat[:max(i, 0)]
	}
	if deep {
		n.deep = append(n.deep, e)
	} else {
		n.here = append(n.here, e)
	}
}

func (n *node[V]) child(label string) *node[V] {
	switch {
	case label == "*":
		if n.star == nil {
			n.star = new(node[V])
		}
		return n.star
	case strings.IndexByte(label, '*') >= 0:
		if i, ok := n.globPos[label]; ok {
			return n.globs[i].child
		}
		if n.globPos == nil {
			n.globPos = make(map[string]int)
		}
		c := new(node[V])
		n.globPos[label] = len(n.globs)
		n.globs = append(n.globs, globEdge[V]{g: compileGlob(label), child: c})
		return c
	}
	c := n.exact[label]
	if c == nil {
		if n.exact == nil {
			n.exact = make(map[string]*node[V])
		}
		c = new(node[V])
		n.exact[label] = c
	}
	return c
}

// finish drops build-only state and indexes long glob lists.
func (n *node[V]) finish() {
	n.globPos = nil
	if len(n.globs) >= globIndexMin {
		x := &globIndex{byFirst: map[byte][]int{}, byLast: map[byte][]int{}}
		for i, ge := range n.globs {
			switch {
			case ge.g.prefix != "":
				x.byFirst[ge.g.prefix[0]] = append(x.byFirst[ge.g.prefix[0]], i)
			case ge.g.suffix != "":
				c := ge.g.suffix[len(ge.g.suffix)-1]
				x.byLast[c] = append(x.byLast[c], i)
			default:
				x.rest = append(x.rest, i)
			}
		}
		n.gidx = x
	}
	for _, c := range n.exact {
		c.finish()
	}
	if n.star != nil {
		n.star.finish()
	}
	for _, ge := range n.globs {
		ge.child.finish()
	}
}

// Len returns the number of (pattern, value) pairs in the Set.
func (s *Set[V]) Len() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Each calls yield for every pair whose pattern matches name, until yield
// returns false. Each pair is reported at most once, but a value added with
// several matching patterns is reported once per pattern. The order is
// deterministic for a given Set but otherwise unspecified (use MatchAll for
// insertion order). Names are normalized as by [NormalizeName]; an invalid
// name matches nothing. Each does not allocate.
func (s *Set[V]) Each(name string, yield func(p Pattern, v V) bool) {
	s.walk(name, func(e *entry[V]) bool { return yield(e.p, e.v) })
}

// AppendValues appends to dst the value of every pair whose pattern matches
// name, in the order of [Set.Each] (a value added with several matching
// patterns is appended once per pattern), and returns the extended slice. With
// a dst of sufficient capacity it does not allocate.
func (s *Set[V]) AppendValues(dst []V, name string) []V {
	s.walk(name, func(e *entry[V]) bool {
		dst = append(dst, e.v)
		return true
	})
	return dst
}

// Match reports whether any pattern in the Set matches name.
func (s *Set[V]) Match(name string) bool {
	found := false
	s.walk(name, func(*entry[V]) bool { found = true; return false })
	return found
}

// MatchAll returns the distinct values of all pairs whose pattern matches
// name, in the order in which their first matching pair was added to the
// Builder, or nil if none matches.
func (s *Set[V]) MatchAll(name string) []V {
	var stack [16]hit[V]
	hits := stack[:0]
	s.walk(name, func(e *entry[V]) bool {
		hits = append(hits, hit[V]{e.seq, e.v})
		return true
	})
	if len(hits) == 0 {
		return nil
	}
	slices.SortFunc(hits, func(a, b hit[V]) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	out := make([]V, 0, len(hits))
	if len(hits) <= 32 {
		for _, h := range hits {
			if !slices.Contains(out, h.v) {
				out = append(out, h.v)
			}
		}
		return out
	}
	seen := make(map[V]struct{}, len(hits))
	for _, h := range hits {
		if _, ok := seen[h.v]; !ok {
			seen[h.v] = struct{}{}
			out = append(out, h.v)
		}
	}
	return out
}

type hit[V comparable] struct {
	seq uint64
	v   V
}

func (s *Set[V]) walk(name string, yield func(*entry[V]) bool) {
	if s == nil || s.root == nil {
		return
	}
	var buf [MaxNameLen]byte
	n, ok := canonicalName(&buf, name)
	if !ok {
		return
	}
	for i := range s.any {
		if !yield(&s.any[i]) {
			return
		}
	}
	s.root.walk(n, len(n), yield)
}

// walk reports the entries of n and its descendants that match the first end
// bytes of name (which still has to be matched, label by label, from the
// right). It returns false when yield asked to stop.
func (n *node[V]) walk(name []byte, end int, yield func(*entry[V]) bool) bool {
	if end == 0 {
		for i := range n.here {
			if !yield(&n.here[i]) {
				return false
			}
		}
		return true
	}
	for i := range n.deep {
		if !yield(&n.deep[i]) {
			return false
		}
	}
	dot := bytes.LastIndexByte(name[:end], '.')
	label := name[dot+1 : end]
	next := max(dot, 0)
	if c := n.exact[string(label)]; c != nil {
		if !c.walk(name, next, yield) {
			return false
		}
	}
	if n.star != nil {
		if !n.star.walk(name, next, yield) {
			return false
		}
	}
	if n.gidx == nil {
		for i := range n.globs {
			if ge := &n.globs[i]; ge.g.match(label) && !ge.child.walk(name, next, yield) {
				return false
			}
		}
		return true
	}
	return n.walkGlobs(n.gidx.byFirst[label[0]], name, label, next, yield) &&
		n.walkGlobs(n.gidx.byLast[label[len(label)-1]], name, label, next, yield) &&
		n.walkGlobs(n.gidx.rest, name, label, next, yield)
}

func (n *node[V]) walkGlobs(idx []int, name, label []byte, next int, yield func(*entry[V]) bool) bool {
	for _, i := range idx {
		if ge := &n.globs[i]; ge.g.match(label) && !ge.child.walk(name, next, yield) {
			return false
		}
	}
	return true
}

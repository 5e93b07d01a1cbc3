// Package iprange is the address-range model behind KindPrefix sets: a set of
// disjoint, sorted address ranges, each with an expiry. Adding a prefix covers its
// addresses with the new expiry (overwriting what was there, so a re-add refreshes),
// deleting a prefix uncovers them (so "10.0.0.0/8 except 10.1.0.0/16" is an add and
// a delete). Every backend keeps its interval set equal to this model, which is why
// overlapping and adjacent prefixes never reach the kernel as overlapping elements.
package iprange

import (
	"net/netip"
	"slices"
	"time"
)

// Range is the inclusive address range [Start, End]; Expiry is zero for none.
type Range struct {
	Start, End netip.Addr
	Expiry     time.Time
}

// Set is a sorted list of disjoint ranges. The zero value is empty.
type Set struct {
	rs []Range
}

// FromRanges builds a set from ranges (which may overlap; later ones win).
func FromRanges(rs []Range) *Set {
	s := &Set{}
	for _, r := range rs {
		s.cover(r.Start, r.End, r.Expiry, true)
	}
	return s
}

// Bounds returns the first and last address of p.
func Bounds(p netip.Prefix) (netip.Addr, netip.Addr) {
	p = p.Masked()
	a := p.Addr()
	b := a.AsSlice()
	bits := p.Bits()
	for i := range b {
		lo := i * 8
		switch {
		case lo >= bits:
			b[i] = 0xff
		case lo+8 > bits:
			b[i] |= byte(0xff) >> (bits - lo)
		}
	}
	last, _ := netip.AddrFromSlice(b)
	return a, last
}

// Add covers p with expiry exp (zero: none).
func (s *Set) Add(p netip.Prefix, exp time.Time) {
	a, b := Bounds(p)
	s.cover(a, b, exp, true)
}

// Delete uncovers p.
func (s *Set) Delete(p netip.Prefix) {
	a, b := Bounds(p)
	s.cover(a, b, time.Time{}, false)
}

// Clear empties the set.
func (s *Set) Clear() { s.rs = nil }

// Expire drops the ranges whose expiry is at or before now.
func (s *Set) Expire(now time.Time) {
	s.rs = slices.DeleteFunc(s.rs, func(r Range) bool { return !r.Expiry.IsZero() && !r.Expiry.After(now) })
}

// Ranges returns the ranges, sorted, with adjacent ranges of equal expiry merged.
func (s *Set) Ranges() []Range {
	out := make([]Range, 0, len(s.rs))
	for _, r := range s.rs {
		if n := len(out); n > 0 && out[n-1].Expiry.Equal(r.Expiry) && out[n-1].End.Next() == r.Start {
			out[n-1].End = r.End
			continue
		}
		out = append(out, r)
	}
	return out
}

// Prefixes decomposes the ranges into the fewest CIDR prefixes, with their expiry.
func (s *Set) Prefixes() []PrefixExpiry {
	var out []PrefixExpiry
	for _, r := range s.Ranges() {
		for _, p := range Decompose(r.Start, r.End) {
			out = append(out, PrefixExpiry{p, r.Expiry})
		}
	}
	return out
}

// PrefixExpiry is one prefix of a decomposition.
type PrefixExpiry struct {
	Prefix netip.Prefix
	Expiry time.Time
}

// cover replaces [a, b] with one range (add) or nothing (!add).
func (s *Set) cover(a, b netip.Addr, exp time.Time, add bool) {
	// Find the first range that ends at or after a.
	i, _ := slices.BinarySearchFunc(s.rs, a, func(r Range, t netip.Addr) int { return r.End.Compare(t) })
	var repl []Range
	var right []Range
	j := i
	for ; j < len(s.rs) && s.rs[j].Start.Compare(b) <= 0; j++ {
		r := s.rs[j]
		if r.Start.Less(a) {
			repl = append(repl, Range{r.Start, a.Prev(), r.Expiry})
		}
		if b.Less(r.End) { // only the last overlapping range can reach past b
			right = append(right, Range{b.Next(), r.End, r.Expiry})
		}
	}
	if add {
		repl = append(repl, Range{a, b, exp})
	}
	repl = append(repl, right...)
	s.rs = slices.Replace(s.rs, i, j, repl...)
}

// Decompose returns the fewest prefixes that exactly cover [a, b] (same family).
func Decompose(a, b netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for {
		bits := 0
		for ; bits <= a.BitLen(); bits++ {
			p := netip.PrefixFrom(a, bits)
			if p.Masked().Addr() != a {
				continue
			}
			if _, last := Bounds(p); last.Compare(b) <= 0 {
				break
			}
		}
		p := netip.PrefixFrom(a, bits)
		out = append(out, p)
		_, last := Bounds(p)
		if last.Compare(b) >= 0 {
			return out
		}
		a = last.Next()
	}
}

package domain

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// oracleMatch is a third, independent statement of the semantics: the
// pattern as an anchored regular expression over the normalized name.
func oracleMatch(t testing.TB, p Pattern, name string) bool {
	t.Helper()
	if _, err := NormalizeName(name); err != nil || p.String() == "" {
		return false
	}
	// The oracle matches the decoded name (presentation escapes resolved,
	// ASCII lower-cased, a dot inside a label as labelDot).
	var buf [MaxNameLen]byte
	dec, _ := canonicalName(&buf, name)
	n := string(dec)
	if p.String() == "*" {
		return true
	}
	s := p.String()
	var re strings.Builder
	re.WriteString(`^`)
	if rest, ok := strings.CutPrefix(s, "**."); ok {
		re.WriteString(`(?:[^.]+\.)+`)
		s = rest
	}
	for i, label := range strings.Split(s, ".") {
		if i > 0 {
			re.WriteString(`\.`)
		}
		for j, lit := range strings.Split(label, "*") {
			if j > 0 {
				re.WriteString(`[^.]*`)
			}
			re.WriteString(regexp.QuoteMeta(lit))
		}
	}
	re.WriteString(`$`)
	return compileCached(re.String()).MatchString(n)
}

var oracleCache sync.Map // string -> *regexp.Regexp

func compileCached(expr string) *regexp.Regexp {
	if re, ok := oracleCache.Load(expr); ok {
		return re.(*regexp.Regexp)
	}
	re := regexp.MustCompile(expr)
	oracleCache.Store(expr, re)
	return re
}

// randomPatterns returns n valid patterns over a small alphabet so that
// random names often match.
func randomPatterns(r *rand.Rand, n int) []Pattern {
	labels := []string{"a", "b", "ab", "com", "x-y", "_s"}
	randLabel := func() string {
		switch r.IntN(8) {
		case 0:
			return "*"
		case 1:
			return labels[r.IntN(len(labels))] + "*"
		case 2:
			return "*" + labels[r.IntN(len(labels))]
		case 3:
			return "a*b*"
		default:
			return labels[r.IntN(len(labels))]
		}
	}
	var out []Pattern
	for len(out) < n {
		var parts []string
		if r.IntN(5) == 0 {
			parts = append(parts, "**")
		}
		for k := 1 + r.IntN(3); k > 0; k-- {
			parts = append(parts, randLabel())
		}
		s := strings.Join(parts, ".")
		if r.IntN(40) == 0 {
			s = "*"
		}
		if r.IntN(4) == 0 {
			s = strings.ToUpper(s) + "."
		}
		out = append(out, MustParse(s))
	}
	return out
}

func randomName(r *rand.Rand) string {
	labels := []string{"a", "b", "ab", "ba", "aab", "com", "x-y", "_s", "abab", "zz", "A", "COM"}
	parts := make([]string, 1+r.IntN(5))
	for i := range parts {
		parts[i] = labels[r.IntN(len(labels))]
	}
	s := strings.Join(parts, ".")
	if r.IntN(5) == 0 {
		s += "."
	}
	return s
}

// expected is what MatchAll must return, computed from Pattern.Match alone.
func expected[V comparable](ps []Pattern, vs []V, name string) []V {
	var out []V
	for i, p := range ps {
		if p.Match(name) && !slices.Contains(out, vs[i]) {
			out = append(out, vs[i])
		}
	}
	return out
}

func TestSetAgreesWithPatternMatchOnRandomNames(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		ps := randomPatterns(r, 5+round*20) // up to ~400 patterns, exercising the glob index
		var b Builder[int]
		vs := make([]int, len(ps))
		for i, p := range ps {
			vs[i] = i
			b.Add(p, i)
		}
		s := b.Build()
		for range 500 {
			name := randomName(r)
			got, want := s.MatchAll(name), expected(ps, vs, name)
			if !slices.Equal(got, want) {
				t.Fatalf("round %d: MatchAll(%q) = %v, want %v", round, name, got, want)
			}
			if s.Match(name) != (len(want) > 0) {
				t.Fatalf("round %d: Match(%q) = %v, want %v", round, name, s.Match(name), len(want) > 0)
			}
			for _, p := range ps {
				if p.Match(name) != oracleMatch(t, p, name) {
					t.Fatalf("Pattern %q Match(%q) = %v, regexp oracle says otherwise", p, name, p.Match(name))
				}
			}
		}
	}
}

func TestSetMatchAllReturnsDistinctValuesInInsertionOrder(t *testing.T) {
	var b Builder[string]
	b.Add(MustParse("**.example.com"), "deep")
	b.Add(MustParse("*"), "any")
	b.Add(MustParse("www.example.com"), "exact")
	b.Add(MustParse("*.example.com"), "star")
	b.Add(MustParse("w*.example.com"), "glob")
	b.Add(MustParse("*.example.com"), "deep") // same value again
	b.Add(MustParse("other.com"), "other")
	s := b.Build()
	got := s.MatchAll("WWW.Example.com.")
	want := []string{"deep", "any", "exact", "star", "glob"}
	if !slices.Equal(got, want) {
		t.Fatalf("MatchAll = %v, want %v", got, want)
	}
	if got := s.MatchAll("a..b"); got != nil {
		t.Fatalf("MatchAll(invalid name) = %v, want nil", got)
	}
	var b2 Builder[string]
	b2.Add(MustParse("*.example.com"), "star")
	if got := b2.Build().MatchAll("nothing.org"); got != nil {
		t.Fatalf("MatchAll(no match) = %v, want nil", got)
	}
	var n int
	s.Each("www.example.com", func(Pattern, string) bool { n++; return true })
	if n != 6 {
		t.Fatalf("Each reported %d pairs, want 6 (one per matching pair)", n)
	}
}

func TestSetMatchAllDeduplicatesManyHits(t *testing.T) {
	var b Builder[int]
	for i := range 100 {
		b.Add(MustParse(fmt.Sprintf("*%d*.example.com", i%10)), i%7)
	}
	b.Add(MustParse("*"), 3)
	got := b.Build().MatchAll("x0123456789x.example.com")
	if !slices.Equal(got, []int{0, 1, 2, 3, 4, 5, 6}) {
		t.Fatalf("MatchAll = %v", got)
	}
}

func TestEachStopsWhenYieldReturnsFalse(t *testing.T) {
	var b Builder[int]
	for i, p := range []string{"*", "a.com", "*.com", "**.com", "a*.com"} {
		b.Add(MustParse(p), i)
	}
	s := b.Build()
	for stopAt := 1; stopAt <= 4; stopAt++ {
		n := 0
		s.Each("a.com", func(Pattern, int) bool { n++; return n < stopAt })
		if n != stopAt {
			t.Errorf("yield returned false after %d calls, Each made %d", stopAt, n)
		}
	}
}

func TestEachReportsTheMatchingPattern(t *testing.T) {
	var b Builder[int]
	b.Add(MustParse("*.minepool.com"), 7)
	b.Add(MustParse("api.github.com"), 8)
	s := b.Build()
	s.Each("eu.MINEPOOL.com", func(p Pattern, v int) bool {
		if p.String() != "*.minepool.com" || v != 7 {
			t.Errorf("Each reported (%q, %d)", p, v)
		}
		return true
	})
}

func TestBuilderAddRemoveAndRebuild(t *testing.T) {
	var b Builder[int]
	p := MustParse("*.example.com")
	if !b.Add(p, 1) || b.Add(p, 1) || !b.Add(p, 2) || b.Len() != 2 {
		t.Fatalf("Add: duplicate handling wrong, Len=%d", b.Len())
	}
	s1 := b.Build()
	if !b.Remove(p, 1) || b.Remove(p, 1) || b.Remove(MustParse("x.com"), 1) {
		t.Fatal("Remove: wrong results")
	}
	s2 := b.Build()
	if got := s1.MatchAll("a.example.com"); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("old snapshot changed: %v", got)
	}
	if got := s2.MatchAll("a.example.com"); !slices.Equal(got, []int{2}) {
		t.Fatalf("after Remove: %v", got)
	}
	if s1.Len() != 2 || s2.Len() != 1 {
		t.Fatalf("Len = %d, %d", s1.Len(), s2.Len())
	}
	b.Add(p, 1) // re-added: now after 2
	if got := b.Build().MatchAll("a.example.com"); !slices.Equal(got, []int{2, 1}) {
		t.Fatalf("re-added pair order: %v", got)
	}
}

func TestNilAndEmptySetMatchNothing(t *testing.T) {
	var nilSet *Set[int]
	var b Builder[int]
	for _, s := range []*Set[int]{nilSet, b.Build()} {
		if s.Match("a.com") || s.MatchAll("a.com") != nil || s.Len() != 0 {
			t.Fatal("empty set matched")
		}
		s.Each("a.com", func(Pattern, int) bool { t.Fatal("Each yielded"); return true })
	}
}

func TestSetIsSafeForConcurrentReaders(t *testing.T) {
	s := build10k(rand.New(rand.NewPCG(3, 4)))
	names := benchNames(s, rand.New(rand.NewPCG(5, 6)), 200)
	want := make([][]int, len(names))
	for i, n := range names {
		want[i] = s.set.MatchAll(n)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i, n := range names {
				if got := s.set.MatchAll(n); !slices.Equal(got, want[i]) {
					t.Errorf("concurrent MatchAll(%q) = %v, want %v", n, got, want[i])
				}
			}
		})
	}
	wg.Wait()
}

func TestRealisticSetAgreesWithPatternMatch(t *testing.T) {
	c := build10k(rand.New(rand.NewPCG(7, 8)))
	for _, name := range benchNames(c, rand.New(rand.NewPCG(9, 10)), 300) {
		if got, want := c.set.MatchAll(name), expected(c.patterns, c.values, name); !slices.Equal(got, want) {
			t.Fatalf("MatchAll(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestSetEachDoesNotAllocate(t *testing.T) {
	c := build10k(rand.New(rand.NewPCG(11, 12)))
	names := benchNames(c, rand.New(rand.NewPCG(13, 14)), 64)
	sum := 0
	allocs := testing.AllocsPerRun(20, func() {
		for _, n := range names {
			c.set.Each(n, func(_ Pattern, v int) bool { sum += v; return true })
			c.set.Match(n)
		}
	})
	if allocs != 0 {
		t.Fatalf("Each/Match allocate %v times per 64 names", allocs)
	}
}

func TestSetAppendValuesIsEachInAppendForm(t *testing.T) {
	c := build10k(rand.New(rand.NewPCG(21, 22)))
	names := benchNames(c, rand.New(rand.NewPCG(23, 24)), 256)
	buf := make([]int, 0, 64)
	matched := 0
	for _, n := range names {
		var want []int
		c.set.Each(n, func(_ Pattern, v int) bool { want = append(want, v); return true })
		got := c.set.AppendValues([]int{-1}, n)
		if got[0] != -1 || !slices.Equal(got[1:], want) {
			t.Fatalf("AppendValues(%q) = %v, want [-1] + %v", n, got, want)
		}
		if len(want) > 0 {
			matched++
		}
	}
	if matched == 0 {
		t.Fatal("no name matched: the test checks nothing")
	}
	allocs := testing.AllocsPerRun(20, func() {
		for _, n := range names[:64] {
			buf = c.set.AppendValues(buf[:0], n)
		}
	})
	if allocs != 0 {
		t.Fatalf("AppendValues allocates %v times per 64 names (with a large enough buffer)", allocs)
	}
}

package domain

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

type corpus struct {
	patterns []Pattern
	values   []int
	set      *Set[int]
}

var (
	tlds  = []string{"com", "net", "org", "io", "dev", "cloud", "de", "co.uk", "amazonaws.com", "googleapis.com"}
	words = []string{"api", "cdn", "auth", "data", "pool", "mine", "pay", "img", "static", "edge", "svc", "eu", "us", "prod", "stage"}
)

func word(r *rand.Rand) string { return words[r.IntN(len(words))] }

// site returns one of about 4,000 second-level domains.
func site(r *rand.Rand) string {
	return fmt.Sprintf("%s%d.%s", word(r), r.IntN(400), tlds[r.IntN(len(tlds))])
}

// build10k builds a realistic mix of 10,000 patterns: 60% exact names, 30%
// "*.x.y", 10% "**." and in-label globs.
func build10k(r *rand.Rand) corpus {
	var c corpus
	var b Builder[int]
	for i := range 10000 {
		var s string
		switch k := r.IntN(100); {
		case k < 60:
			s = fmt.Sprintf("%s.%s", word(r), site(r))
		case k < 90:
			s = "*." + site(r)
		case k < 95:
			s = "**." + site(r)
		case k < 97:
			s = fmt.Sprintf("%s-*.%s", word(r), tlds[r.IntN(len(tlds))]) // xmr-*.com
		case k < 98:
			s = fmt.Sprintf("*%s%d*.%s", word(r), r.IntN(10), tlds[r.IntN(len(tlds))]) // *pool*.com
		default:
			s = fmt.Sprintf("*-%s.%s", word(r), site(r)) // *-prod.svc.example.com
		}
		p := MustParse(s)
		c.patterns = append(c.patterns, p)
		c.values = append(c.values, i)
		b.Add(p, i)
	}
	c.set = b.Build()
	return c
}

// benchNames returns query names: half are instances of random patterns of c
// (so they hit at least that pattern), the rest are misses under known or
// unknown domains; some are deep, upper-case or fully qualified.
func benchNames(c corpus, r *rand.Rand, n int) []string {
	names := make([]string, n)
	for i := range names {
		switch r.IntN(8) {
		case 0, 1, 2, 3:
			s := c.patterns[r.IntN(len(c.patterns))].String()
			s = strings.Replace(s, "**", word(r)+"."+word(r), 1)
			s = strings.ReplaceAll(s, "*", word(r))
			if r.IntN(4) == 0 {
				s = strings.ToUpper(s) + "."
			}
			names[i] = s
		case 4:
			names[i] = fmt.Sprintf("%s.%s", word(r), site(r))
		case 5:
			names[i] = fmt.Sprintf("Host-%d.Example-%d.COM.", r.IntN(1000), r.IntN(1000))
		case 6:
			names[i] = fmt.Sprintf("a%d.b.c.%s-%s.%s", r.IntN(9), word(r), word(r), site(r))
		default:
			names[i] = site(r)
		}
	}
	return names
}

func BenchmarkMatch10k(b *testing.B) {
	c := build10k(rand.New(rand.NewPCG(1, 1)))
	names := benchNames(c, rand.New(rand.NewPCG(2, 2)), 1024)
	hits := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.set.Each(names[i%len(names)], func(Pattern, int) bool { hits++; return true })
	}
	b.ReportMetric(float64(hits)/float64(b.N), "hits/op")
}

func BenchmarkMatchAny10k(b *testing.B) {
	c := build10k(rand.New(rand.NewPCG(1, 1)))
	names := benchNames(c, rand.New(rand.NewPCG(2, 2)), 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.set.Match(names[i%len(names)])
	}
}

func BenchmarkMatchAll10k(b *testing.B) {
	c := build10k(rand.New(rand.NewPCG(1, 1)))
	names := benchNames(c, rand.New(rand.NewPCG(2, 2)), 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.set.MatchAll(names[i%len(names)])
	}
}

// BenchmarkLinearScan10k is the loop over Pattern.Match that Set replaces,
// for comparison.
func BenchmarkLinearScan10k(b *testing.B) {
	c := build10k(rand.New(rand.NewPCG(1, 1)))
	names := benchNames(c, rand.New(rand.NewPCG(2, 2)), 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		n := names[i%len(names)]
		for _, p := range c.patterns {
			p.Match(n)
		}
	}
}

func BenchmarkPatternMatch(b *testing.B) {
	p := MustParse("**.api-*.example.com")
	b.ReportAllocs()
	for b.Loop() {
		p.Match("x.y.API-eu.example.com.")
	}
}

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Parse("**.S3.amazonaws.com.")
	}
}

func BenchmarkBuild10k(b *testing.B) {
	c := build10k(rand.New(rand.NewPCG(1, 1)))
	var bl Builder[int]
	for i, p := range c.patterns {
		bl.Add(p, i)
	}
	b.ReportAllocs()
	for b.Loop() {
		bl.Build()
	}
}

package domain

import (
	"slices"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"api.github.com", "*.example.com", "xmr-*.com", "**.s3.amazonaws.com", "*",
		"API.GitHub.com.", "a..b", "a.**.com", "**", "x.a b.com", "bücher.de", "*pool*.com",
		"example.*", ".", "", "a\xff.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			if p != (Pattern{}) {
				t.Fatalf("Parse(%q) returned a pattern with an error", s)
			}
			if err.Error() == "" {
				t.Fatalf("empty error for %q", s)
			}
			return
		}
		q, err := Parse(p.String())
		if err != nil || q != p {
			t.Fatalf("Parse(%q).String() = %q does not round-trip: %v", s, p, err)
		}
		if p.String() != strings.ToLower(p.String()) || strings.HasSuffix(p.String(), ".") {
			t.Fatalf("canonical form %q of %q is not lower case without trailing dot", p, s)
		}
		if p.IsExact() {
			if !p.Match(s) || !p.Match(p.String()) {
				t.Fatalf("exact pattern %q does not match its own text", p)
			}
			n, err := NormalizeName(s)
			if err != nil || n != p.String() {
				t.Fatalf("NormalizeName(%q) = %q, %v; exact pattern is %q", s, n, err, p)
			}
		}
	})
}

// FuzzMatch checks that a Set built from the comma-separated patterns agrees
// with Pattern.Match (and the regexp oracle) on the name, and that nothing
// panics.
func FuzzMatch(f *testing.F) {
	f.Add("*.example.com,api.example.com,**.example.com", "a.example.com")
	f.Add("xmr-*.com,*pool*.com,*", "xmr-pool.com")
	f.Add("**.s3.amazonaws.com", "a.b.S3.amazonaws.com.")
	f.Add("a*b*c.com,a*a.com", "aXbYc.com")
	f.Add("example.*,*.*", "example.co.uk")
	f.Add("*", "")
	f.Add("*.com", "a..com")
	f.Fuzz(func(t *testing.T, patterns, name string) {
		var ps []Pattern
		var vs []int
		var b Builder[int]
		for i, s := range strings.Split(patterns, ",") {
			p, err := Parse(s)
			if err != nil {
				continue
			}
			ps = append(ps, p)
			vs = append(vs, i)
			b.Add(p, i)
		}
		set := b.Build()
		// Besides the fuzzed name, try names made from each pattern (with
		// '*' replaced by a piece of the fuzzed name) so that matches are common.
		names := []string{name}
		piece := strings.ReplaceAll(name, ".", "")
		piece = piece[:min(len(piece), 5)]
		for _, p := range ps {
			n := strings.Replace(p.String(), "**", "x.y", 1)
			names = append(names, strings.ReplaceAll(n, "*", piece))
		}
		for _, name := range names {
			got, want := set.MatchAll(name), expected(ps, vs, name)
			if !slices.Equal(got, want) {
				t.Fatalf("Set.MatchAll(%q) = %v, Pattern.Match says %v (patterns %q)", name, got, want, patterns)
			}
			if set.Match(name) != (len(want) > 0) {
				t.Fatalf("Set.Match(%q) = %v", name, set.Match(name))
			}
			for _, p := range ps {
				if p.Match(name) != oracleMatch(t, p, name) {
					t.Fatalf("Pattern %q Match(%q) = %v disagrees with the regexp oracle", p, name, p.Match(name))
				}
			}
		}
		if n, err := NormalizeName(name); err == nil {
			if n2, err := NormalizeName(n); err != nil || n2 != n {
				t.Fatalf("NormalizeName not idempotent on %q: %q, %v", name, n2, err)
			}
		}
	})
}

package domain

import (
	"errors"
	"strings"
	"testing"
)

type matchCase struct {
	pattern, name string
	want          bool
}

func runMatchCases(t *testing.T, cases []matchCase) {
	t.Helper()
	for _, c := range cases {
		p, err := Parse(c.pattern)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.pattern, err)
			continue
		}
		if got := p.Match(c.name); got != c.want {
			t.Errorf("Parse(%q).Match(%q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
		var b Builder[int]
		b.Add(p, 1)
		if got := b.Build().Match(c.name); got != c.want {
			t.Errorf("Set{%q}.Match(%q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
		if oracle := oracleMatch(t, p, c.name); oracle != c.want {
			t.Errorf("test oracle disagrees on %q vs %q: %v", c.pattern, c.name, oracle)
		}
	}
}

func TestExactPatternMatchesOnlyThatName(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"api.github.com", "api.github.com", true},
		{"api.github.com", "github.com", false},
		{"api.github.com", "x.api.github.com", false},
		{"api.github.com", "api.github.co", false},
		{"api.github.com", "api.github.comm", false},
		{"api.github.com", "apiXgithub.com", false},
		{"com", "com", true},
		{"_acme-challenge.example.com", "_acme-challenge.example.com", true},
	})
}

func TestWildcardMatchesOneLabelOnly(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "www.example.com", true},
		{"*.example.com", "a.b.example.com", false},
		{"*.example.com", "example.com", false},
		{"*.example.com", "aexample.com", false},
		{"a.*.example.com", "a.b.example.com", true},
		{"a.*.example.com", "a.b.c.example.com", false},
		{"*.*.example.com", "a.b.example.com", true},
		{"*.*.example.com", "b.example.com", false},
	})
}

func TestWildcardInsideLabelMatchesZeroOrMoreCharacters(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"xmr-*.com", "xmr-pool.com", true},
		{"xmr-*.com", "xmr-.com", true},
		{"xmr-*.com", "xmr.com", false},
		{"xmr-*.com", "xmr-a.b.com", false},
		{"xmr-*.com", "a.xmr-pool.com", false},
		{"*pool*.com", "pool.com", true},
		{"*pool*.com", "minepool.com", true},
		{"*pool*.com", "pool-eu.com", true},
		{"*pool*.com", "my-pool-1.com", true},
		{"*pool*.com", "poo.com", false},
		{"a*b*c.com", "abc.com", true},
		{"a*b*c.com", "axxbyyc.com", true},
		{"a*b*c.com", "acb.com", false},
		{"a*a.com", "a.com", false},
		{"a*a.com", "aa.com", true},
		{"*-prod.svc.example.com", "api-prod.svc.example.com", true},
		{"*-prod.svc.example.com", "api-staging.svc.example.com", false},
	})
}

func TestWildcardInTopLevelLabelIsAllowed(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"example.*", "example.com", true},
		{"example.*", "example.de", true},
		{"example.*", "example.co.uk", false},
		{"example.*", "www.example.com", false},
	})
}

func TestDoubleStarMatchesOneOrMoreLabels(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"**.s3.amazonaws.com", "a.s3.amazonaws.com", true},
		{"**.s3.amazonaws.com", "a.b.s3.amazonaws.com", true},
		{"**.s3.amazonaws.com", "a.b.c.d.s3.amazonaws.com", true},
		{"**.s3.amazonaws.com", "s3.amazonaws.com", false},
		{"**.s3.amazonaws.com", "amazonaws.com", false},
		{"**.s3.amazonaws.com", "xs3.amazonaws.com", false},
		{"**.com", "a.com", true},
		{"**.com", "com", false},
		{"**.*.example.com", "a.b.example.com", true},
		{"**.*.example.com", "b.example.com", false},
		{"**.api-*.example.com", "x.y.api-eu.example.com", true},
		{"**.api-*.example.com", "api-eu.example.com", false},
	})
}

func TestBareStarMatchesEveryName(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"*", "com", true},
		{"*", "a.b.c.d.example.com", true},
		{"*", "EXAMPLE.com.", true},
		{"*", "", false},
		{"*", ".", false},
		{"*", "a..b", false},
	})
}

func TestTrailingDotAndCaseIgnored(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"API.GitHub.com.", "api.github.com", true},
		{"api.github.com", "API.GITHUB.COM.", true},
		{"api.github.com.", "api.github.com.", true},
		{"*.Example.COM", "WWW.example.com.", true},
		{"XMR-*.com", "xmr-POOL.com", true},
		{"**.S3.amazonaws.com.", "A.B.s3.AMAZONAWS.com.", true},
		{"api.github.com", "api.github.com..", false},
	})
}

func TestInvalidNamesMatchNothing(t *testing.T) {
	long := strings.Repeat("a", 64) + ".com"
	runMatchCases(t, []matchCase{
		{"*.com", long, false},
		{"*", strings.Repeat("a.", 127) + "com", false},
		{"*.com", ".com", false},
		{"*", "", false},
	})
}

func TestNonLDHNameBytesMatchOnlyWildcards(t *testing.T) {
	runMatchCases(t, []matchCase{
		{"*.example.com", "a b.example.com", true},
		{"*.example.com", "\xff\x00.example.com", true},
		{"a*.example.com", "a\xc3\xbc.example.com", true},
		{"ab.example.com", "a b.example.com", false},
		{"*.example.com", "*.example.com", true},
		{"a.example.com", "*.example.com", false},
	})
}

func TestPatternStringIsCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"API.GitHub.com.":      "api.github.com",
		"*.Example.COM":        "*.example.com",
		"**.S3.amazonaws.com.": "**.s3.amazonaws.com",
		"*":                    "*",
		"*.":                   "*",
		"Example.*":            "example.*",
	} {
		p, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if p.String() != want {
			t.Errorf("Parse(%q).String() = %q, want %q", in, p.String(), want)
		}
		if q := MustParse(p.String()); q != p {
			t.Errorf("Parse(String()) of %q = %#v, want %#v", in, q, p)
		}
	}
}

func TestIsExactOnlyForPatternsWithoutWildcards(t *testing.T) {
	for in, want := range map[string]bool{
		"api.github.com":  true,
		"API.github.com.": true,
		"*.github.com":    false,
		"a*.github.com":   false,
		"**.github.com":   false,
		"*":               false,
		"github.*":        false,
	} {
		if got := MustParse(in).IsExact(); got != want {
			t.Errorf("Parse(%q).IsExact() = %v, want %v", in, got, want)
		}
	}
}

func TestZeroPatternMatchesNothing(t *testing.T) {
	var p Pattern
	if p.Match("example.com") || p.String() != "" || p.IsExact() {
		t.Fatalf("zero Pattern: Match=%v String=%q IsExact=%v", p.Match("example.com"), p.String(), p.IsExact())
	}
	var b Builder[int]
	if b.Add(p, 1) {
		t.Fatal("Builder.Add accepted the zero Pattern")
	}
}

func TestInvalidPatternsRejectedWithReason(t *testing.T) {
	long63 := strings.Repeat("a", 63)
	cases := []struct {
		in     string
		label  int
		reason string // substring of the message
	}{
		{"", 0, "pattern is empty"},
		{".", 0, `only the root "."`},
		{"a..b", 2, "label 2 is empty"},
		{".example.com", 1, "label 1 is empty"},
		{"example.com..", 3, "label 3 is empty"},
		{"x.a b.com", 2, `label 2 "a b" contains illegal character ' '`},
		{"exa$mple.com", 1, `label 1 "exa$mple" contains illegal character '$'`},
		{"bücher.de", 1, `illegal character 'ü' (write internationalized names in their punycode form`},
		{"a\xff.com", 1, "illegal byte 0xff"},
		{"a/b.com", 1, `illegal character '/'`},
		{"a.com:443", 2, `illegal character ':'`},
		{"a" + long63 + ".com", 1, "is 64 bytes long, more than 63"},
		{strings.Repeat(long63+".", 4) + "com", 0, "pattern is 259 bytes long, more than 253"},
		{"a.**.com", 2, `label 2 is "**", which is only allowed as the first label`},
		{"**", 1, `"**" must be followed by a suffix`},
		{"**.", 1, `"**" must be followed by a suffix`},
		{"a**.com", 1, `label 1 "a**" contains "**"`},
		{"***.com", 1, `label 1 "***" contains "**"`},
		{"**.**.com", 2, `label 2 is "**"`},
		{"example.com/", 2, `illegal character '/'`},
	}
	for _, c := range cases {
		p, err := Parse(c.in)
		if err == nil {
			t.Errorf("Parse(%q) = %q, want an error", c.in, p)
			continue
		}
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("Parse(%q) error %T is not *Error", c.in, err)
			continue
		}
		if e.Label != c.label || e.IsName || e.Input != c.in {
			t.Errorf("Parse(%q): Error{Label:%d IsName:%v Input:%q}, want Label %d", c.in, e.Label, e.IsName, e.Input, c.label)
		}
		if !strings.Contains(err.Error(), c.reason) {
			t.Errorf("Parse(%q) error %q does not contain %q", c.in, err, c.reason)
		}
		if !strings.HasPrefix(err.Error(), "domain pattern ") {
			t.Errorf("Parse(%q) error %q does not start with \"domain pattern \"", c.in, err)
		}
	}
}

func TestLongestValidPatternsAccepted(t *testing.T) {
	l63 := strings.Repeat("a", 63)
	for _, in := range []string{
		l63 + ".com",
		l63 + "." + l63 + "." + l63 + "." + strings.Repeat("b", 61), // 253 bytes
		l63 + "." + l63 + "." + l63 + "." + strings.Repeat("b", 61) + ".",
		"*" + strings.Repeat("a", 62) + ".com",
		"_srv._tcp.example.com",
		"-a-.example.com",
		"123.example.com",
	} {
		if _, err := Parse(in); err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
}

func TestNormalizeNameLowercasesAndStripsTrailingDot(t *testing.T) {
	for in, want := range map[string]string{
		"API.GitHub.com.":    "api.github.com",
		"api.github.com":     "api.github.com",
		"a b.Example.COM":    "a b.example.com",
		"\xff.Example.com.":  "\xff.example.com",
		"*.example.com":      "*.example.com",
		"Ü.example.com":      "Ü.example.com", // only ASCII letters are folded
		"_dmarc.EXAMPLE.com": "_dmarc.example.com",
	} {
		got, err := NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestNormalizeNameRejectsBadShapesWithReason(t *testing.T) {
	l63 := strings.Repeat("a", 63)
	cases := []struct {
		in, reason string
		label      int
	}{
		{"", "name is empty", 0},
		{".", "name is empty", 0},
		{"a..b", "label 2 is empty", 2},
		{".a", "label 1 is empty", 1},
		{"a.b..", "label 3 is empty", 3},
		{l63 + "a.com", "label 1 is 64 bytes long, more than 63", 1},
		{strings.Repeat(l63+".", 4) + "com", "name is 259 bytes long, more than 253", 0},
	}
	for _, c := range cases {
		_, err := NormalizeName(c.in)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("NormalizeName(%q) = %v, want *Error", c.in, err)
			continue
		}
		if !e.IsName || e.Label != c.label || !strings.Contains(err.Error(), c.reason) || !strings.HasPrefix(err.Error(), "domain name ") {
			t.Errorf("NormalizeName(%q) = %q (label %d), want %q (label %d)", c.in, err, e.Label, c.reason, c.label)
		}
	}
}

func TestErrorMessageShortensHugeInput(t *testing.T) {
	_, err := Parse(strings.Repeat("a", 100000))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error for a huge pattern: %v", err)
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	p := MustParse("**.api-*.Example.com")
	allocs := testing.AllocsPerRun(100, func() {
		p.Match("X.Y.API-EU.example.COM.")
	})
	if allocs != 0 {
		t.Fatalf("Pattern.Match allocates %v times", allocs)
	}
}

// TestEscapedNames: query names come in presentation format. Escapes count
// as one byte each, and an escaped dot is part of its label: "x\.y.evil.com"
// is one label under evil.com, so "*.evil.com" denies it (before, it looked
// like two labels and slipped past a single-label wildcard).
func TestEscapedNames(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"*.evil.com", `x\.y.evil.com`, true},
		{"*.evil.com", `x\046y.evil.com.`, true},
		{"*.y.evil.com", `x\.y.evil.com`, false},
		{"evil.com", `evil\.com`, false},
		{"api.example.com", `\065PI.example.com`, true},
		{"xmr-*.com", `xmr-\255.com`, true},
		{"**.example.com", `a\\.example.com.`, true},
	} {
		p := MustParse(c.pattern)
		if got := p.Match(c.name); got != c.want {
			t.Errorf("%s matches %s: %v, want %v", c.pattern, c.name, got, c.want)
		}
		var b Builder[int]
		b.Add(p, 1)
		found := false
		b.Build().Each(c.name, func(Pattern, int) bool { found = true; return true })
		if found != c.want {
			t.Errorf("Set %s with %s: %v, want %v", c.pattern, c.name, found, c.want)
		}
	}
	label63 := strings.Repeat(`\200`, 63)
	if _, err := NormalizeName(label63 + ".com"); err != nil {
		t.Errorf("63 escaped bytes: %v", err)
	}
	if _, err := NormalizeName(label63 + `\200.com`); err == nil || !strings.Contains(err.Error(), "label 1 is 64 bytes long") {
		t.Errorf("64 escaped bytes: %v", err)
	}
	if n, err := NormalizeName(`A\.B.Example.COM.`); err != nil || n != `a\.b.example.com` {
		t.Errorf("NormalizeName keeps escapes, lower-cases: %q %v", n, err)
	}
	if _, err := NormalizeName(`a\\.`); err != nil {
		t.Errorf(`a\\. (label "a\" and the root): %v`, err)
	}
}

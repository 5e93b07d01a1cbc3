package domain

import (
	"fmt"
	"strings"
)

type kind uint8

const (
	kindNone  kind = iota // zero Pattern: matches nothing
	kindExact             // no wildcard
	kindGlob              // '*' inside labels and/or a leading "**."
	kindAny               // the bare "*"
)

// Pattern is a validated DNS name pattern (see the package documentation for
// the syntax). Create one with [Parse]. Patterns are small comparable values:
// two patterns are == exactly when their canonical forms are equal. The zero
// Pattern is not valid; it prints as "" and matches nothing.
type Pattern struct {
	s    string // canonical: lower case, no trailing dot
	kind kind
}

// Parse validates s and returns it as a Pattern. One trailing dot is
// ignored and ASCII letters are lower-cased. The error, an [*Error], says
// what is wrong and in which label: empty pattern, empty label, illegal
// character (allowed are letters, digits, '-', '_', '*' and '.' as the
// separator), label longer than MaxLabelLen, pattern longer than MaxNameLen,
// or "**" other than as the whole first label followed by a suffix.
func Parse(s string) (Pattern, error) {
	in := s
	bad := func(label int, format string, args ...any) (Pattern, error) {
		return Pattern{}, &Error{Input: in, Label: label, Reason: fmt.Sprintf(format, args...)}
	}
	if s == "" {
		return bad(0, "pattern is empty")
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return bad(0, `pattern is only the root "."; use "*" to match every name`)
	}
	if len(s) > MaxNameLen {
		return bad(0, "pattern is %d bytes long, more than %d", len(s), MaxNameLen)
	}
	if s == "*" {
		return Pattern{s: "*", kind: kindAny}, nil
	}
	k := kindExact
	rest := s
	for n := 1; ; n++ {
		label, tail, more := strings.Cut(rest, ".")
		switch {
		case label == "":
			return bad(n, "label %d is empty (leading dot or \"..\")", n)
		case len(label) > MaxLabelLen:
			return bad(n, "label %d %s is %d bytes long, more than %d", n, quoteLabel(label), len(label), MaxLabelLen)
		case label == "**":
			if n != 1 {
				return bad(n, `label %d is "**", which is only allowed as the first label ("**.example.com")`, n)
			}
			if !more {
				return bad(n, `"**" must be followed by a suffix, e.g. "**.example.com"; use "*" to match every name`)
			}
			k = kindGlob
		default:
			for i := 0; i < len(label); i++ {
				switch c := label[i]; {
				case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
				case c == '*':
					if i+1 < len(label) && label[i+1] == '*' {
						return bad(n, `label %d %s contains "**", which is only allowed as the whole first label ("**.example.com")`, n, quoteLabel(label))
					}
					k = kindGlob
				default:
					return bad(n, "label %d %s contains %s", n, quoteLabel(label), describeChar(label, i))
				}
			}
		}
		if !more {
			break
		}
		rest = tail
	}
	return Pattern{s: asciiLower(s), kind: k}, nil
}

// MustParse is like [Parse] but panics on an invalid pattern. It is meant for
// patterns fixed in source code and tests, never for user input.
func MustParse(s string) Pattern {
	p, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

// String returns the canonical form of the pattern: lower case, without a
// trailing dot. Parse(p.String()) returns p.
func (p Pattern) String() string { return p.s }

// IsExact reports whether the pattern has no wildcard, so that it matches
// exactly one name (its String).
func (p Pattern) IsExact() bool { return p.kind == kindExact }

// Match reports whether name matches the pattern. The name is normalized as
// by [NormalizeName] (case and one trailing dot are ignored); an invalid name
// matches nothing, not even "*". Match does not allocate.
func (p Pattern) Match(name string) bool {
	if p.kind == kindNone {
		return false
	}
	var buf [MaxNameLen]byte
	n, ok := canonicalName(&buf, name)
	if !ok {
		return false
	}
	switch p.kind {
	case kindAny:
		return true
	case kindExact:
		return p.s == string(n)
	}
	pat := p.s
	deep := strings.HasPrefix(pat, "**.")
	if deep {
		pat = pat[3:]
	}
	// Compare labels from the right (TLD first).
	for {
		pi := strings.LastIndexByte(pat, '.')
		ni := lastIndexByte(n, '.')
		if !globMatch(pat[pi+1:], n[ni+1:]) {
			return false
		}
		if pi < 0 { // pattern labels exhausted
			if deep {
				return ni >= 0 // one or more name labels left
			}
			return ni < 0
		}
		if ni < 0 {
			return false
		}
		pat, n = pat[:pi], n[:ni]
	}
}

func lastIndexByte(b []byte, c byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == c {
			return i
		}
	}
	return -1
}

// globMatch reports whether the label s matches the label pattern pat, in
// which '*' matches any run of bytes. It is the classic backtracking
// wildcard algorithm; the Set uses a different, precompiled matcher so that
// tests can check one against the other.
func globMatch(pat string, s []byte) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(pat) && pat[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(pat) && pat[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(pat) && pat[pi] == '*' {
		pi++
	}
	return pi == len(pat)
}

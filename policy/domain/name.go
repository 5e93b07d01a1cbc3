package domain

import (
	"fmt"
	"strings"
)

const (
	// MaxNameLen is the longest name or pattern accepted, in bytes, not
	// counting a trailing dot (255 octets in DNS wire format).
	MaxNameLen = 253
	// MaxLabelLen is the longest label accepted, in bytes.
	MaxLabelLen = 63
)

// NormalizeName validates a query name and returns its canonical form: ASCII
// letters lower-cased and one trailing dot removed.
//
// Names coming from DNS may contain any byte: bytes other than letters,
// digits, '-' and '_' are accepted (they simply match only '*' in patterns),
// and '.' always separates labels. NormalizeName rejects the empty name and
// the root ".", empty labels ("a..b", ".a"), labels longer than MaxLabelLen
// and names longer than MaxNameLen. The returned error is an [*Error].
func NormalizeName(name string) (string, error) {
	t, bad := scanName(name)
	if bad.code != nameOK {
		return "", bad.err(name)
	}
	return asciiLower(t), nil
}

type nameCode uint8

const (
	nameOK nameCode = iota
	nameEmpty
	nameTooLong
	nameEmptyLabel
	nameLongLabel
)

type badName struct {
	code  nameCode
	label int // 1-based
	n     int // length of the offending part
}

func (b badName) err(input string) error {
	e := &Error{Input: input, IsName: true, Label: b.label}
	switch b.code {
	case nameEmpty:
		e.Reason = "name is empty"
	case nameTooLong:
		e.Reason = fmt.Sprintf("name is %d bytes long, more than %d", b.n, MaxNameLen)
	case nameEmptyLabel:
		e.Reason = fmt.Sprintf("label %d is empty (leading dot or \"..\")", b.label)
	case nameLongLabel:
		e.Reason = fmt.Sprintf("label %d is %d bytes long, more than %d", b.label, b.n, MaxLabelLen)
	}
	return e
}

// scanName checks a query name without allocating and returns it without
// its trailing dot.
func scanName(s string) (string, badName) {
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", badName{code: nameEmpty}
	}
	if len(s) > MaxNameLen {
		return "", badName{code: nameTooLong, n: len(s)}
	}
	label, start := 1, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			continue
		}
		switch n := i - start; {
		case n == 0:
			return "", badName{code: nameEmptyLabel, label: label}
		case n > MaxLabelLen:
			return "", badName{code: nameLongLabel, label: label, n: n}
		}
		label++
		start = i + 1
	}
	return s, badName{}
}

// asciiLower lower-cases ASCII letters, allocating only when s has upper-case ones.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// lowerInto copies s (at most MaxNameLen bytes) into buf, lower-casing ASCII
// letters; it lets the matchers work on a canonical name without allocating.
func lowerInto(buf *[MaxNameLen]byte, s string) []byte {
	b := buf[:len(s)]
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
	}
	return b
}

// canonicalName validates name and writes its canonical form into buf.
func canonicalName(buf *[MaxNameLen]byte, name string) ([]byte, bool) {
	t, bad := scanName(name)
	if bad.code != nameOK {
		return nil, false
	}
	return lowerInto(buf, t), true
}

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
// Query names are in DNS presentation format, as resolvers and
// github.com/miekg/dns write them: a byte that is not printable, or a literal
// '.' or '\' inside a label, is escaped as \DDD (decimal) or \X. Escapes are
// decoded for validation and matching: lengths count the bytes on the wire,
// and an escaped dot ("a\.b.example.com": one label "a.b" under example.com)
// does not separate labels, so it cannot make a name look deeper than it is to
// a pattern. Other bytes are accepted as they are (they simply match only '*'
// in patterns). NormalizeName rejects the empty name and the root ".", empty
// labels ("a..b", ".a"), labels longer than MaxLabelLen and names longer than
// MaxNameLen. The returned name keeps its escapes; the error is an [*Error].
func NormalizeName(name string) (string, error) {
	var buf [MaxNameLen]byte
	t, _, bad := decodeName(&buf, name)
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

// labelDot stands for a dot inside a label (an escaped "\." or "\046") in the
// decoded form the matchers use, where '.' always separates labels. Patterns
// cannot contain it, so it matches only '*'.
const labelDot = 0

// decodeName checks a query name in presentation format without allocating.
// It returns the name without its trailing dot, and in buf its decoded,
// lower-cased form (escapes resolved, a dot inside a label as labelDot).
func decodeName(buf *[MaxNameLen]byte, s string) (string, []byte, badName) {
	if strings.HasSuffix(s, ".") && trailingBackslashes(s[:len(s)-1])%2 == 0 {
		s = s[:len(s)-1] // the root label's dot, not an escaped one
	}
	if s == "" {
		return "", nil, badName{code: nameEmpty}
	}
	n, label, labelLen := 0, 1, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if labelLen == 0 {
				return "", nil, badName{code: nameEmptyLabel, label: label}
			}
			if n >= MaxNameLen {
				return "", nil, badName{code: nameTooLong, n: wireLen(s)}
			}
			buf[n] = '.'
			n++
			label++
			labelLen = 0
			continue
		}
		if c == '\\' {
			var k int
			if c, k = unescape(s, i); c == '.' {
				c = labelDot
			}
			i += k
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if labelLen++; labelLen > MaxLabelLen {
			return "", nil, badName{code: nameLongLabel, label: label, n: labelWireLen(s, label)}
		}
		if n >= MaxNameLen {
			return "", nil, badName{code: nameTooLong, n: wireLen(s)}
		}
		buf[n] = c
		n++
	}
	if labelLen == 0 {
		return "", nil, badName{code: nameEmptyLabel, label: label}
	}
	return s, buf[:n], badName{}
}

// trailingBackslashes counts the backslashes at the end of s.
func trailingBackslashes(s string) int {
	n := 0
	for n < len(s) && s[len(s)-1-n] == '\\' {
		n++
	}
	return n
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// unescape decodes the escape starting with the backslash at s[i]: \DDD
// (a byte, DDD ≤ 255) or \X; it returns the byte and how many characters
// after the backslash it used. A backslash at the end stands for itself.
func unescape(s string, i int) (byte, int) {
	switch {
	case i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]):
		if v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); v <= 255 {
			return byte(v), 3
		}
		return s[i+1], 1
	case i+1 < len(s):
		return s[i+1], 1
	}
	return '\\', 0
}

// wireLen is the decoded length of a name (for error messages only).
func wireLen(s string) int { return labelWireLen(s, 0) }

// labelWireLen is the decoded length of label number label (1-based) of s, or
// of the whole name when label is 0 (for error messages only).
func labelWireLen(s string, label int) int {
	l, n := 1, 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' && label > 0 {
			if l == label {
				return n
			}
			l++
			continue
		}
		if s[i] == '\\' {
			_, k := unescape(s, i)
			i += k
		}
		if label == 0 || l == label {
			n++
		}
	}
	return n
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

// canonicalName validates name and writes its canonical form into buf:
// escapes decoded, ASCII lower-cased, no trailing dot.
func canonicalName(buf *[MaxNameLen]byte, name string) ([]byte, bool) {
	_, n, bad := decodeName(buf, name)
	return n, bad.code == nameOK
}

package domain

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Error describes why [Parse] rejected a pattern or [NormalizeName] rejected
// a name. Its message says what is wrong and where, for example
//
//	domain pattern "x.a b.com": label 2 "a b" contains illegal character ' '
type Error struct {
	// Input is the rejected pattern or name as it was given.
	Input string
	// IsName is true for errors from NormalizeName (a query name) and false
	// for errors from Parse (a pattern).
	IsName bool
	// Label is the 1-based position, counted from the left, of the label at
	// fault; 0 when the problem is not about a single label.
	Label int
	// Reason says what is wrong, e.g. `label 2 "a b" contains illegal character ' '`.
	Reason string
}

// Error implements the error interface. Very long inputs are shortened.
func (e *Error) Error() string {
	what := "domain pattern"
	if e.IsName {
		what = "domain name"
	}
	in := e.Input
	if len(in) > 80 {
		in = in[:80] + "..."
	}
	return what + " " + strconv.Quote(in) + ": " + e.Reason
}

func quoteLabel(l string) string {
	if len(l) > 70 {
		l = l[:70] + "..."
	}
	return strconv.Quote(l)
}

// describeChar describes the character at label[i] for an error message.
func describeChar(label string, i int) string {
	r, size := utf8.DecodeRuneInString(label[i:])
	if r == utf8.RuneError && size <= 1 {
		return fmt.Sprintf("illegal byte 0x%02x", label[i])
	}
	s := "illegal character " + strconv.QuoteRune(r)
	if r >= utf8.RuneSelf {
		s += ` (write internationalized names in their punycode form "xn--...")`
	}
	return s
}

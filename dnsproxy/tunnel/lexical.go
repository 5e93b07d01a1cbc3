package tunnel

import "math"

// Lexical is the per-query view of a name: what its subdomain part (the labels
// left of the registered domain) looks like. Computing it is O(len(name)) and
// allocates nothing.
type Lexical struct {
	// Len is the length of the subdomain part without dots; Labels its label
	// count; MaxLabel its longest label.
	Len, Labels, MaxLabel int
	// Entropy is the Shannon entropy (bits per character) of the subdomain part.
	Entropy float64
	// DigitRatio is digits / characters of the subdomain part.
	DigitRatio float64
	// MaxConsonantRun is the longest run of consonants (letters other than
	// a, e, i, o, u, y) in any label.
	MaxConsonantRun int
	// Charset is the narrowest alphabet every encoded-looking label fits.
	Charset Charset
	// EncodedBytes estimates the bytes of data the labels can carry: for each
	// label that looks random, its length times the bits per character of its
	// alphabet, weighted by how random it looks; word-like labels count zero.
	EncodedBytes float64
}

// Charset classifies the alphabet of a label.
type Charset uint8

const (
	CharsetNone   Charset = iota // no encoded-looking label
	CharsetDigits                // 0-9 only
	CharsetHex                   // 0-9a-f
	CharsetBase32                // a-z2-7 (RFC 4648, lower case)
	CharsetAlnum                 // a-z0-9 (also base36, base32hex)
	CharsetBase64                // mixed case or base64url's - and _ with mixed case
)

var charsetNames = [...]string{"none", "digits", "hex", "base32", "alnum", "base64"}

func (c Charset) String() string { return charsetNames[c] }

// bitsPerChar is the information a character of the alphabet can carry.
var bitsPerChar = [...]float64{0, 3.32, 4, 5, 5.17, 6}

// analyze computes the lexical features of sub, the subdomain part of a name
// (labels separated by dots, no trailing dot), as written by the client (case
// is kept: mixed case is a base64/base58 sign).
func analyze(sub string) Lexical {
	var lx Lexical
	var hist [64]uint16
	start := 0
	for i := 0; i <= len(sub); i++ {
		if i < len(sub) && sub[i] != '.' {
			hist[charIndex(sub[i])]++
			continue
		}
		label := sub[start:i]
		start = i + 1
		if len(label) == 0 {
			continue
		}
		lx.Labels++
		lx.Len += len(label)
		lx.MaxLabel = max(lx.MaxLabel, len(label))
		cs, r, crun, digits := labelRandomness(label)
		lx.MaxConsonantRun = max(lx.MaxConsonantRun, crun)
		lx.DigitRatio += float64(digits)
		if r > 0 {
			lx.EncodedBytes += float64(len(label)) * bitsPerChar[cs] * r / 8
			lx.Charset = max(lx.Charset, cs)
		}
	}
	if lx.Len > 0 {
		lx.DigitRatio /= float64(lx.Len)
		n := float64(lx.Len)
		for _, c := range hist {
			if c > 0 {
				p := float64(c) / n
				lx.Entropy -= p * math.Log2(p)
			}
		}
	}
	return lx
}

// charIndex folds a byte into 64 histogram slots: case-insensitive letters,
// digits, '-', '_' and everything else.
func charIndex(b byte) int {
	switch {
	case b >= 'a' && b <= 'z':
		return int(b - 'a')
	case b >= 'A' && b <= 'Z':
		return int(b - 'A')
	case b >= '0' && b <= '9':
		return 26 + int(b-'0')
	case b == '-':
		return 36
	case b == '_':
		return 37
	}
	return 38 + int(b)%26
}

func isVowel(b byte) bool {
	switch b | 0x20 {
	case 'a', 'e', 'i', 'o', 'u', 'y':
		return true
	}
	return false
}

// labelRandomness returns the alphabet of a label, how random it looks (0:
// word-like, 1: encoded), its longest consonant run and its digit count.
//
// Short labels (< 6 characters) count zero: they carry too little to matter
// and are the bulk of benign names (www, api, s1, eu-west-1 parts). Hex with
// both digits and letters is encoded from 8 characters on (hashes, ids). For
// the rest, a label scores one point for each sign of randomness — mixed case,
// several letter/digit alternations, a consonant run of 4+, too few vowels, a
// near-maximal entropy, raw 8-bit bytes (two points) — and counts as encoded
// from two points on.
func labelRandomness(label string) (cs Charset, r float64, crun, digits int) {
	var lower, upper, vowels, hexOnly, b32, other, high, transitions, run int
	prevDigit := -1
	hexOnly = 1
	b32 = 1
	var seen [64]bool
	distinct := 0
	for i := 0; i < len(label); i++ {
		b := label[i]
		isDigit := b >= '0' && b <= '9'
		isLetter := (b|0x20) >= 'a' && (b|0x20) <= 'z'
		switch {
		case isDigit:
			digits++
			if b < '2' || b > '7' {
				b32 = 0
			}
		case isLetter:
			if b >= 'A' && b <= 'Z' {
				upper++
			} else {
				lower++
			}
			if (b | 0x20) > 'f' {
				hexOnly = 0
			}
		case b == '-' && i > 0 && i < len(label)-1:
			other++ // UUIDs keep their hex class; words-with-hyphens lose points below
			b32 = 0
		case b >= 0x80:
			high++ // 8-bit bytes (iodine's base128 when passed raw): not a hostname
			hexOnly, b32 = 0, 0
		default:
			other++
			hexOnly, b32 = 0, 0
		}
		if isLetter && !isVowel(b) {
			run++
			crun = max(crun, run)
		} else {
			run = 0
		}
		if isLetter && isVowel(b) {
			vowels++
		}
		if isDigit || isLetter {
			d := 0
			if isDigit {
				d = 1
			}
			if prevDigit >= 0 && d != prevDigit {
				transitions++
			}
			prevDigit = d
		}
		if ci := charIndex(b); !seen[ci] {
			seen[ci] = true
			distinct++
		}
	}
	n := len(label)
	letters := lower + upper
	switch {
	case digits == n:
		cs = CharsetDigits
	case hexOnly == 1 && digits+letters > 0:
		cs = CharsetHex
	case upper > 0 && lower > 0:
		cs = CharsetBase64
	case b32 == 1:
		cs = CharsetBase32
	default:
		cs = CharsetAlnum
	}
	if n < 6 {
		return cs, 0, crun, digits
	}
	switch cs {
	case CharsetDigits:
		// Numbers (ports, versions, reversed addresses) carry little; long
		// runs of digits are decimal-encoded data.
		if n >= 12 {
			return cs, 1, crun, digits
		}
		return cs, 0, crun, digits
	case CharsetHex:
		if n >= 8 && digits > 0 && letters > 0 {
			return cs, float64(digits+letters) / float64(n), crun, digits
		}
	}
	points := 0
	if upper > 0 && lower > 0 && upper*4 >= letters && lower*4 >= letters && transitions+crun >= 3 {
		points += 2 // balanced mixed case: base64 / base58
	}
	if transitions >= 3 || (transitions >= 2 && n <= 12) {
		points++ // letters and digits interleaved
	}
	if crun >= 5 || (crun >= 4 && digits > 0) {
		points++
	}
	if letters >= 6 && vowels*4 < letters {
		points++ // under 25% vowels (English hostnames: about 40%)
	}
	if n >= 20 && other == 0 && (transitions >= 2 || crun >= 4) {
		points++ // long unbroken label that is not a word
	}
	if high > 0 {
		points += 2 // IDNs are punycode (xn--): raw 8-bit bytes are binary data
	}
	if other > 0 && transitions < 4 {
		points-- // hyphenated words
	}
	switch {
	case points >= 3:
		r = 1
	case points == 2:
		r = 0.6
	}
	return cs, r, crun, digits
}

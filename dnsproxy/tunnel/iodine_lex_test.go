package tunnel

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// iodine's upstream codecs (iodine 0.7.0 src/base*.c): the alphabets of
// base32, base64 (with '-' and '+') and base128 (letters, digits and the
// bytes 0xBC–0xFD). Through a resolver names are seen in presentation form:
// bytes outside printable ASCII as \DDD escapes (miekg/dns).
var iodineAlphabets = map[string]string{
	"base32":  "abcdefghijklmnopqrstuvwxyz012345",
	"base64":  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789+",
	"base128": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789" + iodineHigh(),
}

func iodineHigh() string {
	var b strings.Builder
	for c := 0xBC; c <= 0xFD; c++ {
		b.WriteByte(byte(c))
	}
	return b.String()
}

// iodineName builds an iodine-like upstream name: a header char, then n
// random characters of the alphabet in labels of 63; escaped: in presentation
// form (as egressd sees it), else raw bytes.
func iodineName(r *rand.Rand, alphabet string, n int, escaped bool) string {
	var b strings.Builder
	b.WriteByte('0')
	for i := 1; i < n; i++ {
		if i%63 == 0 {
			b.WriteByte('.')
		}
		c := alphabet[r.IntN(len(alphabet))]
		if c >= 0x80 && escaped {
			fmt.Fprintf(&b, "\\%03d", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// TestLexicalIodine: iodine's upstream labels in each codec count as encoded
// data (at least 60 % of the bits they carry; base128 in presentation form
// counts about twice its bytes: each \DDD escape is four characters).
func TestLexicalIodine(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bits := map[string]float64{"base32": 5, "base64": 6, "base128": 7}
	for codec, alpha := range iodineAlphabets {
		for _, n := range []int{20, 63, 120, 200} {
			for _, escaped := range []bool{true, false} {
				sub := iodineName(r, alpha, n, escaped)
				lx := analyze(sub)
				carried := float64(n) * bits[codec] / 8
				t.Logf("%-7s escaped=%-5v %3d chars (%3d presented): enc=%.1f (carries %.0f) cs=%v H=%.2f", codec, escaped, n, len(sub), lx.EncodedBytes, carried, lx.Charset, lx.Entropy)
				if lx.EncodedBytes < carried*0.6 {
					t.Errorf("%s, %d chars: encoded %.1f, carries %.0f", codec, n, lx.EncodedBytes, carried)
				}
			}
		}
	}
}

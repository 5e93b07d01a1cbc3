package iprange

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func str(s *Set) string {
	var out []string
	for _, p := range s.Prefixes() {
		out = append(out, p.Prefix.String())
	}
	return fmt.Sprint(out)
}

func TestModel(t *testing.T) {
	var s Set
	s.Add(pfx("10.0.0.0/24"), time.Time{})
	s.Add(pfx("10.0.1.0/24"), time.Time{})
	s.Add(pfx("10.0.0.128/25"), time.Time{})
	if got, want := str(&s), "[10.0.0.0/23]"; got != want {
		t.Fatalf("merge: %s want %s", got, want)
	}
	s.Delete(pfx("10.0.0.64/26"))
	if got, want := str(&s), "[10.0.0.0/26 10.0.0.128/25 10.0.1.0/24]"; got != want {
		t.Fatalf("except: %s want %s", got, want)
	}
	s.Clear()
	s.Add(pfx("0.0.0.0/0"), time.Time{})
	s.Delete(pfx("10.0.0.0/8"))
	if got, want := str(&s), "[0.0.0.0/5 8.0.0.0/7 11.0.0.0/8 12.0.0.0/6 16.0.0.0/4 32.0.0.0/3 64.0.0.0/2 128.0.0.0/1]"; got != want {
		t.Fatalf("all except: %s want %s", got, want)
	}
	s.Add(pfx("10.0.0.0/8"), time.Time{})
	if got, want := str(&s), "[0.0.0.0/0]"; got != want {
		t.Fatalf("all: %s want %s", got, want)
	}
	s.Clear()
	s.Add(pfx("::/0"), time.Time{})
	s.Delete(pfx("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"))
	if n := len(s.Prefixes()); n != 128 {
		t.Fatalf("v6 all but last: %d prefixes", n)
	}
	// expiries: overwrite and no merge across different expiries
	now := time.Unix(1000, 0)
	s.Clear()
	s.Add(pfx("10.0.0.0/24"), now.Add(time.Minute))
	s.Add(pfx("10.0.0.0/25"), now.Add(time.Hour))
	rs := s.Ranges()
	if len(rs) != 2 || !rs[0].Expiry.Equal(now.Add(time.Hour)) || rs[1].Start != netip.MustParseAddr("10.0.0.128") {
		t.Fatalf("expiry split: %+v", rs)
	}
	s.Expire(now.Add(2 * time.Minute))
	if got, want := str(&s), "[10.0.0.0/25]"; got != want {
		t.Fatalf("expire: %s want %s", got, want)
	}
}

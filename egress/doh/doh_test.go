package doh

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDefaultListHasTheWellKnownResolvers(t *testing.T) {
	l := Default()
	for addr, name := range map[string]string{
		"8.8.8.8": "dns.google", "8.8.4.4": "dns.google", "2001:4860:4860::8888": "dns.google",
		"1.1.1.1": "cloudflare-dns.com", "1.0.0.1": "cloudflare-dns.com", "2606:4700:4700::1111": "cloudflare-dns.com",
		"9.9.9.9": "dns.quad9.net", "149.112.112.112": "dns.quad9.net",
		"94.140.14.14": "dns.adguard-dns.com", "208.67.222.222": "doh.opendns.com",
		"45.90.28.77": "dns.nextdns.io", "::ffff:1.1.1.1": "cloudflare-dns.com",
	} {
		got, ok := l.NameOf(netip.MustParseAddr(addr))
		if !ok || got != name {
			t.Errorf("%s: %q %v, want %q", addr, got, ok, name)
		}
	}
	for _, addr := range []string{"10.0.0.1", "8.8.8.9", "192.0.2.1", "2001:db8::1"} {
		if l.Contains(netip.MustParseAddr(addr)) {
			t.Errorf("%s is not a public resolver", addr)
		}
	}
	if len(l.Names()) < 10 {
		t.Errorf("names: %v", l.Names())
	}
}

func TestParse(t *testing.T) {
	l, err := Parse(strings.NewReader("# comment\n\n192.0.2.10 doh.test. # trailing\n2001:db8::/64 DoH6.Test\n198.51.100.7\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 3 || l[0].Name != "doh.test" || l[1].Name != "doh6.test" || l[2].Prefix.Bits() != 32 {
		t.Fatalf("%+v", l)
	}
	for _, bad := range []string{"300.1.1.1 x", "10.0.0.1/8 x", "a b c", strings.Repeat("1", 100) + " x", "1.1.1.1 " + strings.Repeat("a", 300)} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("%.40q: no error", bad)
		} else if len(err.Error()) > 200 {
			t.Errorf("error echoes the huge value: %d bytes", len(err.Error()))
		}
	}
	var b strings.Builder
	for i := 0; i <= MaxEntries; i++ {
		b.WriteString("10.0.0.1 x\n")
	}
	if _, err := Parse(strings.NewReader(b.String())); err == nil {
		t.Error("no limit on entries")
	}
}

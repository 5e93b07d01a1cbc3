package tunnel

import (
	"testing"
)

func TestRegisteredDomain(t *testing.T) {
	d := New(Config{SearchDomains: []string{"ec2.internal"}})
	for _, tc := range []struct {
		q, domain, sub string
		ok             bool
	}{
		{"www.example.com.", "example.com", "www", true},
		{"a.b.Example.CO.uk.", "example.co.uk", "a.b", true},
		{"example.com.", "example.com", "", true},
		{"com.", "", "", false},
		{"localhost.", "", "", false},
		{"api.default.svc.cluster.local.", "", "", false},
		{"google.com.ec2.internal.", "", "", false},
		{"d111111abcdef8.cloudfront.net.", "d111111abcdef8.cloudfront.net", "", true},
		{"my-lb-1234567890.us-east-1.elb.amazonaws.com.", "", "", true},
		{"x.y.s3.amazonaws.com.", "", "", true},
	} {
		domain, sub, _, ok := d.RegisteredDomain(tc.q)
		t.Logf("%s -> %q %q %v", tc.q, domain, sub, ok)
		if ok != tc.ok || (tc.domain != "" && (domain != tc.domain || sub != tc.sub)) {
			t.Errorf("%s: got %q %q %v, want %q %q %v", tc.q, domain, sub, ok, tc.domain, tc.sub, tc.ok)
		}
	}
}

func TestLexical(t *testing.T) {
	for _, tc := range []struct {
		sub        string
		minB, maxB float64
	}{
		{"www", 0, 0},
		{"fonts", 0, 0},
		{"accounts", 0, 0},
		{"mail.google", 0, 0},
		{"selector1._domainkey", 0, 0},
		{"_xmpp-server._tcp", 0, 0},
		{"eu-west-1", 0, 0},
		{"production-eu-central", 0, 0},
		{"kubernetes", 0, 0},
		{"graphql-gateway", 0, 0},
		{"550e8400-e29b-41d4-a716-446655440000", 15, 17},
		{"d3ezg3l8wm9qrf", 5, 10},
		{"3f2a9c0d1e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8", 40, 50},
		{"mfrggzdfmztwq2lknnwg23tpobyxe43uov3ho6dzpi", 20, 30}, {"strength", 0, 0}, {"googleusercontent", 0, 0}, {"rr3---sn-q4flrnek", 0, 12},
		{"aGVsbG8gd29ybGQgdGhpcyBpcyBh", 15, 25},
		{"kx7q2mfp4zt9", 4, 10},
	} {
		lx := analyze(tc.sub)
		t.Logf("%-40.40s enc=%.1f cs=%v H=%.2f crun=%d", tc.sub, lx.EncodedBytes, lx.Charset, lx.Entropy, lx.MaxConsonantRun)
		if lx.EncodedBytes < tc.minB || lx.EncodedBytes > tc.maxB {
			t.Errorf("%s: encoded %.1f, want [%v,%v]", tc.sub, lx.EncodedBytes, tc.minB, tc.maxB)
		}
	}
}

package chain

import (
	"fmt"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestFollow(t *testing.T) {
	cases := []struct {
		name           string
		q              string
		answer         []string
		owners, links  []string
		owns, notOwned string
	}{
		{
			name:   "no alias",
			q:      "Api.Example.",
			answer: []string{"api.example. 60 IN A 192.0.2.1"},
			owners: []string{"api.example."},
		},
		{
			name:   "CNAME chain in any order, mixed case",
			q:      "www.alias.test",
			answer: []string{"B.test. 60 IN CNAME pool.minepool.test.", "www.alias.test. 60 IN CNAME b.test.", "pool.minepool.test. 60 IN A 192.0.2.7"},
			owners: []string{"www.alias.test.", "b.test.", "pool.minepool.test."},
			links:  []string{"b.test.", "pool.minepool.test."},
			owns:   "POOL.minepool.test.",
		},
		{
			name:     "DNAME with synthesized CNAME",
			q:        "www.alias.test.",
			answer:   []string{"alias.test. 60 IN DNAME minepool.test.", "www.alias.test. 60 IN CNAME www.minepool.test.", "www.minepool.test. 60 IN A 192.0.2.8"},
			owners:   []string{"www.alias.test.", "www.minepool.test."},
			links:    []string{"alias.test.", "minepool.test.", "www.minepool.test."},
			notOwned: "minepool.test.",
		},
		{
			name:   "DNAME without synthesized CNAME is substituted",
			q:      "a.b.alias.test.",
			answer: []string{"alias.test. 60 IN DNAME minepool.test.", "a.b.minepool.test. 60 IN A 192.0.2.8"},
			owners: []string{"a.b.alias.test.", "a.b.minepool.test."},
			links:  []string{"alias.test.", "minepool.test.", "a.b.minepool.test."},
		},
		{
			name:   "a DNAME does not apply to its own owner; unrelated aliases are ignored",
			q:      "alias.test.",
			answer: []string{"alias.test. 60 IN DNAME minepool.test.", "other.test. 60 IN CNAME evil.test."},
			owners: []string{"alias.test."},
		},
		{
			name:   "loops end",
			q:      "a.test.",
			answer: []string{"a.test. 60 IN CNAME b.test.", "b.test. 60 IN CNAME a.test."},
			owners: []string{"a.test.", "b.test."},
			links:  []string{"b.test."},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var ans []dns.RR
			for _, s := range c.answer {
				ans = append(ans, rr(t, s))
			}
			got := Follow(c.q, ans)
			if !slices.Equal(got.Owners, c.owners) || !slices.Equal(got.Links, c.links) {
				t.Errorf("owners %v links %v, want %v %v", got.Owners, got.Links, c.owners, c.links)
			}
			if c.owns != "" && !got.Owns(c.owns) {
				t.Errorf("does not own %s", c.owns)
			}
			if c.notOwned != "" && got.Owns(c.notOwned) {
				t.Errorf("owns %s", c.notOwned)
			}
		})
	}
}

// TestFollowBounded: a chain of more than MaxNames aliases is followed only
// MaxNames names deep.
func TestFollowBounded(t *testing.T) {
	var ans []dns.RR
	for i := 0; i < 3*MaxNames; i++ {
		ans = append(ans, rr(t, fmt.Sprintf("n%d.test. 60 IN CNAME n%d.test.", i, i+1)))
	}
	got := Follow("n0.test.", ans)
	if len(got.Links) != MaxNames-1 || len(got.Owners) != MaxNames {
		t.Errorf("%d owners, %d links", len(got.Owners), len(got.Links))
	}
}

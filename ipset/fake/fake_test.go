package fake_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/fake"
	"github.com/egressd/egressd/ipset/ipsettest"
)

func TestConformance(t *testing.T) {
	ipsettest.Run(t, func(t *testing.T) *ipsettest.Env {
		clock := fake.NewClock(time.Unix(1_700_000_000, 0))
		m := fake.New(fake.WithClock(clock.Now))
		return &ipsettest.Env{
			Manager: m,
			Reopen:  func(*testing.T) ipset.Manager { return m.Reopen() },
			Wait:    clock.Advance,
		}
	})
}

func TestContainsAndClock(t *testing.T) {
	ctx := context.Background()
	clock := fake.NewClock(time.Unix(0, 0))
	m := fake.New(fake.WithClock(clock.Now))
	a := netip.MustParseAddr
	if err := m.Ensure(ctx,
		ipset.Spec{Name: "fqdn", Family: ipset.IPv4, Kind: ipset.KindAddrPair, Timeout: true},
		ipset.Spec{Name: "cidr", Family: ipset.IPv4, Kind: ipset.KindPrefix},
	); err != nil {
		t.Fatal(err)
	}
	err := m.Apply(ctx,
		ipset.Op{Kind: ipset.OpAdd, Set: "fqdn", Elements: []ipset.Element{ipset.Pair(a("10.0.0.1"), a("1.2.3.4"), 30*time.Second)}},
		ipset.Op{Kind: ipset.OpAdd, Set: "cidr", Elements: []ipset.Element{{Prefix: netip.MustParsePrefix("10.0.0.0/8")}}},
		ipset.Op{Kind: ipset.OpDelete, Set: "cidr", Elements: []ipset.Element{{Prefix: netip.MustParsePrefix("10.1.0.0/16")}}},
	)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		set      string
		src, dst string
		want     bool
	}{
		{"fqdn", "10.0.0.1", "1.2.3.4", true},
		{"fqdn", "10.0.0.2", "1.2.3.4", false},
		{"cidr", "0.0.0.0", "10.2.3.4", true},
		{"cidr", "0.0.0.0", "10.1.3.4", false},
		{"nope", "0.0.0.0", "10.2.3.4", false},
	} {
		if got := m.Contains(c.set, a(c.src), a(c.dst)); got != c.want {
			t.Errorf("Contains(%s, %s, %s) = %v, want %v", c.set, c.src, c.dst, got, c.want)
		}
	}
	clock.Advance(30 * time.Second)
	if m.Contains("fqdn", a("10.0.0.1"), a("1.2.3.4")) {
		t.Error("element still there after its timeout")
	}
}

func TestFailWith(t *testing.T) {
	ctx := context.Background()
	m := fake.New()
	if err := m.Ensure(ctx, ipset.Spec{Name: "s", Family: ipset.IPv4, Kind: ipset.KindAddr}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	m.FailWith(func(op, set string) error {
		if op == "apply" && set == "s" {
			return boom
		}
		return nil
	})
	err := m.Apply(ctx, ipset.Op{Kind: ipset.OpAdd, Set: "s", Elements: []ipset.Element{ipset.Addr(netip.MustParseAddr("10.0.0.1"), 0)}})
	var ie *ipset.Error
	if !errors.Is(err, boom) || !errors.As(err, &ie) || ie.Set != "s" {
		t.Fatalf("Apply = %v", err)
	}
	m.FailWith(nil)
	if got, _ := m.List(ctx, "s"); len(got) != 0 {
		t.Fatalf("failed Apply changed the set: %v", got)
	}
	if n := m.Calls("apply"); n != 1 {
		t.Fatalf("Calls(apply) = %d", n)
	}
}

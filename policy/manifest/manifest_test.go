package manifest_test

import (
	"net/netip"
	"testing"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

func TestDesignExampleLoadsAndDecides(t *testing.T) {
	objs, err := manifest.DecodePath("../testdata/design-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("got %d objects, want 2", len(objs))
	}
	ws, err := manifest.LoadWorkloads("../testdata/design-workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := manifest.LoadStore(objs, ws)
	if err != nil {
		t.Fatal(err)
	}
	e := policy.NewEngine(s, policy.Options{})
	gw := policy.WorkloadKey{Namespace: "payments", Name: "gateway-0"}
	ip := netip.MustParseAddr
	cases := []struct {
		name string
		conn policy.Connection
		want policy.Verdict
	}{
		{"orders to gateway 8080", policy.Connection{Src: ip("10.0.1.6"), Dst: ip("10.0.1.5"), Port: 8080, Protocol: "TCP"}, policy.Allow},
		{"orders to gateway 8081", policy.Connection{Src: ip("10.0.1.6"), Dst: ip("10.0.1.5"), Port: 8081, Protocol: "TCP"}, policy.Deny},
		{"ops to gateway metrics", policy.Connection{Src: ip("10.0.2.7"), Dst: ip("10.0.1.5"), Port: 9090, Protocol: "TCP"}, policy.Allow},
		{"ops to gateway udp 9050", policy.Connection{Src: ip("10.0.2.7"), Dst: ip("10.0.1.5"), Port: 9050, Protocol: "UDP"}, policy.Allow},
		{"other to gateway metrics", policy.Connection{Src: ip("10.0.1.8"), Dst: ip("10.0.1.5"), Port: 9090, Protocol: "TCP"}, policy.Deny},
		{"gateway to metadata", policy.Connection{Src: ip("10.0.1.5"), Dst: ip("169.254.169.254"), Port: 80, Protocol: "TCP"}, policy.Deny},
		{"gateway to unresolved ip", policy.Connection{Src: ip("10.0.1.5"), Dst: ip("52.1.1.1"), Port: 443, Protocol: "TCP"}, policy.Deny},
		{"other to anything", policy.Connection{Src: ip("10.0.1.8"), Dst: ip("52.1.1.1"), Port: 443, Protocol: "TCP"}, policy.Allow},
	}
	for _, c := range cases {
		if got := e.Decide(c.conn); got.Verdict != c.want {
			t.Errorf("%s: got %s (%+v), want %s", c.name, got.Verdict, got.Deciding(), c.want)
		}
	}
	s.RecordLookup(gw, "api.stripe.com", ip("52.1.1.1"))
	if got := e.Decide(policy.Connection{Src: ip("10.0.1.5"), Dst: ip("52.1.1.1"), Port: 443, Protocol: "TCP"}); got.Verdict != policy.Allow {
		t.Errorf("resolved stripe: got %+v", got.Deciding())
	}
	if got := e.Decide(policy.Connection{Src: ip("10.0.1.5"), Dst: ip("52.1.1.1"), Port: 80, Protocol: "TCP"}); got.Verdict != policy.Deny {
		t.Errorf("resolved stripe port 80: got %+v", got.Deciding())
	}
	lookups := []struct {
		w    policy.WorkloadKey
		name string
		want policy.Verdict
	}{
		{gw, "api.stripe.com.", policy.Allow},
		{gw, "API.Stripe.com", policy.Allow},
		{gw, "a.b.s3.amazonaws.com", policy.Allow},
		{gw, "s3.amazonaws.com", policy.Deny},
		{gw, "example.com", policy.Deny},
		{gw, "pool.minepool.com", policy.Deny},
		{gw, "kubernetes.default.svc.cluster.local", policy.Allow},
		{policy.WorkloadKey{Namespace: "payments", Name: "other-0"}, "example.com", policy.Allow},
		{policy.WorkloadKey{Namespace: "payments", Name: "other-0"}, "xmr-eu.com", policy.Deny},
		{policy.WorkloadKey{Namespace: "payments", Name: "other-0"}, "a.xmr-eu.com", policy.Allow},
	}
	for _, l := range lookups {
		if got := e.DecideLookup(l.w, l.name); got.Verdict != l.want {
			t.Errorf("lookup %s %s: got %+v, want %s", l.w, l.name, got, l.want)
		}
	}
	c := policy.NewCompiler(s, policy.Options{})
	plan, ch := c.Compile()
	if !ch.Full || len(plan.Policies) != 2 || len(plan.Workloads) != 4 {
		t.Fatalf("plan: %+v %+v", ch, plan)
	}
	if !plan.Workloads[gw].Egress.Isolated || len(plan.Workloads[gw].Egress.Admin) != 1 {
		t.Errorf("gateway egress program: %+v", plan.Workloads[gw].Egress)
	}
}

package l7

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// sharedPolicy: api.good.test and other.good.test (one address, 127.0.0.3)
// are allowed by two namespaced policies, www.good.test by a second rule of
// the first. Audit mode: a namespaced policy would deny the name
// other.good.test; an Admin policy would allow only api.good.test to the
// address (so www.good.test would pass only because api.good.test resolved
// to the same address).
const sharedPolicy = `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: a-api, namespace: apps}
spec:
  podSelector: {}
  egress:
  - {action: Allow, to: [{fqdn: {matchName: api.good.test}}]}
  - {action: Allow, to: [{fqdn: {matchName: www.good.test}}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: b-other, namespace: apps}
spec: {podSelector: {}, egress: [{action: Allow, to: [{fqdn: {matchName: other.good.test}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: staged, namespace: apps}
spec: {podSelector: {}, mode: Audit, egress: [{action: Deny, to: [{fqdn: {matchName: other.good.test}}]}]}
---
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: staged-admin}
spec:
  tier: Admin
  priority: 1
  mode: Audit
  subject: {namespaceSelector: {}}
  egress:
  - {action: Allow, to: [{fqdn: {matchName: api.good.test}}]}
  - {action: Deny, to: [{cidr: 127.0.0.3/32}], ports: [{port: 443}]}
`

func newSharedChecker(t testing.TB) *Checker {
	t.Helper()
	store := policy.NewStore()
	if err := store.LoadWorkloads(&policy.Workloads{
		Namespaces: []policy.Namespace{{Name: "apps"}},
		Pods:       []policy.Workload{{Namespace: "apps", Name: "client", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}},
	}); err != nil {
		t.Fatal(err)
	}
	objs, err := manifest.Decode("test", strings.NewReader(sharedPolicy))
	if err != nil {
		t.Fatal(err)
	}
	for i := range objs {
		if err := objs[i].Apply(store); err != nil {
			t.Fatal(err)
		}
	}
	return &Checker{
		Engine: policy.NewEngine(store, policy.Options{}),
		Resolve: func(_ context.Context, host string) ([]netip.Addr, error) {
			if strings.HasSuffix(host, ".good.test") {
				return []netip.Addr{netip.MustParseAddr("127.0.0.3")}, nil
			}
			return nil, fmt.Errorf("no such host %s", host)
		},
	}
}

// Two names on one address allowed by different namespaced policies both
// pass, each by its own policy, whichever was resolved first; a third name
// on the address does not.
func TestCheckTwoAllowedNamesOnOneAddress(t *testing.T) {
	c := newSharedChecker(t)
	cl := netip.MustParseAddr("127.0.0.1")
	dst := netip.MustParseAddr("127.0.0.3")
	for _, tc := range []struct {
		host   string
		dst    netip.Addr
		allow  bool
		reason string
		port   int    // default 443
		audit  string // Verdict.Audit.Reason, "" for none
		policy string // audit policy
	}{
		{host: "other.good.test", allow: true, audit: ReasonNameDenied, policy: "FirewallPolicy/apps/staged"},
		{host: "api.good.test", allow: true},
		{host: "other.good.test", dst: dst, allow: true, audit: ReasonNameDenied, policy: "FirewallPolicy/apps/staged"},
		{host: "api.good.test", dst: dst, allow: true},
		{host: "www.good.test", dst: dst, allow: true, audit: ReasonOtherName, policy: "ClusterFirewallPolicy/staged-admin"},
		{host: "www.good.test", dst: dst, port: 80, allow: true},
		{host: "third.good.test", allow: false, reason: ReasonOtherName},
		{host: "third.good.test", dst: dst, allow: false, reason: ReasonOtherName},
		{host: "127.0.0.3", allow: false, reason: ReasonIPLiteral},
	} {
		if tc.port == 0 {
			tc.port = 443
		}
		v := c.Check(context.Background(), Request{Client: cl, Host: tc.host, Port: tc.port, Dst: tc.dst})
		if v.Allowed != tc.allow || v.Reason != tc.reason {
			t.Errorf("%s → %v: got %+v, want allowed=%v reason %q", tc.host, tc.dst, v, tc.allow, tc.reason)
			continue
		}
		switch {
		case tc.audit == "" && v.Audit != nil:
			t.Errorf("%s: unexpected audit %+v", tc.host, *v.Audit)
		case tc.audit != "" && (v.Audit == nil || v.Audit.Reason != tc.audit || v.Audit.Policy != tc.policy):
			t.Errorf("%s: audit %+v, want %s by %s", tc.host, v.Audit, tc.audit, tc.policy)
		}
	}
}

// An allowed request that an Audit-mode policy would deny proceeds and is
// reported through Hooks.Audit (not Blocked).
func TestExplicitAudit(t *testing.T) {
	c := newSharedChecker(t)
	ln, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.3: %v", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello %s", r.Host) }))

	rec := &recorder{}
	hooks := rec.hooks()
	p := NewExplicit(c, Limits{}, hooks)
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.Serve(pl)
	defer p.Close()
	purl, _ := url.Parse("http://" + pl.Addr().String())
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(purl), DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for _, host := range []string{"api.good.test", "other.good.test"} {
		resp, err := client.Get(fmt.Sprintf("http://%s:%d/", host, port))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprintf("hello %s:%d", host, port) {
			t.Fatalf("%s: %d %q", host, resp.StatusCode, b)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.evs) != 0 {
		t.Fatalf("blocked events: %+v", rec.evs)
	}
	if len(rec.audits) != 1 {
		t.Fatalf("audit events: %+v", rec.audits)
	}
	a := rec.audits[0]
	if a.Attrs[AttrMode] != string(ModeHTTP) || a.QName != "other.good.test" || a.Response != "" ||
		a.Policy != "FirewallPolicy/apps/staged" || a.Rule != "egress[0]" {
		t.Fatalf("audit event: %+v", a)
	}
}

// BenchmarkCheck is the decision of one request by a workload (lookup
// decision, in-process resolver, recording the answer, DecideFor), for a name
// allowed by the second of two policies on a shared address and for a third
// name that is denied:
//
//	go test -run X -bench Check ./egress/l7
func BenchmarkCheck(b *testing.B) {
	c := newSharedChecker(b)
	cl := netip.MustParseAddr("127.0.0.1")
	dst := netip.MustParseAddr("127.0.0.3")
	for _, host := range []string{"other.good.test", "third.good.test"} {
		b.Run(host, func(b *testing.B) {
			want := host == "other.good.test"
			for b.Loop() {
				if v := c.Check(context.Background(), Request{Client: cl, Host: host, Port: 80, Dst: dst}); v.Allowed != want {
					b.Fatalf("%+v", v)
				}
			}
		})
	}
}

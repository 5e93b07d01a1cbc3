package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/telemetry/event"
)

const testPolicy = `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: apps}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{fqdn: {matchName: good.example.com}}]
  - action: Deny
    to: [{fqdn: {matchName: bad.example.com}}]
  - action: Allow
    to: [{cidr: 127.0.0.4/32}]
`

// newTestChecker: workload apps/client at 127.0.0.1; good, evil and bad
// resolve to 127.0.0.3, spoof.example.com to 127.0.0.5.
func newTestChecker(t testing.TB) (*Checker, *policy.Store) {
	t.Helper()
	store := policy.NewStore()
	if err := store.LoadWorkloads(&policy.Workloads{
		Namespaces: []policy.Namespace{{Name: "apps"}},
		Pods:       []policy.Workload{{Namespace: "apps", Name: "client", IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}},
	}); err != nil {
		t.Fatal(err)
	}
	objs, err := manifest.Decode("test", strings.NewReader(testPolicy))
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
			switch host {
			case "good.example.com", "evil.example.com", "bad.example.com":
				return []netip.Addr{netip.MustParseAddr("127.0.0.3")}, nil
			case "other.example.com":
				return []netip.Addr{netip.MustParseAddr("127.0.0.4")}, nil
			}
			return nil, fmt.Errorf("no such host %s", host)
		},
	}, store
}

func TestCheck(t *testing.T) {
	c, _ := newTestChecker(t)
	c.BlockDoH = func(w policy.WorkloadKey, name string, _ netip.Addr) bool { return name == "dns.google" }
	cl := netip.MustParseAddr("127.0.0.1")
	ctx := context.Background()
	for _, tc := range []struct {
		host   string
		dst    string
		allow  bool
		reason string
	}{
		{"evil.example.com", "", false, ReasonConnDenied}, // nothing resolved yet: isolated
		{"good.example.com", "", true, ""},
		{"GOOD.example.com.", "127.0.0.3", true, ""},
		{"evil.example.com", "", false, ReasonOtherName}, // same IP, other name
		{"bad.example.com", "", false, ReasonNameDenied},
		{"good.example.com", "127.0.0.9", false, ReasonAddrMismatch}, // SNI spoofing
		{"other.example.com", "", true, ""},                          // allowed by CIDR
		{"127.0.0.4", "", true, ""},
		{"127.0.0.3", "", false, ReasonIPLiteral},
		{"nxdomain.example.com", "", false, ReasonResolveFailed},
		{"DNS.Google.", "127.0.0.3", false, ReasonDoH},
		{"dns.google", "", false, ReasonDoH},
	} {
		r := Request{Client: cl, Host: tc.host, Port: 443}
		if tc.dst != "" {
			r.Dst = netip.MustParseAddr(tc.dst)
		}
		v := c.Check(ctx, r)
		if v.Allowed != tc.allow || (!tc.allow && v.Reason != tc.reason) {
			t.Errorf("%s → %s: got %+v", tc.host, tc.dst, v)
		}
		if !v.Allowed && (v.Reason == ReasonNameDenied || v.Reason == ReasonOtherName) && v.Policy != "FirewallPolicy/apps/web" {
			t.Errorf("%s: policy %q", tc.host, v.Policy)
		}
	}
}

// recorder keeps the blocked events (evs) and the audit events (audits),
// and counts decisions by mode and verdict (n).
type recorder struct {
	mu     sync.Mutex
	evs    []event.Event
	audits []event.Event
	n      map[string]int
}

func (r *recorder) hooks() Hooks {
	r.n = map[string]int{}
	return Hooks{
		Events: event.SinkFunc(func(_ context.Context, ev event.Event) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if ev.Name == event.HTTPAudit {
				r.audits = append(r.audits, ev)
				return
			}
			r.evs = append(r.evs, ev)
		}),
		Decided: func(m Mode, allowed bool, reason string) {
			r.mu.Lock()
			r.n[fmt.Sprintf("%s %v", m, allowed)]++
			r.mu.Unlock()
		},
	}
}

func TestExplicitProxy(t *testing.T) {
	c, _ := newTestChecker(t)
	// Origin on 127.0.0.3: answers with the Host it saw.
	ln, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.3 (Linux loopback serves all of 127/8): %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello %s", r.Host) }))
	defer ln.Close()

	rec := &recorder{}
	p := NewExplicit(c, Limits{}, rec.hooks())
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	go p.Serve(pl)
	defer p.Close()
	purl, _ := url.Parse("http://" + pl.Addr().String())
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(purl), DisableKeepAlives: true}, Timeout: 5 * time.Second}

	get := func(host string) (int, string) {
		resp, err := client.Get(fmt.Sprintf("http://%s:%d/", host, port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("good.example.com"); code != 200 || !strings.Contains(body, "hello good.example.com") {
		t.Fatalf("good: %d %s", code, body)
	}
	code, body := get("evil.example.com")
	if code != 403 || !strings.Contains(body, ReasonOtherName) || !strings.Contains(body, "FirewallPolicy/apps/web") {
		t.Fatalf("evil: %d %s", code, body)
	}

	// CONNECT by hand.
	connect := func(host string) string {
		conn, err := net.Dial("tcp", pl.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", host, port, host, port)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 {
			return resp.Status
		}
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := connect("good.example.com"); got != "hello good.example.com" {
		t.Fatalf("connect good: %q", got)
	}
	if got := connect("evil.example.com"); !strings.HasPrefix(got, "403") {
		t.Fatalf("connect evil: %q", got)
	}
	if got := connect("bad.example.com"); !strings.HasPrefix(got, "403") {
		t.Fatalf("connect bad: %q", got)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.evs) != 3 || rec.evs[2].Reason != ReasonNameDenied || rec.evs[1].Attrs[AttrMode] != string(ModeConnect) || rec.evs[1].Attrs["server.port"] != strconv.Itoa(port) {
		t.Fatalf("events: %+v", rec.evs)
	}
	if rec.n["connect true"] != 1 || rec.n["http false"] != 1 {
		t.Fatalf("counts: %v", rec.n)
	}
}

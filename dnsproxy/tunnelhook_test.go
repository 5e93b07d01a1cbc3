package dnsproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/tunnel"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// tunnelReporter records tunnel events besides lookups.
type tunnelReporter struct {
	*recorder
	mu      sync.Mutex
	tunnels []Event
}

func (r *tunnelReporter) TunnelEvent(_ context.Context, ev Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tunnels = append(r.tunnels, ev)
}

func (r *tunnelReporter) count(name string) (n int, last Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range r.tunnels {
		if ev.Event == name {
			n++
			last = ev
		}
	}
	return n, last
}

// detectorHook adapts tunnel.Detector as cmd/egressd does.
type detectorHook struct{ d *tunnel.Detector }

func hookKey(workload string, client netip.Addr) string {
	if workload == "" {
		return "client:" + client.String()
	}
	return workload
}

func (h detectorHook) Blocked(workload string, client netip.Addr, qname string) (bool, string) {
	return h.d.Blocked(hookKey(workload, client), qname)
}

func (h detectorHook) Check(_ context.Context, workload string, client netip.Addr, qname string, qtype uint16) (TunnelVerdict, bool) {
	v := h.d.Check(hookKey(workload, client), qname, qtype)
	return TunnelVerdict{Suspected: v.Suspected, Domain: v.Domain, Score: v.Score, Reason: v.Reason(), Features: v.Features}, v.Blocked
}

func (h detectorHook) PairInfo(workload string, client netip.Addr, qname string) (string, float64) {
	return h.d.Pair(hookKey(workload, client), qname)
}

func (h detectorHook) Observe(_ context.Context, workload string, client netip.Addr, qname string, qtype uint16, rcode, size int) TunnelVerdict {
	v := h.d.Observe(hookKey(workload, client), qname, qtype, rcode, size)
	return TunnelVerdict{Suspected: v.Suspected, Domain: v.Domain, Score: v.Score, Reason: v.Reason(), Features: v.Features}
}

func TestTunnelBlock(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.7", 60))
	rep := &tunnelReporter{recorder: &recorder{}}
	var clock *testClock
	h := start(t, []string{up.addr}, func(_ *Config, d *Deps) {
		d.Reporter = rep
		d.Tunnel = detectorHook{tunnel.New(tunnel.Config{Action: tunnel.Block, Now: d.Now})}
	})
	clock = h.clock
	client := netip.MustParseAddr("127.0.0.1")
	data := make([]byte, 100)
	refusedAt := 0
	for i := 1; i <= 10; i++ {
		rand.Read(data)
		h0 := hex.EncodeToString(data)
		name := h0[:60] + "." + h0[60:120] + "." + h0[120:180] + "." + h0[180:] + ".t.evil-c2.test.com."
		r := h.query(t, client, "udp", name, dns.TypeTXT, true)
		clock.Advance(1e9)
		if r.Rcode == dns.RcodeRefused {
			refusedAt = i
			e := ede(r)
			if e == nil || e.InfoCode != dns.ExtendedErrorCodeProhibited {
				t.Fatalf("refused without EDE Prohibited: %v", r)
			}
			break
		}
	}
	if refusedAt == 0 || refusedAt > 6 {
		t.Fatalf("tunnel not refused within 6 queries (refused at %d)", refusedAt)
	}
	n, ev := rep.count(EventTunnelSuspected)
	if n != 1 || ev.Domain != "test.com" || ev.Score < 1 || len(ev.Features) == 0 || ev.Reason == "" {
		t.Fatalf("suspected events %d, last %+v", n, ev)
	}
	if n, ev := rep.count(EventTunnelBlocked); n != 1 || ev.Response != "REFUSED" || ev.Domain != "test.com" || ev.Score < 1 {
		t.Fatalf("blocked events %d, last %+v", n, ev)
	}
	// Other domains of the same client still resolve.
	if r := h.query(t, client, "udp", "www.example.org.", dns.TypeA, true); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("benign lookup: %v", r)
	}
	t.Logf("refused at query %d; suspected: score %.2f reasons %s", refusedAt, ev.Score, ev.Reason)
}

// tunnelName is a dnscat2-style name carrying 100 random bytes in hex.
func tunnelName(domain string) string {
	data := make([]byte, 100)
	rand.Read(data)
	h := hex.EncodeToString(data)
	return h[:60] + "." + h[60:120] + "." + h[120:180] + "." + h[180:] + "." + domain + "."
}

// tunnelPolicyEngine is the engine of testdata/workloads.yaml with policies
// setting spec.tunnelDetection: Block for namespace payments, Off for
// builds/runner-0.
func tunnelPolicyEngine(t testing.TB) *policy.Engine {
	t.Helper()
	const policies = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: tunnels-block, namespace: payments}
spec:
  podSelector: {}
  tunnelDetection: Block
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: tunnels-off, namespace: builds}
spec:
  podSelector: {matchLabels: {app: runner}}
  tunnelDetection: "Off"
`
	objs, err := manifest.Decode("policies", strings.NewReader(policies))
	if err != nil {
		t.Fatal(err)
	}
	ws, err := manifest.LoadWorkloads("testdata/workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	store, err := manifest.LoadStore(objs, ws)
	if err != nil {
		t.Fatal(err)
	}
	return policy.NewEngine(store, policy.Options{})
}

// TestTunnelActionFromPolicy runs the resolver with a policy store whose
// policies set spec.tunnelDetection per workload, the node default being
// Alert: namespace payments Block, builds/runner-0 Off. The same tunnel is
// refused (with EDE) only for payments/gateway-0, alerted and still answered
// for a client that is not a workload, and neither tracked nor alerted for
// builds/runner-0.
func TestTunnelActionFromPolicy(t *testing.T) {
	eng := tunnelPolicyEngine(t)
	up := startFakeUpstream(t, answerA("192.0.2.7", 60))
	rep := &tunnelReporter{recorder: &recorder{}}
	var det *tunnel.Detector
	h := start(t, []string{up.addr}, func(_ *Config, d *Deps) {
		d.Engine = eng
		d.Reporter = rep
		det = tunnel.New(tunnel.Config{Action: tunnel.Alert, ActionSet: true, ActionFor: TunnelActions(eng), Now: d.Now})
		d.Tunnel = detectorHook{det}
	})

	for _, tc := range []struct {
		client, workload string
		want             tunnel.Action
	}{
		{"127.0.0.2", "payments/gateway-0", tunnel.Block},
		{"127.0.0.1", "", tunnel.Alert},
		{"127.0.0.3", "builds/runner-0", tunnel.Off},
	} {
		client := netip.MustParseAddr(tc.client)
		domain := "c2-" + strings.ToLower(tc.want.String()) + ".example.com"
		pairs := det.Len()
		sBefore, _ := rep.count(EventTunnelSuspected)
		refusedAt := 0
		for i := 1; i <= 10 && refusedAt == 0; i++ {
			r := h.query(t, client, "udp", tunnelName(domain), dns.TypeTXT, true)
			h.clock.Advance(1e9)
			if r.Rcode == dns.RcodeRefused {
				if e := ede(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeProhibited {
					t.Fatalf("%s: refused without EDE Prohibited: %v", tc.client, r)
				}
				refusedAt = i
			}
		}
		sAfter, ev := rep.count(EventTunnelSuspected)
		suspected := sAfter - sBefore
		switch tc.want {
		case tunnel.Block:
			if refusedAt == 0 || refusedAt > 6 || suspected != 1 || ev.Workload != tc.workload || ev.Domain != "example.com" {
				t.Fatalf("%s (Block): refused at %d, %d suspected events, last %+v", tc.workload, refusedAt, suspected, ev)
			}
		case tunnel.Alert:
			if refusedAt != 0 || suspected != 1 || ev.Workload != "" || ev.Client != tc.client {
				t.Fatalf("%s (Alert): refused at %d, %d suspected events, last %+v", tc.client, refusedAt, suspected, ev)
			}
		case tunnel.Off:
			if refusedAt != 0 || suspected != 0 || det.Len() != pairs {
				t.Fatalf("%s (Off): refused at %d, %d suspected events, %d new pairs", tc.workload, refusedAt, suspected, det.Len()-pairs)
			}
		}
		t.Logf("%s %s (%v): refused at query %d, %d suspected events", tc.client, tc.workload, tc.want, refusedAt, suspected)
	}
	if n, ev := rep.count(EventTunnelBlocked); n != 1 || ev.Workload != "payments/gateway-0" || ev.Domain != "example.com" || ev.Score < 1 {
		t.Fatalf("blocked events %d, last %+v", n, ev)
	}
}

// BenchmarkTunnelActions is the per-query cost of the policy-driven action
// lookup (the detector calls it in Blocked and in Observe).
func BenchmarkTunnelActions(b *testing.B) {
	f := TunnelActions(tunnelPolicyEngine(b))
	keys := []string{"payments/gateway-0", "builds/runner-0", "payments/gateway-1", "other/unknown"}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f(keys[i%len(keys)])
	}
}

package dnsproxy

import (
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/tunnel"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// tunnelReporter records the events; count counts those named name.
type tunnelReporter struct{ *recorder }

func (r *tunnelReporter) count(name string) (n int, last event.Event) {
	evs := r.Named(name)
	if len(evs) > 0 {
		last = evs[len(evs)-1]
	}
	return len(evs), last
}

func TestTunnelBlock(t *testing.T) {
	up := startFakeUpstream(t, answerA("192.0.2.7", 60))
	rep := &tunnelReporter{recorder: &recorder{}}
	var clock *testClock
	h := start(t, []string{up.addr}, func(_ *Config, d *Deps) {
		d.Events = rep
		d.Tunnel = tunnel.New(tunnel.Config{Action: tunnel.Block, Now: d.Now})
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
	n, ev := rep.count(event.TunnelSuspected)
	if n != 1 || ev.Domain != "test.com" || ev.Score < 1 || len(ev.Features) == 0 || ev.Reason == "" {
		t.Fatalf("suspected events %d, last %+v", n, ev)
	}
	if n, ev := rep.count(event.TunnelBlocked); n != 1 || ev.Response != "REFUSED" || ev.Domain != "test.com" || ev.Score < 1 {
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
		d.Events = rep
		det = tunnel.New(tunnel.Config{Action: tunnel.Alert, ActionSet: true, ActionFor: TunnelActions(eng), Now: d.Now})
		d.Tunnel = det
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
		sBefore, _ := rep.count(event.TunnelSuspected)
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
		sAfter, ev := rep.count(event.TunnelSuspected)
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
	if n, ev := rep.count(event.TunnelBlocked); n != 1 || ev.Workload != "payments/gateway-0" || ev.Domain != "example.com" || ev.Score < 1 {
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

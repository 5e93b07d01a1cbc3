package dnsproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"sync"
	"testing"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy/tunnel"
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
		return "client/" + client.String()
	}
	return workload
}

func (h detectorHook) Blocked(workload string, client netip.Addr, qname string) (bool, string) {
	return h.d.Blocked(hookKey(workload, client), qname)
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
	if n, ev := rep.count(EventTunnelBlocked); n != 1 || ev.Response != "REFUSED" {
		t.Fatalf("blocked events %d, last %+v", n, ev)
	}
	// Other domains of the same client still resolve.
	if r := h.query(t, client, "udp", "www.example.org.", dns.TypeA, true); r.Rcode != dns.RcodeSuccess {
		t.Fatalf("benign lookup: %v", r)
	}
	t.Logf("refused at query %d; suspected: score %.2f reasons %s", refusedAt, ev.Score, ev.Reason)
}

package egress

import (
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/telemetry/event"
)

func TestDeniedEventExplainsThePacketWithTheEngine(t *testing.T) {
	s := policy.NewStore()
	if err := s.LoadWorkloads(&policy.Workloads{Pods: []policy.Workload{
		{Namespace: "x", Name: "a", IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
	}}); err != nil {
		t.Fatal(err)
	}
	err := s.UpsertFirewallPolicy(&policy.FirewallPolicy{
		ObjectMeta: metaName("x", "lockdown"),
		Spec:       policy.FirewallPolicySpec{Egress: []policy.Rule{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := DeniedPacket{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("192.0.2.9"), Protocol: policy.ProtocolTCP, DstPort: 443}
	ev := DeniedEvent(policy.NewEngine(s, policy.Options{}), p)
	if ev.Name != event.PacketDenied || ev.Workload != "x/a" || ev.Namespace != "x" || ev.Client != "10.0.0.1" ||
		ev.Policy != "FirewallPolicy/x/lockdown" || ev.Tier != "Namespaced" || ev.Reason != policy.ReasonIsolated ||
		ev.Attrs["server.address"] != "192.0.2.9" || ev.Attrs["server.port"] != "443" || ev.Attrs["network.transport"] != "tcp" ||
		ev.Attrs["egressd.direction"] != "egress" {
		t.Fatalf("event: %+v", ev)
	}
}

func TestEventLimiterBoundsTheRateAndCountsSuppressed(t *testing.T) {
	l := &eventLimiter{rate: 10, burst: 2}
	now := time.Unix(0, 0)
	if ok, _ := l.allow(now); !ok {
		t.Fatal("first event refused")
	}
	if ok, _ := l.allow(now); !ok {
		t.Fatal("burst of 2 refused its second event")
	}
	for range 5 {
		if ok, _ := l.allow(now); ok {
			t.Fatal("event over the burst allowed")
		}
	}
	ok, suppressed := l.allow(now.Add(100 * time.Millisecond))
	if !ok || suppressed != 5 {
		t.Fatalf("after refill: ok=%v suppressed=%d, want true 5", ok, suppressed)
	}
}

func metaName(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }

package dataplane

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/scenarios"
)

// TestDeniedPacketsReachNFLog: with WithNFLog the table logs each dropped
// packet to the group before dropping it, and ListenDenied reads its header, so
// the agent can report packet.denied with the engine's explanation.
func TestDeniedPacketsReachNFLog(t *testing.T) {
	const group = 7411
	h := newHarness(t, egress.WithNFLog(group))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan egress.DeniedPacket, 64)
	listening := make(chan error, 1)
	go func() {
		listening <- egress.ListenDenied(ctx, group, h.node.Fd(), func(p egress.DeniedPacket) {
			select {
			case got <- p:
			default:
			}
		})
	}()
	s, err := newSession(policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	plan, ch, eng, err := s.load(&scenarios.Scenario{Name: "nflog", Policies: []string{fmt.Sprintf(ingressYA, portsYAML(81))}})
	if err != nil {
		t.Fatal(err)
	}
	h.eng = eng
	if err := h.enf.Apply(ctx, plan, ch); err != nil {
		t.Fatal(err)
	}
	xb, ya := h.byName["x/b"], h.byName["y/a"]
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ok, _ := h.pr.Probe(ctx, xb, ya.IPv4, 80, netmodel.TCP, 200*time.Millisecond); ok {
			t.Fatalf("x/b reached y/a:80 although y/a is isolated\n%s", h.ruleset())
		}
		select {
		case err := <-listening:
			t.Fatalf("ListenDenied stopped: %v", err)
		case p := <-got:
			if p.Src != xb.IPv4 || p.Dst != ya.IPv4 || p.Protocol != policy.ProtocolTCP || p.DstPort != 80 || p.Prefix != egress.LogPrefix {
				t.Fatalf("logged packet %+v, want %s -> %s TCP/80 with prefix %q", p, xb.IPv4, ya.IPv4, egress.LogPrefix)
			}
			if d := eng.Decide(p.Connection()); d.Verdict != policy.Deny || d.Deciding().Policy.Name != "allow-xa" {
				t.Fatalf("the engine explains the logged packet as %+v", d.Deciding())
			}
			return
		case <-time.After(300 * time.Millisecond):
		}
	}
	t.Fatalf("no denied packet arrived on nflog group %d\n%s", group, h.ruleset())
}

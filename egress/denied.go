package egress

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/telemetry/event"
)

// DeniedEvents reports the packets the table drops (WithNFLog) as events:
// packet.denied, explained by the reference engine, and dns.bypass.blocked for
// the DNS side doors (log prefix BypassLogPrefix), at most Rate per second.
type DeniedEvents struct {
	// Group is the nflog group (the one passed to WithNFLog).
	Group uint16
	// Rate bounds the events per second (burst twice that, at least 1): a port
	// scan must not flood the audit log. The event after a suppressed run
	// carries their number in the attribute egressd.suppressed.
	Rate float64
	// Engine explains a dropped packet (the kernel's verdict agrees with it).
	Engine *policy.Engine
	// Bypass builds the event of a side-door drop (sidedoors); nil: such
	// packets are explained by the engine like the others.
	Bypass func(DeniedPacket) event.Event
	// Events receives the events.
	Events event.Sink
}

// Run reads the dropped packets and emits their events until ctx ends.
func (d DeniedEvents) Run(ctx context.Context) error {
	lim := &eventLimiter{rate: d.Rate, burst: max(1, 2*d.Rate)}
	return ListenDenied(ctx, d.Group, 0, func(p DeniedPacket) {
		ok, suppressed := lim.allow(time.Now())
		if !ok {
			return
		}
		var ev event.Event
		if d.Bypass != nil && strings.HasPrefix(p.Prefix, BypassLogPrefix) {
			ev = d.Bypass(p)
		} else {
			ev = DeniedEvent(d.Engine, p)
		}
		if suppressed > 0 {
			if ev.Attrs == nil {
				ev.Attrs = map[string]string{}
			}
			ev.Attrs["egressd.suppressed"] = strconv.Itoa(suppressed)
		}
		d.Events.Emit(ctx, ev)
	})
}

// DeniedEvent explains a dropped packet with the reference engine: the
// kernel's verdict agrees with it, so the deciding direction's policy, rule,
// tier and reason are the kernel's too.
func DeniedEvent(e *policy.Engine, p DeniedPacket) event.Event {
	d := e.Decide(p.Connection())
	dec := d.Deciding()
	ns, _, _ := strings.Cut(dec.Workload.String(), "/")
	ev := event.Event{
		Time: p.Time, Name: event.PacketDenied,
		Workload: dec.Workload.String(), Namespace: ns, Client: p.Src.String(),
		Policy: dec.Policy.String(), Rule: dec.Rule, Tier: string(dec.Tier), Reason: dec.Reason,
		Attrs: map[string]string{
			"server.address":    p.Dst.String(),
			"server.port":       strconv.Itoa(int(p.DstPort)),
			"network.transport": strings.ToLower(string(p.Protocol)),
		},
	}
	if dec.Applies && d.Egress.Verdict == policy.Deny {
		ev.Attrs["egressd.direction"] = "egress"
	} else if dec.Applies {
		ev.Attrs["egressd.direction"] = "ingress"
	}
	return ev
}

// eventLimiter is a token bucket bounding how many events are reported per
// second.
type eventLimiter struct {
	mu     sync.Mutex
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
	// suppressed counts events dropped since the last reported one.
	suppressed int
}

func (l *eventLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	} else {
		l.tokens = l.burst
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	s := l.suppressed
	l.suppressed = 0
	return true, s
}

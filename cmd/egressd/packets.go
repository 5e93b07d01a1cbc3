package main

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/telemetry/event"
)

// eventLimiter is a token bucket bounding how many packet.denied events are
// reported per second (a port scan must not flood the audit log).
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

// deniedEvent explains a dropped packet with the reference engine: the
// kernel's verdict agrees with it, so the deciding direction's policy, rule,
// tier and reason are the kernel's too.
func deniedEvent(e *policy.Engine, p egress.DeniedPacket) event.Event {
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

// reportDenied reads the packets the table drops (--nflog-group) and reports
// each as a packet.denied event, at most --denied-events-rate per second.
func (a *agent) reportDenied(ctx context.Context) {
	if a.cfg.NFLogGroup <= 0 || a.enforcer == nil {
		return
	}
	lim := &eventLimiter{rate: a.cfg.DeniedEventsRate, burst: max(1, 2*a.cfg.DeniedEventsRate)}
	err := egress.ListenDenied(ctx, uint16(a.cfg.NFLogGroup), 0, func(p egress.DeniedPacket) {
		ok, suppressed := lim.allow(time.Now())
		if !ok {
			return
		}
		var ev event.Event
		if strings.HasPrefix(p.Prefix, egress.BypassLogPrefix) {
			ev = a.bypassEvent(p) // sidedoors.go
		} else {
			ev = deniedEvent(a.engine, p)
		}
		if suppressed > 0 {
			ev.Attrs["egressd.suppressed"] = strconv.Itoa(suppressed)
		}
		a.events.Emit(ctx, ev)
	})
	if err != nil {
		a.log.Error("denied-packet reports stopped", "err", err)
	}
}

package tunnel

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// actions is a per-workload action table, as the agent's policy lookup is.
type actions struct {
	mu sync.RWMutex
	m  map[string]Action
}

func (a *actions) set(w string, act Action) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.m[w] = act
}

func (a *actions) get(w string) (Action, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	act, ok := a.m[w]
	return act, ok
}

// runTunnel sends dnscat2-style TXT queries (110 B each) of workload under
// domain until the detector suspects the pair or n queries were sent; it
// returns the query that raised the alert (0: none) and the last verdict.
func runTunnel(d *Detector, clk *simClock, r *rand.Rand, workload, domain string, n int) (int, Verdict) {
	s := &tunnelState{domain: domain + ".", chunk: 110}
	next := dnscat2(tTXT)
	var v Verdict
	for i := 1; i <= n; i++ {
		q := next(r, s)
		clk.now = clk.now.Add(100 * time.Millisecond)
		v = d.Observe(workload, q.name, q.qtype, q.rcode, q.ans)
		if v.Suspected {
			return i, v
		}
	}
	return 0, v
}

// TestActionPerWorkload: the node default is Alert; one workload is set to
// Block and one to Off by ActionFor. The same tunnel is quarantined only for
// the Block workload, alerted for the default one, and not tracked at all for
// the Off one.
func TestActionPerWorkload(t *testing.T) {
	clk := &simClock{now: t0}
	tab := &actions{m: map[string]Action{"shop/cart-0": Block, "batch/etl-0": Off}}
	d := New(Config{Action: Alert, ActionSet: true, ActionFor: tab.get, Now: clk.Now})
	r := rand.New(rand.NewPCG(11, 12))

	for _, tc := range []struct {
		workload string
		want     Action
	}{
		{"shop/cart-0", Block},
		{"shop/cart-1", Alert}, // same namespace, no per-workload setting
		{"batch/etl-0", Off},
	} {
		domain := "c2-" + tc.want.String() + ".example.com"
		name := "x0." + domain + "."
		if got := d.ActionFor(tc.workload); got != tc.want {
			t.Fatalf("%s: ActionFor %v, want %v", tc.workload, got, tc.want)
		}
		before := d.Len()
		at, v := runTunnel(d, clk, r, tc.workload, domain, 50)
		blocked, why := d.Blocked(tc.workload, name)
		switch tc.want {
		case Block:
			if at == 0 || at > 5 || !v.Blocked || v.Action != Block {
				t.Fatalf("%s: suspected at query %d, verdict %+v; want blocked within 5", tc.workload, at, v)
			}
			if !blocked || why == "" {
				t.Fatalf("%s: not quarantined after the alert", tc.workload)
			}
			// Another workload's lookups of the same domain are not refused.
			if b, _ := d.Blocked("shop/cart-1", name); b {
				t.Fatalf("shop/cart-1 refused by shop/cart-0's quarantine")
			}
		case Alert:
			if at == 0 || at > 5 || v.Blocked || v.Action != Alert {
				t.Fatalf("%s: suspected at query %d, verdict %+v; want an alert without block", tc.workload, at, v)
			}
			if blocked {
				t.Fatalf("%s: refused with action Alert", tc.workload)
			}
		case Off:
			if at != 0 || v.Score != 0 || v.Domain != "" {
				t.Fatalf("%s: action Off but verdict %+v at %d", tc.workload, v, at)
			}
			if blocked {
				t.Fatalf("%s: refused with action Off", tc.workload)
			}
			if d.Len() != before {
				t.Fatalf("%s: action Off but %d new pairs tracked", tc.workload, d.Len()-before)
			}
		}
		t.Logf("%s (%v): suspected at query %d, score %.2f, blocked lookup %v", tc.workload, tc.want, at, v.Score, blocked)
	}
}

// TestQuarantineFollowsAction: a quarantine is lifted when the workload's
// action leaves Block, and applies again when it returns within the period.
func TestQuarantineFollowsAction(t *testing.T) {
	clk := &simClock{now: t0}
	tab := &actions{m: map[string]Action{"shop/cart-0": Block}}
	d := New(Config{Action: Alert, ActionSet: true, ActionFor: tab.get, Now: clk.Now})
	r := rand.New(rand.NewPCG(13, 14))
	if at, _ := runTunnel(d, clk, r, "shop/cart-0", "evil.example.net", 50); at == 0 {
		t.Fatal("tunnel not suspected")
	}
	name := "a.evil.example.net."
	for _, step := range []struct {
		act  Action
		want bool
	}{{Block, true}, {Alert, false}, {Off, false}, {Block, true}} {
		tab.set("shop/cart-0", step.act)
		if got, _ := d.Blocked("shop/cart-0", name); got != step.want {
			t.Fatalf("action %v: blocked %v, want %v", step.act, got, step.want)
		}
	}
	clk.now = clk.now.Add(d.Config().Quarantine + time.Second)
	if got, _ := d.Blocked("shop/cart-0", name); got {
		t.Fatal("still blocked after the quarantine period")
	}
}

// TestDefaultOffPerWorkloadOn: with the node default Off, a workload set to
// Alert by ActionFor is still tracked and alerted.
func TestDefaultOffPerWorkloadOn(t *testing.T) {
	clk := &simClock{now: t0}
	tab := &actions{m: map[string]Action{"shop/cart-0": Alert}}
	d := New(Config{Action: Off, ActionSet: true, ActionFor: tab.get, Now: clk.Now})
	r := rand.New(rand.NewPCG(15, 16))
	if at, _ := runTunnel(d, clk, r, "shop/cart-1", "evil.example.org", 50); at != 0 || d.Len() != 0 {
		t.Fatalf("default Off: suspected at %d, %d pairs", at, d.Len())
	}
	if at, v := runTunnel(d, clk, r, "shop/cart-0", "evil.example.org", 50); at == 0 || at > 5 || v.Action != Alert {
		t.Fatalf("per-workload Alert: suspected at %d, %+v", at, v)
	}
}

// BenchmarkBlockedObserveActionFor is what the resolver does per cache miss
// (Check, which stands for Blocked too, then Observe) with a per-workload action lookup: half the
// workloads have their own action (Alert: Check returns at once), the rest
// take the default (Block: Check scores the query).
func BenchmarkBlockedObserveActionFor(b *testing.B) {
	clk := &simClock{now: t0}
	tab := &actions{m: map[string]Action{}}
	wls := make([]string, 64)
	for i := range wls {
		wls[i] = fmt.Sprintf("ns/app-%d", i)
		if i%2 == 0 {
			tab.m[wls[i]] = Alert
		}
	}
	d := New(Config{Action: Block, ActionSet: true, ActionFor: tab.get, Now: clk.Now})
	r := rand.New(rand.NewPCG(5, 6))
	names := make([]string, 4096)
	for i := range names {
		names[i] = pick(r, popular).domain
		if i%2 == 0 {
			names[i] = cdnName(r)
		}
		if i%3 == 0 {
			names[i] = pick(r, []string{"www", "api", "cdn"}) + "." + pick(r, popular).domain
		}
		names[i] += "."
	}
	for i := range names {
		d.Observe(wls[i%64], names[i], tA, 0, 60)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clk.now = clk.now.Add(time.Microsecond)
		w, n := wls[i%64], names[i%4096]
		if d.Check(w, n, tA).Blocked {
			b.Fatal("benign name refused")
		}
		d.Observe(w, n, tA, 0, 60)
	}
}

// TestCheckRefusesCrossingQuery: Check scores the query that would take the
// pair over the threshold before it is forwarded: under Block it refuses it,
// under Alert it reports it (once: Observe does not alert again) and lets it
// through; no answered query is needed either way.
func TestCheckRefusesCrossingQuery(t *testing.T) {
	for _, act := range []Action{Block, Alert} {
		clk := &simClock{now: t0}
		d := New(Config{Action: act, ActionSet: true, Now: clk.Now})
		r := rand.New(rand.NewPCG(17, 18))
		s := &tunnelState{domain: "c2.example.com.", chunk: 110}
		next := dnscat2(tTXT)
		refused, suspected, alertedAt := 0, 0, 0
		for i := 1; i <= 10 && refused == 0; i++ {
			q := next(r, s)
			clk.now = clk.now.Add(100 * time.Millisecond)
			v := d.Check("shop/cart-0", q.name, q.qtype)
			if v.Suspected {
				suspected++
				if alertedAt == 0 {
					alertedAt = i
				}
				if len(v.Reasons) == 0 || v.Features["encoded_bytes"] == 0 || v.Domain != "example.com" {
					t.Fatalf("verdict %+v", v)
				}
			}
			if v.Blocked {
				refused = i
				continue
			}
			if v := d.Observe("shop/cart-0", q.name, q.qtype, q.rcode, q.ans); v.Suspected {
				suspected++
			}
		}
		switch act {
		case Block:
			if refused == 0 || refused > 5 || suspected != 1 || alertedAt != refused {
				t.Fatalf("Block: refused at %d, alerted at %d, %d alerts", refused, alertedAt, suspected)
			}
			if b, _ := d.Blocked("shop/cart-0", "x.c2.example.com."); !b {
				t.Fatal("Block: pair not quarantined after Check refused")
			}
			t.Logf("Block: query %d refused before forwarding (%d data bytes out before it)", refused, (refused-1)*110)
		case Alert:
			if refused != 0 || suspected != 1 || alertedAt == 0 || alertedAt > 5 {
				t.Fatalf("Alert: refused at %d, alerted at %d, %d alerts", refused, alertedAt, suspected)
			}
			if b, _ := d.Blocked("shop/cart-0", "x.c2.example.com."); b {
				t.Fatal("Alert: pair quarantined")
			}
			t.Logf("Alert: query %d reported before forwarding", alertedAt)
		}
	}
}

// BenchmarkCheckObserveDistinct is the per-cache-miss cost (Check before
// forwarding, Observe after the answer) when every name is new: the memo
// serves Observe the names Check prepared, but nothing repeats across
// queries (65,536 distinct names over 4,096 registered domains, Alert by
// default; no pair gets near the threshold, so this is the quiet path).
func BenchmarkCheckObserveDistinct(b *testing.B) {
	clk := &simClock{now: t0}
	d := New(Config{Now: clk.Now})
	names := make([]string, 1<<16)
	for i := range names {
		names[i] = fmt.Sprintf("host%d.site%d.com.", i%16, i/16)
	}
	wls := make([]string, 64)
	for i := range wls {
		wls[i] = fmt.Sprintf("ns/app-%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clk.now = clk.now.Add(time.Microsecond)
		w, n := wls[i%64], names[i%len(names)]
		if d.Check(w, n, tA).Blocked {
			b.Fatal("benign name refused")
		}
		d.Observe(w, n, tA, 0, 60)
	}
}

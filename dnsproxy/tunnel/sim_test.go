package tunnel

// The simulation behind docs/detection.md. Full run (the numbers in the doc):
//
//	go test ./dnsproxy/tunnel -run 'TestSim' -v
//
// `make unit` runs it with -short (fewer workloads and sessions).

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)

type simClock struct{ now time.Time }

func (c *simClock) Now() time.Time { return c.now }

func simDetector(c *simClock, action Action) *Detector {
	return New(Config{Action: action, ActionSet: true, Now: c.Now, SearchDomains: []string{"ec2.internal"}})
}

// TestSimBenign: ≥ 3 million benign queries from ≥ 200 workloads over a
// simulated day; no alert, so no lookup blocked.
func TestSimBenign(t *testing.T) {
	nw, minutes := 240, 24*60
	if testing.Short() {
		nw, minutes = 60, 6*60
	}
	clk := &simClock{now: t0}
	d := simDetector(clk, Block)
	r := rand.New(rand.NewPCG(1, 2))
	wls := make([]*workload, nw)
	for i := range wls {
		wls[i] = newWorkload(r, i)
	}
	var (
		queries, scored int
		alerts          []string
		pairs           = map[string]struct{}{}
		maxScore        = map[string]float64{}
		buf             []query
	)
	start := time.Now()
	for m := range minutes {
		buf = buf[:0]
		type item struct {
			w *workload
			q query
		}
		var items []item
		for _, w := range wls {
			n := int(w.rate)
			if r.Float64() < w.rate-float64(n) {
				n++
			}
			// Busy hours: twice the rate from 08:00 to 20:00.
			if h := m / 60 % 24; h >= 8 && h < 20 {
				n *= 2
			}
			buf = buf[:0]
			for range n {
				buf = w.emit(r, buf)
			}
			buf = w.extra(r, m, buf)
			for _, q := range buf {
				items = append(items, item{w, q})
			}
		}
		r.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
		step := time.Minute / time.Duration(len(items)+1)
		for i, it := range items {
			clk.now = t0.Add(time.Duration(m)*time.Minute + time.Duration(i)*step)
			queries++
			// As the resolver does under Block: quarantine check, then the
			// pre-forward Check, then Observe with the answer.
			if blocked, _ := d.Blocked(it.w.key, it.q.name); blocked {
				t.Errorf("benign lookup blocked: %s %s", it.w.key, it.q.name)
			}
			if v := d.Check(it.w.key, it.q.name, it.q.qtype); v.Blocked {
				t.Errorf("benign lookup refused before forwarding: %s %s score %.2f", it.w.key, it.q.name, v.Score)
			}
			v := d.Observe(it.w.key, it.q.name, it.q.qtype, it.q.rcode, it.q.ans)
			if v.Domain == "" {
				continue
			}
			scored++
			pk := it.w.key + " " + v.Domain
			pairs[pk] = struct{}{}
			if v.Score > maxScore[v.Domain] {
				maxScore[v.Domain] = v.Score
			}
			if v.Suspected {
				alerts = append(alerts, fmt.Sprintf("%s %s score=%.2f %s %v", pk, it.q.name, v.Score, v.Reason(), v.Features))
			}
		}
	}
	elapsed := time.Since(start)
	if !testing.Short() && (queries < 3_000_000 || nw < 200) {
		t.Errorf("simulated %d queries from %d workloads; want ≥ 3,000,000 from ≥ 200", queries, nw)
	}
	for _, a := range alerts {
		t.Errorf("false positive: %s", a)
	}
	type kv struct {
		k string
		v float64
	}
	var top []kv
	for k, v := range maxScore {
		top = append(top, kv{k, v})
	}
	sort.Slice(top, func(i, j int) bool { return top[i].v > top[j].v })
	var sb strings.Builder
	for _, e := range top[:min(8, len(top))] {
		fmt.Fprintf(&sb, " %s=%.2f", e.k, e.v)
	}
	t.Logf("benign: %d queries (%d scored, rest cluster/search-path/allow-listed or single-label), %d workloads, %d (workload, domain) pairs, simulated %v in %v",
		queries, scored, nw, len(pairs), time.Duration(minutes)*time.Minute, elapsed.Round(time.Millisecond))
	t.Logf("benign: false positives %d (%.3g per query, %.3g per pair); highest domain scores:%s",
		len(alerts), float64(len(alerts))/float64(queries), float64(len(alerts))/float64(len(pairs)), sb.String())
}

type sessionResult struct {
	caught          bool
	queries, leaked int
	elapsed         time.Duration
	reasons         string
}

// runSession runs one synthetic tunnel session at rate bytes/s until the
// first alert or the time limit, on a fresh detector (pairs are independent).
func runSession(f family, seed uint64, rate float64, chunk int, limit time.Duration) sessionResult {
	clk := &simClock{now: t0}
	d := simDetector(clk, Alert)
	r := rand.New(rand.NewPCG(seed, 7))
	s := &tunnelState{domain: pick(r, []string{"t.evil-c2.com.", "x.data-sync.net.", "cdn-update.io.", "ns.exfil.example."}), id: fmt.Sprintf("%04x", r.IntN(65536)), chunk: chunk}
	wl := fmt.Sprintf("victim/pod-%d", seed)
	gap := time.Duration(float64(chunk) / rate * float64(time.Second))
	var res sessionResult
	for clk.now.Sub(t0) <= limit {
		q := f.next(r, s)
		res.queries++
		res.leaked += q.data
		v := d.Observe(wl, q.name, q.qtype, q.rcode, q.ans)
		if v.Suspected {
			res.caught, res.elapsed, res.reasons = true, clk.now.Sub(t0), v.Reason()
			return res
		}
		clk.now = clk.now.Add(gap)
	}
	return res
}

// TestSimTunnels: every synthetic tunnel family at ≥ 10 B/s is caught within
// 5 data queries or 1 KB leaked.
func TestSimTunnels(t *testing.T) {
	sessions := 200
	if testing.Short() {
		sessions = 20
	}
	total, caught, within := 0, 0, 0
	for fi, f := range tunnelFamilies {
		var worstQ, worstB, sumQ, sumB int
		for _, rate := range []float64{10, 100, 1000} {
			for i := range sessions / 3 {
				res := runSession(f, uint64(fi*100000+i*10)+uint64(rate), rate, f.chunk, time.Hour)
				total++
				if !res.caught {
					t.Errorf("%s at %v B/s (seed %d): not caught after %d queries, %d bytes", f.name, rate, i, res.queries, res.leaked)
					continue
				}
				caught++
				if res.queries <= 5 || res.leaked <= 1024 {
					within++
				}
				worstQ, worstB = max(worstQ, res.queries), max(worstB, res.leaked)
				sumQ += res.queries
				sumB += res.leaked
			}
		}
		n := sessions / 3 * 3
		t.Logf("| %s | %d B | %d/%d | %.1f | %d | %.0f | %d |", f.name, f.chunk, n, n, float64(sumQ)/float64(n), worstQ, float64(sumB)/float64(n), worstB)
	}
	t.Logf("tunnels: %d sessions, %d caught (%.2f%%), %d within 5 data queries or 1 KB (%.2f%%)", total, caught, 100*float64(caught)/float64(total), within, 100*float64(within)/float64(total))
	if float64(within) < 0.999*float64(total) {
		t.Errorf("only %d of %d sessions caught within 5 data queries or 1 KB", within, total)
	}
}

// TestSimSlowExfiltration: low-rate exfiltration from 100 B/s down to under
// 1 B/s; 1 B/s must be caught within an hour.
func TestSimSlowExfiltration(t *testing.T) {
	rates := []float64{100, 10, 1, 0.5, 0.2, 0.1, 0.08, 0.05}
	slowest := 0.0
	for _, rate := range rates {
		for _, f := range []family{tunnelFamilies[3], tunnelFamilies[6], tunnelFamilies[11]} {
			chunk := min(f.chunk, 30)
			if f.name == tunnelFamilies[11].name {
				chunk = 12
			}
			res := runSession(f, uint64(rate*1000)+uint64(len(f.name)), rate, chunk, time.Hour)
			if res.caught {
				t.Logf("slow %s at %v B/s (%d B/query): caught after %v, %d queries, %d bytes (%s)", f.name, rate, chunk, res.elapsed.Round(time.Second), res.queries, res.leaked, res.reasons)
				if slowest == 0 || rate < slowest {
					slowest = rate
				}
			} else {
				t.Logf("slow %s at %v B/s: not caught within an hour (%d queries, %d bytes)", f.name, rate, res.queries, res.leaked)
				if rate >= 1 {
					t.Errorf("%s at %v B/s not caught within an hour", f.name, rate)
				}
			}
		}
	}
	t.Logf("slowest rate caught within an hour (all three encodings): see above; lowest caught by any: %v B/s", slowest)
}

// TestMemoryBound: 1,000,000 distinct names (and registered domains) keep the
// tracked pairs at MaxPairs.
func TestMemoryBound(t *testing.T) {
	n := 1_000_000
	if testing.Short() {
		n = 100_000
	}
	clk := &simClock{now: t0}
	d := New(Config{Now: clk.Now, MaxPairs: 65536})
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range n {
		clk.now = clk.now.Add(time.Millisecond)
		name := randStr(r, alnum, 12) + "." + randStr(r, alnum, 8) + ".com."
		d.Observe(fmt.Sprintf("ns/w%d", i%500), name, tA, 0, 60)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if l := d.Len(); l > 65536 {
		t.Errorf("tracking %d pairs, want ≤ 65536", l)
	}
	t.Logf("%d distinct names: %d pairs tracked, heap %+.1f MiB", n, d.Len(), float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/(1<<20))
}

func BenchmarkObserve(b *testing.B) {
	clk := &simClock{now: t0}
	d := New(Config{Now: clk.Now})
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
	wls := make([]string, 64)
	for i := range wls {
		wls[i] = fmt.Sprintf("ns/app-%d", i)
	}
	for i := range names { // warm: every pair exists
		d.Observe(wls[i%64], names[i], tA, 0, 60)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clk.now = clk.now.Add(time.Microsecond)
		d.Observe(wls[i%64], names[i%4096], tA, 0, 60)
	}
}

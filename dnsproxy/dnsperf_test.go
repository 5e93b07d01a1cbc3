package dnsproxy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/event"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/coredns"
	"github.com/egressd/egressd/test/testenv"
)

// TestDNSPerfCacheHitVsCoreDNS measures cache-hit QPS of the resolver and of
// CoreDNS (cache + forward, the NodeLocal DNSCache configuration) side by side
// with dnsperf (DESIGN §8: ≥ 1.5× CoreDNS). A benchmark, not a timed test: it
// runs with -bench and logs the numbers:
//
//	go test -run X -bench DNSPerf -benchtime 1x ./dnsproxy/
func BenchmarkDNSPerfCacheHitVsCoreDNS(b *testing.B) {
	t := b
	perf := testenv.RequireTools(t, "dnsperf")[0]
	up := startCoreDNS(t)
	// Events are built and handed to a reporter that counts them (the test
	// recorder would keep millions).
	rep := &countingSink{}
	h := start(t, []string{up}, func(c *Config, d *Deps) { c.UDPSockets = 2; c.MaxTTL = time.Hour; d.Events = rep })
	// CoreDNS as cache+forward in front of the same authoritative server.
	dir := t.TempDir()
	port := freePort(t)
	corefile := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n cache 3600\n forward . %s\n}\n", port, up)
	os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644)
	cmd := exec.Command(coredns.Binary(t), "-conf", filepath.Join(dir, "Corefile"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	cdns := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; i < 50; i++ {
		m := new(dns.Msg)
		m.SetQuestion("api.test.", dns.TypeA)
		if r, _, err := (&dns.Client{Timeout: 200 * time.Millisecond}).Exchange(m, cdns); err == nil && len(r.Answer) == 1 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	queries := filepath.Join(dir, "queries")
	os.WriteFile(queries, []byte("api.test A\napi.test AAAA\nwww.test A\nlong.test A\ntxt.test TXT\n"), 0o644)
	secs := os.Getenv("EGRESSD_DNSPERF_SECONDS")
	if secs == "" {
		secs = "10"
	}
	rounds := 3
	if r, err := strconv.Atoi(os.Getenv("EGRESSD_DNSPERF_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	// from: the source address of dnsperf's queries (127.0.0.1 is not a
	// workload; 127.0.0.2 is payments/gateway-0, whose lookups are decided
	// and programmed into the (fake) sets).
	run := func(addr, from string) float64 {
		host, p, _ := strings.Cut(addr, ":")
		args := []string{"-s", host, "-p", p, "-a", from, "-d", queries, "-l", secs, "-c", "4", "-T", "2", "-Q", "500000"}
		out, err := exec.Command(perf, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dnsperf: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("dnsperf output:\n%s", out)
		}
		q, _ := strconv.ParseFloat(string(m[1]), 64)
		lat := regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`).FindSubmatch(out)
		t.Logf("dnsperf %s: %s: %.0f qps, average latency %s s", strings.Join(args, " "), addr, q, lat[1])
		return q
	}
	median := func(v []float64) float64 {
		s := slices.Clone(v)
		slices.Sort(s)
		return s[len(s)/2]
	}
	var ours, wl, theirs, ratios []float64
	for i := 0; i < rounds; i++ {
		o := run(h.addr, "127.0.0.1")
		w := run(h.addr, "127.0.0.2")
		c := run(cdns, "127.0.0.1")
		ours, wl, theirs, ratios = append(ours, o), append(wl, w), append(theirs, c), append(ratios, o/c)
	}
	t.Logf("medians of %d rounds: egressd %.0f qps (not a workload), %.0f qps (workload, policy + sets), CoreDNS %.0f qps", rounds, median(ours), median(wl), median(theirs))
	t.Logf("egressd/CoreDNS cache-hit QPS ratio: median %.2f (per round %.2f), workload %.2f (budget ≥ 1.5)", median(ratios), ratios, median(wl)/median(theirs))
	st := h.srv.Stats()
	t.Logf("egressd stats: queries %d (fast path %d), cache hits %d, misses %d, set writes %d, events %d", st.Queries, h.srv.fast.hits.Load(), st.CacheHits, st.CacheMisses, st.SetWrites, rep.n.Load())
}

type countingSink struct{ n atomic.Uint64 }

func (r *countingSink) Emit(context.Context, event.Event) { r.n.Add(1) }

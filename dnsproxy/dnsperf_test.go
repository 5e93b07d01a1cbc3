package dnsproxy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/testenv"
)

// TestDNSPerfCacheHitVsCoreDNS measures cache-hit QPS of the resolver and of
// CoreDNS (cache + forward, the NodeLocal DNSCache configuration) side by side
// with dnsperf (DESIGN §8: ≥ 1.5× CoreDNS). A benchmark, not a timed test: it
// runs only with EGRESSD_DNSPERF=1 and logs the numbers.
func TestDNSPerfCacheHitVsCoreDNS(t *testing.T) {
	if os.Getenv("EGRESSD_DNSPERF") != "1" {
		t.Skip("set EGRESSD_DNSPERF=1 to run the dnsperf comparison")
	}
	perf := testenv.RequireTools(t, "dnsperf")[0]
	up := startCoreDNS(t)
	h := start(t, []string{up}, func(c *Config, _ *Deps) { c.UDPSockets = 2; c.MaxTTL = time.Hour })
	// CoreDNS as cache+forward in front of the same authoritative server.
	dir := t.TempDir()
	port := freePort(t)
	corefile := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n cache 3600\n forward . %s\n}\n", port, up)
	os.WriteFile(filepath.Join(dir, "Corefile"), []byte(corefile), 0o644)
	cmd := exec.Command(coreDNSBinary(t), "-conf", filepath.Join(dir, "Corefile"))
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
	run := func(addr string) float64 {
		host, p, _ := strings.Cut(addr, ":")
		out, err := exec.Command(perf, "-s", host, "-p", p, "-d", queries, "-l", secs, "-c", "4", "-Q", "200000").CombinedOutput()
		if err != nil {
			t.Fatalf("dnsperf: %v\n%s", err, out)
		}
		m := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("dnsperf output:\n%s", out)
		}
		q, _ := strconv.ParseFloat(string(m[1]), 64)
		lat := regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`).FindSubmatch(out)
		t.Logf("%s: %.0f qps, average latency %s s", addr, q, lat[1])
		return q
	}
	ours := run(h.addr)
	theirs := run(cdns)
	t.Logf("egressd/CoreDNS cache-hit QPS ratio: %.2f (budget ≥ 1.5)", ours/theirs)
}

package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/ipset"
	"github.com/egressd/egressd/ipset/fake"
)

const benchPolicies = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: apis, namespace: bench}
spec:
  mode: Enforce
  podSelector: {}
  egress:
  - name: apis
    action: Allow
    to:
    - fqdn: {matchName: api.test}
    ports: [{port: 443, protocol: TCP}]
`

const benchWorkloads = `namespaces:
- {name: bench}
pods:
- {namespace: bench, name: client-0, ips: [127.0.0.2]}
`

var benchClient = netip.MustParseAddr("127.0.0.2")

// benchUpstream answers every A query with 192.0.2.1, TTL 60, on UDP.
func benchUpstream(b *testing.B) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := new(dns.Msg)
		r.SetReply(q)
		r.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}}
		w.WriteMsg(r)
	})}
	go srv.ActivateAndServe()
	b.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// otlpSink is an OTLP/HTTP trace receiver that accepts every export and
// counts the bytes.
func otlpSink(b *testing.B) (string, *atomic.Int64) {
	var n atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := io.Copy(io.Discard, r.Body)
		n.Add(c)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(s.Close)
	return s.URL, &n
}

// BenchmarkAgentAllowedCacheMissAt5kQPS is the resolver's allowed cache-miss
// latency at 5,000 QPS (open loop, interleaved with the same query stream
// sent straight to the upstream, so that both see the same load) with the agent's own telemetry: the
// event sinks, observer and metrics cmd/egressd wires (audit log file, OTLP/HTTP
// trace exporter to a local receiver, Prometheus metrics), the policy engine
// of the flag-given files, and a set write per query (fake sets; the kernel
// write is measured in docs/benchmarks.md "Kernel set writes"). It reports
// p50/p99 through the resolver, straight to the upstream, and the difference,
// for the default allowed-span sampling and for every allowed lookup a span.
// b.N is ignored: 3 s each way (EGRESSD_LOAD_SECONDS).
func BenchmarkAgentAllowedCacheMissAt5kQPS(b *testing.B) {
	for _, sample := range []float64{0.01, 1} {
		b.Run("sample="+strconv.FormatFloat(sample, 'f', -1, 64), func(b *testing.B) {
			benchAgentCacheMiss(b, sample)
		})
	}
}

func benchAgentCacheMiss(b *testing.B, sample float64) {
	dir := b.TempDir()
	pol, wls := filepath.Join(dir, "policies.yaml"), filepath.Join(dir, "workloads.yaml")
	os.WriteFile(pol, []byte(benchPolicies), 0o644)
	os.WriteFile(wls, []byte(benchWorkloads), 0o644)
	up := benchUpstream(b)
	otlp, exported := otlpSink(b)
	cfg, err := ParseFlags([]string{
		"--policies", pol, "--workloads", wls, "--dataplane", "none", "--lookups", "Enforce",
		"--listen", "127.0.0.1:0", "--upstream", up, "--state-file", "",
		"--audit-log", filepath.Join(dir, "audit.jsonl"),
		"--otlp-endpoint", otlp, "--otlp-protocol", "http",
		"--trace-sample-allowed", strconv.FormatFloat(sample, 'f', -1, 64),
		"--cache-size", "-1",
		// one client at full speed: the per-client limits would measure themselves
		"--rate-limit", "0", "--rrl-rate", "0", "--max-inflight-per-client", "0",
	}, nil)
	if err != nil {
		b.Fatal(err)
	}
	a := New(cfg, slog.New(slog.DiscardHandler))
	stopTelemetry, err := a.startTelemetry(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer stopTelemetry()
	if _, err := a.source.Load(); err != nil {
		b.Fatal(err)
	}
	key, ok := a.store.WorkloadByIP(benchClient)
	if !ok {
		b.Fatal("no workload for", benchClient)
	}
	rules := a.engine.FQDNRules(key, "api.test.")
	if len(rules) == 0 {
		b.Fatal("no FQDN rule allows api.test")
	}
	sets := fake.New()
	for _, r := range rules {
		for _, f := range []ipset.Family{ipset.IPv4, ipset.IPv6} {
			if err := sets.Ensure(context.Background(), ipset.Spec{Name: fqdnSetName(r, f), Family: f, Kind: ipset.KindAddrPair, Timeout: true}); err != nil {
				b.Fatal(err)
			}
		}
	}
	rc, err := cfg.resolverConfig()
	if err != nil {
		b.Fatal(err)
	}
	rc.UDPSockets, rc.HealthInterval = 2, -1
	srv, err := dnsproxy.New(rc, dnsproxy.Deps{Engine: a.engine, Events: a.dnsEvents(), Observer: a.observer(), Sets: sets, SetNamer: fqdnSetName})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	addr := srv.Addrs()[0].String()

	secs := 3 * time.Second
	if d, err := time.ParseDuration(os.Getenv("EGRESSD_LOAD_SECONDS") + "s"); err == nil && d > 0 {
		secs = d
	}
	loadPair(b, addr, up, 200*time.Millisecond) // warm up
	b.ResetTimer()
	via, direct := loadPair(b, addr, up, secs)
	b.StopTimer()
	pct := func(d []time.Duration, p float64) time.Duration {
		s := slices.Clone(d)
		slices.Sort(s)
		return s[min(len(s)-1, int(float64(len(s))*p))]
	}
	for _, p := range []struct {
		name string
		q    float64
	}{{"p50", 0.50}, {"p99", 0.99}, {"p999", 0.999}} {
		b.ReportMetric(float64(pct(via, p.q).Microseconds()), p.name+"-µs")
		b.ReportMetric(float64(pct(direct, p.q).Microseconds()), p.name+"-direct-µs")
		b.ReportMetric(float64((pct(via, p.q) - pct(direct, p.q)).Microseconds()), p.name+"-added-µs")
	}
	st := srv.Stats()
	if st.SetWrites == 0 || st.CacheHits != 0 {
		b.Fatalf("stats %+v: want set writes and no cache hits", st)
	}
	stopTelemetry() // flushes the spans
	b.Logf("sample %v: %d queries, %d set writes, %d bytes of spans exported", sample, st.Queries, st.SetWrites, exported.Load())
}

// loadPair sends A queries for api.test from benchClient at 5,000 per second
// to each of via and direct, open loop and interleaved (query i leaves for
// both at start + i/5000), so that both streams see the same machine load,
// and returns the latency of every NOERROR answer of each. Queries without
// one (lost, or SERVFAIL after the upstream timeout because a datagram was
// lost) are reported as unanswered, for each stream.
func loadPair(b *testing.B, via, direct string, d time.Duration) (viaLat, directLat []time.Duration) {
	const qps = 5000
	total := int(d.Seconds() * qps)
	type stream struct {
		c    *net.UDPConn
		sent []time.Time
		lat  []time.Duration
		mu   sync.Mutex
		// failed counts answers other than NOERROR; they are not in lat.
		failed int
		done   chan struct{}
	}
	open := func(addr string) *stream {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: benchClient.AsSlice()}, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			b.Fatal(err)
		}
		st := &stream{c: c, sent: make([]time.Time, total), lat: make([]time.Duration, 0, total), done: make(chan struct{})}
		go func() {
			defer close(st.done)
			buf := make([]byte, 1500)
			r := new(dns.Msg)
			for {
				c.SetReadDeadline(time.Now().Add(4 * time.Second)) // > the upstream timeout (2s)
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				at := time.Now()
				if r.Unpack(buf[:n]) != nil || int(r.Id) >= total {
					continue
				}
				st.mu.Lock()
				if r.Rcode == dns.RcodeSuccess {
					st.lat = append(st.lat, at.Sub(st.sent[r.Id]))
				} else {
					st.failed++ // SERVFAIL after the upstream timeout: its datagram was lost
				}
				full := len(st.lat)+st.failed == total
				st.mu.Unlock()
				if full {
					return
				}
			}
		}()
		return st
	}
	streams := []*stream{open(via), open(direct)}
	q := new(dns.Msg)
	q.SetQuestion("api.test.", dns.TypeA)
	q.SetEdns0(1232, false)
	start := time.Now()
	for i := 0; i < total; i++ {
		if w := time.Until(start.Add(time.Duration(i) * time.Second / qps)); w > 0 {
			time.Sleep(w)
		}
		q.Id = uint16(i)
		wire, _ := q.Pack()
		for j, st := range streams {
			k := (i + j) % 2 // alternate which stream goes first
			st = streams[k]
			st.mu.Lock()
			st.sent[i] = time.Now()
			st.mu.Unlock()
			st.c.Write(wire)
		}
	}
	for i, st := range streams {
		<-st.done
		st.c.Close()
		if d >= time.Second && len(st.lat) < total*9/10 {
			b.Errorf("%s: %d of %d answered", st.c.RemoteAddr(), len(st.lat), total)
		}
		b.ReportMetric(float64(total-len(st.lat)), []string{"unanswered", "unanswered-direct"}[i])
	}
	return streams[0].lat, streams[1].lat
}

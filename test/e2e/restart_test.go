package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/dnsproxy"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

// dnsperfStats parses dnsperf's summary.
func dnsperfStats(t *testing.T, out string) (sent, completed, lost int, codes string) {
	t.Helper()
	num := func(label string) int {
		m := regexp.MustCompile(label + `:\s+(\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("dnsperf output has no %q:\n%s", label, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	if m := regexp.MustCompile(`Response codes:\s+(.*)`).FindStringSubmatch(out); m != nil {
		codes = m[1]
	}
	return num("Queries sent"), num("Queries completed"), num("Queries lost"), codes
}

// TestRestartNoOutage replaces the agent under dnsperf load the way a rolling update
// does: the new process starts and binds the same addresses (SO_REUSEPORT), becomes
// ready, then the old one gets SIGTERM, steers new queries to the new sockets, serves
// what it had queued and exits. No query may be lost; the pod's connection to an
// address it resolved before the restart stays allowed (a live one and a new one), and
// the new process took over the name → IP state from the state file.
func TestRestartNoOutage(t *testing.T) {
	w := newWorld(t)
	testenv.RequireTools(t, "dnsperf")
	old := w.startAgent(agentOpts{})

	wantRcode(t, w.query("udp", "api.example.com", dns.TypeA), dns.RcodeSuccess, "api.example.com before the restart")
	live, err := w.pr.OpenConn(context.Background(), w.pod, extV4, 80)
	if err != nil {
		t.Fatalf("connection before the restart: %v", err)
	}
	defer live.Close()

	queries := w.write("queries.txt", "api.example.com A\nx.wild.example.com A\nc.deep.example.com A\nalias.example.com A\napi.example.com AAAA\na.b.c.deep.example.com A\n")
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		out, err := w.pod.Exec(ctx, "", "dnsperf", "-s", resolverIP, "-d", queries, "-l", "8", "-Q", "2000", "-c", "4", "-t", "3")
		done <- result{out, err}
	}()
	time.Sleep(2 * time.Second)       // under load before the replacement starts (not an assertion)
	next := w.startAgent(agentOpts{}) // the same --http-addr: bound with SO_REUSEPORT
	old.stop()
	r := <-done
	if r.err != nil {
		t.Fatalf("dnsperf: %v\n%s", r.err, r.out)
	}
	sent, completed, lost, codes := dnsperfStats(t, string(r.out))
	t.Logf("restart under dnsperf: sent %d, completed %d, lost %d; response codes %s", sent, completed, lost, codes)
	if sent == 0 || lost != 0 || completed != sent {
		t.Fatalf("queries lost across the restart:\n%s\nold agent:\n%s", r.out, netmodel.Tail(old.Out.String(), 3000))
	}
	if strings.Contains(codes, "SERVFAIL") || strings.Contains(codes, "REFUSED") {
		t.Fatalf("failed answers across the restart: %s", codes)
	}

	// The new process serves --http-addr alone now.
	next.waitReady()

	// Right after the restart, without a new lookup: the live connection and a new one.
	if !live.Alive(2 * time.Second) {
		t.Fatal("the connection opened before the restart was cut")
	}
	if !w.connect(extV4) {
		t.Fatalf("a new connection to %v (resolved before the restart) was dropped", extV4)
	}
	if w.connect(neverAsked) {
		t.Fatalf("%v, never resolved, reachable after the restart", neverAsked)
	}
	// The new process took over the name → IP state: its own checkpoint has it.
	path := filepath.Join(w.dir, "state.json")
	var cp dnsproxy.Checkpoint
	found := false
	for i := 0; i < 100 && !found; i++ {
		time.Sleep(100 * time.Millisecond)
		if cp, err = dnsproxy.ReadCheckpoint(path); err != nil || cp.PID != next.Cmd.Process.Pid {
			continue
		}
		for _, e := range cp.Entries {
			if e.Workload == "builds/runner-0" && e.Name == "api.example.com." && e.IP == extV4 && e.Expires.After(time.Now()) {
				found = true
			}
		}
	}
	if !found {
		b, _ := os.ReadFile(path)
		t.Fatalf("the new process's state file lacks builds/runner-0 api.example.com → %v:\n%s", extV4, b)
	}
	if !strings.Contains(next.Out.String(), "state restored") {
		t.Errorf("the new process did not log a restore:\n%s", next.Out.String())
	}
	t.Logf("new process state: %d entries", len(cp.Entries))
	_ = netmodel.TCP
}

// TestRestartKeepsCache: an answer cached by the old process is answered by the
// new one after the restart with the upstream gone (the cache travels in the
// state file), and its address is still in the kernel set.
func TestRestartKeepsCache(t *testing.T) {
	w := newWorld(t)
	old := w.startAgent(agentOpts{})
	r := w.query("udp", "api.example.com", dns.TypeA)
	wantRcode(t, r, dns.RcodeSuccess, "api.example.com before the restart")

	// The old process's periodic checkpoint (every 200ms) carries the answer.
	path := filepath.Join(w.dir, "state.json")
	cached := func(cp dnsproxy.Checkpoint) bool {
		for _, ca := range cp.Cache {
			m := new(dns.Msg)
			if m.Unpack(ca.Msg) == nil && m.Question[0].Name == "api.example.com." && m.Question[0].Qtype == dns.TypeA && ca.Expires.After(time.Now()) {
				return true
			}
		}
		return false
	}
	found := false
	for i := 0; i < 100 && !found; i++ {
		cp, err := dnsproxy.ReadCheckpoint(path)
		found = err == nil && cp.PID == old.Cmd.Process.Pid && cached(cp)
		if !found {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !found {
		b, _ := os.ReadFile(path)
		t.Fatalf("the old process's state file has no cached api.example.com A:\n%s", netmodel.Tail(string(b), 2000))
	}

	next := w.startAgent(agentOpts{})
	old.stop()
	// The upstream goes away.
	w.coredns.Cmd.Process.Kill()
	<-w.coredns.Exited
	if _, err := w.exchange(w.node.NS, upstreamAddr, "udp", "api.example.com.", dns.TypeA, time.Second); err == nil {
		t.Fatal("the upstream still answers")
	}

	r = w.query("udp", "api.example.com", dns.TypeA)
	wantRcode(t, r, dns.RcodeSuccess, "api.example.com after the restart, upstream down")
	if ips := netmodel.AnswerAddrs(r); len(ips) != 1 || ips[0] != extV4 || r.Answer[0].Header().Ttl > 60 {
		t.Fatalf("answer from the restored cache: %v", r.Answer)
	}
	r = w.query("tcp", "api.example.com", dns.TypeA)
	wantRcode(t, r, dns.RcodeSuccess, "api.example.com over TCP after the restart, upstream down")
	if !regexp.MustCompile(`state restored.* cached-answers=[1-9]`).MatchString(next.Out.String()) {
		t.Errorf("the new process did not log restored cached answers:\n%s", netmodel.Tail(next.Out.String(), 3000))
	}
	// Not cached before: the new process has no upstream for it.
	r = w.query("udp", "x.wild.example.com", dns.TypeA)
	wantRcode(t, r, dns.RcodeServerFailure, "x.wild.example.com, never cached, upstream down")

	// The answer's address is in the kernel set and the pod reaches it.
	nft, err := w.node.Exec(t.Context(), "", "nft", "list", "table", "inet", "egressd")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(nft), w.pod.IPv4.String()+" . "+extV4.String()) {
		t.Errorf("kernel set lacks %v . %v:\n%s", w.pod.IPv4, extV4, nft)
	}
	if !w.connect(extV4) {
		t.Fatalf("connection to %v after the restart failed", extV4)
	}
}

// TestCorruptStateFileColdStart: a state file that is not a checkpoint is
// reported and the agent starts cold, serving queries.
func TestCorruptStateFileColdStart(t *testing.T) {
	w := newWorld(t)
	w.write("state.json", `{"apiVersion":"v1","kind":"ConfigMap","data":{`)
	a := w.startAgent(agentOpts{})
	wantRcode(t, w.query("udp", "api.example.com", dns.TypeA), dns.RcodeSuccess, "api.example.com after a cold start")
	if out := a.Out.String(); !strings.Contains(out, "state file unusable") || !strings.Contains(out, "not a checkpoint") {
		t.Errorf("no clear error about the state file:\n%s", netmodel.Tail(out, 3000))
	}
}

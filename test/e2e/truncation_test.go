package e2e

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/netmodel"
)

// bigIPs are the bigCount addresses of a big.example.com name (10.98.net.x).
func bigIPs(net int) []netip.Addr {
	var out []netip.Addr
	for i := 1; i <= bigCount; i++ {
		out = append(out, netip.AddrFrom4([4]byte{10, 98, byte(net), byte(i)}))
	}
	return out
}

var digHeader = regexp.MustCompile(`;; flags: ([a-z ]*);.*ANSWER: (\d+),`)

// digFlags returns the header flags and the answer count of dig's output.
func digFlags(t *testing.T, out string) (flags []string, answers int) {
	t.Helper()
	m := digHeader.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no header in dig output:\n%s", out)
	}
	n, _ := strconv.Atoi(m[2])
	return strings.Fields(m[1]), n
}

func has(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

// upstreamQueries returns the protocols ("udp", "tcp") of the queries for
// name CoreDNS logged (big.example.com only).
func (w *world) upstreamQueries(name string) []string {
	var out []string
	for _, l := range strings.Split(w.coredns.Out.String(), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && strings.Contains(l, " "+name+" ") {
			for _, p := range f {
				if p == "udp" || p == "tcp" {
					out = append(out, p)
					break
				}
			}
		}
	}
	return out
}

// TestTruncation against CoreDNS serving names of 40 A records (about 700
// bytes) from a server block that truncates its UDP answers at 512 bytes:
//
//   - a client without EDNS0 (512 bytes) gets TC=1 over UDP from egressd, and
//     its TCP retry gets the whole answer;
//   - egressd asked the upstream over UDP, got TC and asked again over TCP;
//   - every address of the answer is in the kernel set when the truncated
//     reply arrives: the pod connects to all 40 before any TCP retry
//     (egressd programs the whole upstream answer, not the part that fitted);
//   - a client with a 4096-byte buffer gets all 40 over UDP, although the
//     upstream's UDP answer to egressd was truncated.
func TestTruncation(t *testing.T) {
	w := newWorld(t)
	a := w.startAgent(agentOpts{})

	t.Run("512-byte client: TC, every address programmed, TCP retry complete", func(t *testing.T) {
		out := w.dig("+noedns", "+notcp", "+ignore", "+tries=1", "+time=5", "many.big.example.com", "A")
		flags, n := digFlags(t, out)
		if digStatus(out) != "NOERROR" || !has(flags, "tc") || n >= bigCount {
			t.Fatalf("UDP without EDNS0: want NOERROR, TC and a partial answer; got flags %v, %d answers:\n%s", flags, n, out)
		}
		wantUDPAndTCPRetry(t, w, "many.big.example.com.")
		// Before any TCP retry: every address of the whole answer is allowed.
		var failed []string
		for _, ip := range bigIPs(1) {
			if !w.connect(ip) {
				failed = append(failed, ip.String())
			}
		}
		if len(failed) > 0 {
			t.Fatalf("after the truncated reply, %d/%d addresses not allowed: %v", len(failed), bigCount, failed)
		}
		nft, err := w.node.Exec(t.Context(), "", "nft", "list", "table", "inet", "egressd")
		if err != nil {
			t.Fatal(err)
		}
		for _, ip := range bigIPs(1) {
			if !strings.Contains(string(nft), fmt.Sprintf("%s . %s", w.pod.IPv4, ip)) {
				t.Errorf("kernel set lacks %v . %v", w.pod.IPv4, ip)
			}
		}
		out = w.dig("+tcp", "+tries=1", "+time=5", "many.big.example.com", "A")
		flags, n = digFlags(t, out)
		if digStatus(out) != "NOERROR" || has(flags, "tc") || n != bigCount {
			t.Fatalf("TCP retry: flags %v, %d answers, want %d:\n%s", flags, n, bigCount, out)
		}
	})
	t.Run("4096-byte client: whole answer over UDP though the upstream truncated", func(t *testing.T) {
		out := w.dig("+bufsize=4096", "+notcp", "+ignore", "+tries=1", "+time=5", "more.big.example.com", "A")
		flags, n := digFlags(t, out)
		if digStatus(out) != "NOERROR" || has(flags, "tc") || n != bigCount {
			t.Fatalf("UDP with a 4096-byte buffer: flags %v, %d answers, want %d without TC:\n%s", flags, n, bigCount, out)
		}
		wantUDPAndTCPRetry(t, w, "more.big.example.com.")
		for _, ip := range bigIPs(2) {
			if !w.connect(ip) {
				t.Fatalf("%v of the answer not allowed", ip)
			}
		}
	})
	if t.Failed() {
		t.Logf("agent:\n%s", netmodel.Tail(a.Out.String(), 3000))
	}
}

// wantUDPAndTCPRetry checks that egressd asked the upstream for name once over
// UDP (answered truncated) and once over TCP. CoreDNS logs a query after
// answering it, so the two log lines may come in either order.
func wantUDPAndTCPRetry(t *testing.T, w *world, name string) {
	t.Helper()
	got := w.upstreamQueries(name)
	if sorted := slices.Sorted(slices.Values(got)); !slices.Equal(sorted, []string{"tcp", "udp"}) {
		t.Errorf("egressd's upstream queries for %s: %v, want one over udp (truncated) and its tcp retry", name, got)
	}
}

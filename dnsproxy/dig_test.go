package dnsproxy

import (
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// dig runs the real dig against the resolver and returns its output.
func dig(t *testing.T, h *harness, from netip.Addr, args ...string) string {
	t.Helper()
	bin := testenv.RequireTools(t, "dig")[0]
	host, port, _ := strings.Cut(h.addr, ":")
	full := append([]string{"@" + host, "-p", port, "-b", from.String(), "+tries=1", "+time=3"}, args...)
	out, err := exec.Command(bin, full...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", full, err, out)
	}
	return string(out)
}

var digStatus = regexp.MustCompile(`status: (\w+)`)

func status(out string) string {
	if m := digStatus.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

// answers returns the answer lines of dig +noall +answer output.
func answerLines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, ";") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	return lines
}

func TestDigClients(t *testing.T) {
	testenv.RequireTools(t, "dig")
	up := startCoreDNS(t)
	h := start(t, []string{up}, func(c *Config, _ *Deps) { c.MaxUDPSize = 4096 })

	t.Run("udp-cname-chain", func(t *testing.T) {
		out := dig(t, h, gatewayIP, "+noall", "+answer", "www.test", "A")
		got := answerLines(out)
		if len(got) != 4 || !strings.Contains(out, "edge2.cdn.test.") || !strings.Contains(out, "192.0.2.21") {
			t.Fatalf("answer:\n%s", out)
		}
		if p := pairs(t, h.sets, setName(ruleWWW, 4)); len(p) != 2 {
			t.Errorf("www pairs %v", p)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		out := dig(t, h, gatewayIP, "+tcp", "api.test", "AAAA")
		if status(out) != "NOERROR" || !strings.Contains(out, "2001:db8::10") {
			t.Fatalf("%s", out)
		}
		if p := pairs(t, h.sets, setName(ruleApis, 6)); len(p) != 1 {
			t.Errorf("ipv6 pairs %v", p)
		}
	})
	t.Run("norec", func(t *testing.T) {
		out := dig(t, h, runnerIP, "+norec", "api.test", "A")
		if status(out) != "NOERROR" || !strings.Contains(out, "192.0.2.10") {
			t.Fatalf("%s", out)
		}
		if strings.Contains(out, " rd ") || strings.Contains(out, " rd;") {
			t.Errorf("RD echoed although not asked:\n%s", out)
		}
	})
	t.Run("bufsize-512-truncates", func(t *testing.T) {
		out := dig(t, h, runnerIP, "+ignore", "+bufsize=512", "big.test", "A")
		if !regexp.MustCompile(`flags:[^;]* tc`).MatchString(out) {
			t.Fatalf("no TC:\n%s", out)
		}
	})
	t.Run("bufsize-4096-whole-answer", func(t *testing.T) {
		out := dig(t, h, runnerIP, "+ignore", "+bufsize=4096", "+noall", "+answer", "big.test", "A")
		if n := len(answerLines(out)); n != bigCount {
			t.Fatalf("%d answers", n)
		}
	})
	t.Run("blocked-ede", func(t *testing.T) {
		out := dig(t, h, runnerIP, "pool.minepool.test", "A")
		if status(out) != "NXDOMAIN" || !strings.Contains(out, "EDE: 15 (Blocked)") ||
			!strings.Contains(out, "egressd: blocked by ClusterFirewallPolicy/deny-mining#mining-pools") {
			t.Fatalf("%s", out)
		}
	})
	t.Run("nxdomain", func(t *testing.T) {
		out := dig(t, h, unknownIP, "nope.test", "A")
		if status(out) != "NXDOMAIN" || strings.Contains(out, "EDE") {
			t.Fatalf("%s", out)
		}
	})
}

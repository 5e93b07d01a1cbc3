package egress_test

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/test/testenv"
)

// TestDNSInterceptBeforeKubeProxy: the interception chain runs at dstnat - 5,
// strictly before kube-proxy's Service DNAT (dstnat), and a chain an earlier
// release left at dstnat (a tie with kube-proxy) is replaced, its rules with it.
func TestDNSInterceptBeforeKubeProxy(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "nft", "nsenter")
	fd := throwawayNetNS(t)
	nft := func(args ...string) string {
		t.Helper()
		cmd := append([]string{fmt.Sprintf("--net=/proc/%d/fd/%d", os.Getpid(), fd), "nft"}, args...)
		out, err := exec.Command("nsenter", cmd...).CombinedOutput()
		if err != nil {
			t.Fatalf("nft %v: %v %s", args, err, out)
		}
		return string(out)
	}
	// The earlier release's chain: priority dstnat, one rule.
	nft("add", "table", "inet", "egressd")
	nft("add", "chain", "inet", "egressd", egress.DNSInterceptChain, "{ type nat hook prerouting priority dstnat; policy accept; }")
	nft("add", "rule", "inet", "egressd", egress.DNSInterceptChain, "ip daddr 10.96.0.99 udp dport 53 dnat ip to 169.254.20.10:53")

	d := egress.DNSIntercept{NetNS: fd,
		Services: []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53")},
		To4:      netip.MustParseAddrPort("169.254.20.10:53")}
	for range 2 { // the upgrade, then an unchanged re-apply
		if err := egress.ApplyDNSIntercept(d); err != nil {
			t.Fatal(err)
		}
		got := nft("list", "chain", "inet", "egressd", egress.DNSInterceptChain)
		if !strings.Contains(got, "hook prerouting priority dstnat - 5;") {
			t.Errorf("chain priority is not dstnat - 5:\n%s", got)
		}
		if strings.Contains(got, "10.96.0.99") {
			t.Errorf("the earlier release's rule survived:\n%s", got)
		}
		if n := strings.Count(got, "dnat ip to 169.254.20.10:53"); n != 2 {
			t.Errorf("%d dnat rules, want 2 (UDP and TCP for 10.96.0.10):\n%s", n, got)
		}
	}
}

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

func TestApplyRedirectValidation(t *testing.T) {
	v4 := netip.MustParseAddrPort("169.254.20.10:15001")
	v6 := netip.MustParseAddrPort("[fd00::a9fe:140a]:15001")
	for _, r := range []egress.Redirect{
		{},                 // no proxy address
		{To4: v6},          // wrong family
		{To4: v4, To6: v4}, // wrong family
		{To6: netip.MustParseAddrPort("[::ffff:10.0.0.1]:1")}, // mapped
	} {
		if err := egress.ApplyRedirect(r); err == nil {
			t.Errorf("%+v: no error", r)
		}
	}
}

// nftList renders table inet egressd of the namespace fd with the nft CLI.
func nftList(t *testing.T, fd int) string {
	t.Helper()
	out, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/fd/%d", os.Getpid(), fd), "nft", "list", "table", "inet", "egressd").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v %s", err, out)
	}
	return string(out)
}

// TestApplyRedirectFamilies: both families get their rule, sources and
// target; a family without a target has no rule; RemoveRedirect removes it all.
func TestApplyRedirectFamilies(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "nft", "nsenter")
	fd := throwawayNetNS(t)
	r := egress.Redirect{NetNS: fd, Ports: []uint16{443, 8443},
		To4:     netip.MustParseAddrPort("169.254.20.10:15001"),
		To6:     netip.MustParseAddrPort("[fd00::a9fe:140a]:15001"),
		Sources: []netip.Addr{netip.MustParseAddr("10.0.1.5"), netip.MustParseAddr("fd00::1:5"), netip.MustParseAddr("::ffff:10.0.1.6")}}
	if err := egress.ApplyRedirect(r); err != nil {
		t.Fatal(err)
	}
	got := nftList(t, fd)
	for _, want := range []string{
		"dnat ip to 169.254.20.10:15001",
		"dnat ip6 to [fd00::a9fe:140a]:15001",
		"10.0.1.5", "10.0.1.6", "fd00::1:5",
		"443", "8443",
		"hook prerouting priority dstnat",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
	// IPv6 only; applying again replaces.
	r.To4 = netip.AddrPort{}
	r.Sources = r.Sources[1:2]
	if err := egress.ApplyRedirect(r); err != nil {
		t.Fatal(err)
	}
	got = nftList(t, fd)
	if strings.Contains(got, "dnat ip to") || strings.Contains(got, "10.0.1.5") || !strings.Contains(got, "dnat ip6 to [fd00::a9fe:140a]:15001") {
		t.Errorf("IPv6-only redirect:\n%s", got)
	}
	if ok, err := egress.RedirectInstalled("", fd); err != nil || !ok {
		t.Fatalf("installed: %v %v", ok, err)
	}
	if err := egress.RemoveRedirect("", fd); err != nil {
		t.Fatal(err)
	}
	if got = nftList(t, fd); strings.Contains(got, egress.RedirectChain) || strings.Contains(got, "l7_src") {
		t.Errorf("after RemoveRedirect:\n%s", got)
	}
}

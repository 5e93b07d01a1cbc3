package netmodel

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/test/testenv"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

var nftOnce sync.Once

// requireNft installs nftables with apt-get when nft is missing (root only), then needs it.
func requireNft(t *testing.T) {
	t.Helper()
	nftOnce.Do(func() {
		if _, err := exec.LookPath("nft"); err == nil || os.Geteuid() != 0 {
			return
		}
		install := func() error {
			cmd := exec.Command("apt-get", "install", "-y", "-q", "nftables")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}
		if err := install(); err != nil {
			exec.Command("apt-get", "update", "-q").Run()
			if err := install(); err != nil {
				t.Logf("apt-get install nftables: %v", err)
			}
		}
	})
	testenv.RequireTools(t, "nft")
}

// hostState is what the tests must leave untouched in the host namespace.
type hostState struct {
	forward string
	links   map[string]bool
}

func readHostState(t *testing.T) hostState {
	t.Helper()
	fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	s := hostState{forward: string(fwd), links: map[string]bool{}}
	for _, l := range links {
		s.links[l.Attrs().Name] = true
	}
	return s
}

// checkHost verifies that the test created nothing in the host namespace.
func checkHost(t *testing.T, before hostState, n *Node) {
	t.Helper()
	after := readHostState(t)
	if after.forward != before.forward {
		t.Errorf("host ip_forward changed: %q -> %q", before.forward, after.forward)
	}
	for _, p := range n.Pods() {
		if after.links[p.HostVeth] && !before.links[p.HostVeth] {
			t.Errorf("link %s appeared in the host namespace", p.HostVeth)
		}
	}
}

func buildNode(t *testing.T, names ...string) *Node {
	t.Helper()
	n := NewTestNode(t, Options{})
	start := time.Now()
	if _, err := n.AddPods(names...); err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddExternal(ExternalSpec{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("built node with %d pods + external in %v", len(names), time.Since(start))
	return n
}

func fullMatrix(t *testing.T, pr *Prober, n *Node) Reachability {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	all := Reachability{}
	for _, fam := range []Family{IPv4, IPv6} {
		r, err := pr.Matrix(ctx, n.Pods(), []int{80, 81}, []Protocol{TCP, UDP}, fam)
		if err != nil {
			t.Fatalf("matrix %v: %v", fam, err)
		}
		all.Merge(r)
	}
	t.Logf("matrix of %d cells in %v", len(all), time.Since(start))
	return all
}

func expectAll(n *Node, allow func(Cell) bool) Reachability {
	r := Reachability{}
	for _, fam := range []Family{IPv4, IPv6} {
		r.Merge(Expect(n.Pods(), []int{80, 81}, []Protocol{TCP, UDP}, fam, allow))
	}
	return r
}

func check(t *testing.T, what string, expected, actual Reachability) {
	t.Helper()
	if d := Diff(expected, actual); len(d) > 0 {
		t.Errorf("%s: %d cells differ, first %v\n%s", what, len(d), d[0], Format(expected, actual))
	}
}

func nft(t *testing.T, n *Node, ruleset string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := n.Exec(ctx, ruleset, "nft", "-f", "-"); err != nil {
		t.Fatalf("nft in node ns: %v\n%s", err, out)
	}
}

func TestMatrixOpenThenDrops(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	requireNft(t)
	host := readHostState(t)
	n := buildNode(t, "x/a", "x/b", "y/a")
	defer checkHost(t, host, n)
	xb, ya := n.Pod("x/b"), n.Pod("y/a")
	if ext := n.Pod(ExternalName); ext == nil || ext.IPv4.String() != "192.0.2.10" || ext.IPv6.String() != "2001:db8::10" {
		t.Fatalf("external peer: %+v", ext)
	}
	if a := n.Pod("x/a"); a.IPv4.String() != "10.244.0.2" || a.IPv6.String() != "fd00:244::2" {
		t.Errorf("x/a addresses %v %v", a.IPv4, a.IPv6)
	}

	pr := &Prober{Recheck: true}
	open := fullMatrix(t, pr, n)
	check(t, "no firewall", expectAll(n, nil), open)
	if len(open) != 2*4*4*2*2 {
		t.Errorf("matrix has %d cells, want %d", len(open), 2*4*4*2*2)
	}

	// Banners identify the answering pod and port.
	ctx := context.Background()
	id, ok, err := pr.ProbeReply(ctx, n.Pod("x/a"), ya.IPv6, 81, UDP, 0)
	if err != nil || !ok || id != "y/a:81" {
		t.Errorf("ProbeReply = %q %v %v, want y/a:81", id, ok, err)
	}
	// A closed port is refused, not an error.
	if ok, err := pr.Probe(ctx, n.Pod("x/a"), ya.IPv4, 82, TCP, 0); ok || err != nil {
		t.Errorf("probe to a closed port = %v %v", ok, err)
	}

	// Only inside the node namespace: x/b may not open TCP/81 anywhere; nobody may send
	// UDP/80 to y/a.
	nft(t, n, fmt.Sprintf(`table inet t {
	chain filt {
		type filter hook forward priority 0; policy accept;
		ip saddr %s tcp dport 81 drop
		ip6 saddr %s tcp dport 81 drop
		ip daddr %s udp dport 80 drop
		ip6 daddr %s udp dport 80 drop
	}
}
`, xb.IPv4, xb.IPv6, ya.IPv4, ya.IPv6))
	want := expectAll(n, func(c Cell) bool {
		if c.From == c.To {
			return true // never crosses the node
		}
		if c.From == "x/b" && c.Proto == TCP && c.Port == 81 {
			return false
		}
		if c.To == "y/a" && c.Proto == UDP && c.Port == 80 {
			return false
		}
		return true
	})
	dropped := fullMatrix(t, pr, n)
	check(t, "with drop rules", want, dropped)
	flipped := Diff(open, dropped)
	if len(flipped) != 2*(3+3) { // per family: x/b->3 others TCP/81, 3 others->y/a UDP/80
		t.Errorf("%d cells flipped, want 12: %v", len(flipped), flipped)
	}
	t.Logf("\n%s", Format(want, dropped))

	// The rules really are in the node namespace (and the probe saw them).
	out, err := n.Exec(ctx, "", "nft", "list", "table", "inet", "t")
	if err != nil || !strings.Contains(string(out), "udp dport 80 drop") {
		t.Errorf("nft list in node ns: %v\n%s", err, out)
	}
	// google/nftables reaches the same namespace through its fd.
	conn, err := nftables.New(nftables.WithNetNSFd(n.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil || len(tables) != 1 || tables[0].Name != "t" {
		t.Errorf("google/nftables in node ns: %v %v", tables, err)
	}
	conn.CloseLasting()
	nft(t, n, "delete table inet t\n")
	check(t, "after delete", expectAll(n, nil), fullMatrix(t, pr, n))
}

func TestLiveConn(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	requireNft(t)
	host := readHostState(t)
	n := buildNode(t, "x/a", "y/a")
	defer checkHost(t, host, n)
	xa, ya := n.Pod("x/a"), n.Pod("y/a")
	pr := &Prober{Recheck: true}
	ctx := context.Background()

	tcp4, err := pr.OpenConn(ctx, xa, ya.IPv4, 80)
	if err != nil {
		t.Fatal(err)
	}
	tcp6, err := pr.OpenConn(ctx, xa, ya.IPv6, 81)
	if err != nil {
		t.Fatal(err)
	}
	udp4, err := pr.OpenConnProto(ctx, xa, ya.IPv4, 81, UDP)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := pr.OpenConn(ctx, xa, n.Pod(ExternalName).IPv4, 80)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	if tcp4.Banner != "y/a:80" || tcp6.Banner != "y/a:81" || udp4.Banner != "y/a:81" || ext.Banner != "external:80" {
		t.Errorf("banners %q %q %q %q", tcp4.Banner, tcp6.Banner, udp4.Banner, ext.Banner)
	}
	for i := 0; i < 3; i++ {
		for _, c := range []*LiveConn{tcp4, tcp6, udp4, ext} {
			if !c.Alive(time.Second) {
				t.Fatalf("%s %v not alive before the drop rule", c.Proto, c.To)
			}
		}
	}
	if lp := tcp4.LocalAddr(); lp.Addr() != xa.IPv4 {
		t.Errorf("local address %v, want %v", lp, xa.IPv4)
	}

	// Drop (established traffic too) towards y/a, in the node namespace only.
	nft(t, n, fmt.Sprintf(`table inet t {
	chain filt {
		type filter hook forward priority 0;
		ip daddr %s drop
		ip6 daddr %s drop
	}
}
`, ya.IPv4, ya.IPv6))
	for _, c := range []*LiveConn{tcp4, tcp6, udp4} {
		if c.Alive(300 * time.Millisecond) {
			t.Errorf("%s %v still alive after the drop rule", c.Proto, c.To)
		}
	}
	if !ext.Alive(time.Second) {
		t.Errorf("connection to external died with a rule that does not match it")
	}
	// Closing twice is fine; the node closes what is left.
	tcp4.Close()
	tcp4.Close()
	if tcp4.Alive(time.Millisecond) {
		t.Errorf("closed conn alive")
	}
}

func TestNinePods(t *testing.T) {
	testenv.RequireRoot(t)
	t.Parallel()
	host := readHostState(t)
	n := NewTestNode(t, Options{})
	defer checkHost(t, host, n)
	var names []string
	for _, ns := range []string{"x", "y", "z"} {
		for _, p := range []string{"a", "b", "c"} {
			names = append(names, ns+"/"+p)
		}
	}
	start := time.Now()
	pods, err := n.AddPods(names...)
	if err != nil {
		t.Fatal(err)
	}
	build := time.Since(start)
	pr := &Prober{Recheck: true}
	start = time.Now()
	r, err := pr.Matrix(context.Background(), pods, []int{80, 81}, []Protocol{TCP, UDP}, IPv4)
	if err != nil {
		t.Fatal(err)
	}
	m4 := time.Since(start)
	start = time.Now()
	r6, err := pr.Matrix(context.Background(), pods, []int{80, 81}, []Protocol{TCP, UDP}, IPv6)
	if err != nil {
		t.Fatal(err)
	}
	m6 := time.Since(start)
	r.Merge(r6)
	want := Reachability{}
	for _, fam := range []Family{IPv4, IPv6} {
		want.Merge(Expect(pods, []int{80, 81}, []Protocol{TCP, UDP}, fam, nil))
	}
	check(t, "9 pods", want, r)
	t.Logf("9 pods built in %v; 9x9x2x2 matrix: IPv4 %v, IPv6 %v (%d cells)", build, m4, m6, len(r))

	// Isolate x/a at the node: every cell from or to it (but itself) is dropped and
	// times out; the matrix must still be quick.
	requireNft(t)
	xa := pods[0]
	nft(t, n, fmt.Sprintf(`table inet t {
	chain filt {
		type filter hook forward priority 0;
		ip saddr %[1]s drop
		ip daddr %[1]s drop
		ip6 saddr %[2]s drop
		ip6 daddr %[2]s drop
	}
}
`, xa.IPv4, xa.IPv6))
	start = time.Now()
	iso := Reachability{}
	for _, fam := range []Family{IPv4, IPv6} {
		r, err := pr.Matrix(context.Background(), pods, []int{80, 81}, []Protocol{TCP, UDP}, fam)
		if err != nil {
			t.Fatal(err)
		}
		iso.Merge(r)
	}
	t.Logf("9x9x2x2 matrix, both families, x/a isolated (%d drops): %v", len(Diff(want, iso)), time.Since(start))
	wantIso := Reachability{}
	for c := range want {
		wantIso[c] = (c.From == "x/a") == (c.To == "x/a")
	}
	check(t, "x/a isolated", wantIso, iso)
	nft(t, n, "delete table inet t\n")

	// Caller-chosen addresses, duplicates refused.
	p, err := n.AddPod(PodSpec{Name: "w/a", IPv4: mustAddr("10.244.9.9"), IPv6: mustAddr("fd00:244::909")})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := pr.Probe(context.Background(), pods[0], p.IPv6, 80, TCP, 0); !ok || err != nil {
		t.Errorf("probe to caller-addressed pod: %v %v", ok, err)
	}
	if _, err := n.AddPod(PodSpec{Name: "w/b", IPv4: mustAddr("10.244.9.9")}); err == nil {
		t.Errorf("duplicate address accepted")
	}
	if _, err := n.AddPod(PodSpec{Name: "w/a"}); err == nil {
		t.Errorf("duplicate name accepted")
	}
}

func TestCleanup(t *testing.T) {
	testenv.RequireRoot(t)
	n, err := NewNode(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddPods("x/a"); err != nil {
		n.Close()
		t.Fatal(err)
	}
	if _, err := n.AddExternal(ExternalSpec{}); err != nil {
		n.Close()
		t.Fatal(err)
	}
	names, _ := ListNamespaces(n.id)
	if len(names) != 3 {
		t.Errorf("namespaces %v, want node, pod, external", names)
	}
	if path, err := exec.LookPath("ip"); err == nil {
		out, _ := exec.Command(path, "netns", "list").CombinedOutput()
		if !strings.Contains(string(out), n.NetNSName()) {
			t.Errorf("ip netns list does not show %s:\n%s", n.NetNSName(), out)
		}
	}
	id := n.id
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := ListNamespaces(id); len(left) != 0 {
		t.Errorf("left after Close: %v", left)
	}

	// A namespace of a process that no longer exists is stale. (A plain file stands in
	// for the bind mount: removal is the same, and concurrent test processes, which may
	// clean it up first, do not race with a mount.)
	stale := fmt.Sprintf("%s%d-1-node", PrefixBase, 999_000_000+os.Getpid()%1_000_000)
	if err := os.WriteFile(NetNSDir+"/"+stale, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	mine, err := newNamedNS(DefaultPrefix()+"keep", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mine.close()
	if _, err := CleanupStale(); err != nil {
		t.Fatal(err)
	}
	if left, _ := ListNamespaces(stale); len(left) != 0 {
		removeNamedNS(stale)
		t.Errorf("CleanupStale left %v", left)
	}
	if left, _ := ListNamespaces(mine.NetNSName()); len(left) != 1 {
		t.Errorf("CleanupStale removed a namespace of this live process")
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	// Nothing of this process may be left in /run/netns.
	if os.Geteuid() == 0 {
		if left, _ := ListNamespaces(DefaultPrefix()); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "netmodel: namespaces left behind: %v\n", left)
			Cleanup(DefaultPrefix())
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

func TestFormatAndDiff(t *testing.T) {
	pods := []*Pod{{Name: "x/a"}, {Name: "x/b"}}
	want := Expect(pods, []int{80}, []Protocol{TCP}, IPv4, func(c Cell) bool { return c.To != "x/b" || c.From == "x/b" })
	got := Expect(pods, []int{80}, []Protocol{TCP}, IPv4, nil)
	d := Diff(want, got)
	if len(d) != 1 || d[0] != (Cell{From: "x/a", To: "x/b", Port: 80, Proto: TCP, Family: IPv4}) {
		t.Fatalf("Diff = %v", d)
	}
	out := Format(want, got)
	if !strings.Contains(out, "IPv4 TCP/80: 1 mismatch(es)") || !hasRow(out, "x/a . .*") || !hasRow(out, "x/b . .") {
		t.Errorf("Format(want, got):\n%s", out)
	}
	if out := Format(nil, want); !hasRow(out, "x/a . X") || strings.Contains(out, "X*") {
		t.Errorf("Format(nil, want):\n%s", out)
	}
	t.Logf("\n%s", Format(want, got))
}

func hasRow(table, fields string) bool {
	for _, line := range strings.Split(table, "\n") {
		if strings.Join(strings.Fields(line), " ") == fields {
			return true
		}
	}
	return false
}

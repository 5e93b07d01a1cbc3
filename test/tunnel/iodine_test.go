package tunnel

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

// iodine (Debian's iodine 0.7.0: iodined server, iodine client) is IP over
// DNS: the client gets a tun interface whose packets go out in query names
// (upstream: base32/base64/base128 labels, zlib-compressed fragments) and
// come back in answers (NULL records by default). In the world: iodined runs
// in the "tunnel" namespace on port iodinePort, authoritative for iodineZone
// (CoreDNS forwards it there), with tun address 10.53.0.1; the client runs in
// the pod with egressd as its name server and gets 10.53.0.2; a TCP sink on
// 10.53.0.1 counts what crosses the tunnel.
const (
	iodineZone     = "iodine." + zoneName // registered domain: zoneName
	iodinePort     = 5353
	iodinePassword = "egressd-test"
	iodineServerIP = "10.53.0.1"
	iodineSinkPort = 9100
)

// iodineWorld is the iodine server side of a world.
type iodineWorld struct {
	*world
	iodined *proc
	sink    *sink
}

// newIodineWorld builds the world with one pod and starts iodined and the
// sink behind its tun address.
func newIodineWorld(t *testing.T) *iodineWorld {
	t.Helper()
	testenv.SkipShort(t, "end-to-end test in network namespaces")
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "iodine", "iodined", "ifconfig")
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.Unavailable(t, "iodine needs /dev/net/tun: %v", err)
	}
	w := &iodineWorld{world: newWorld(t, "apps/exfil-0")}
	// -f foreground, -c no client address check (queries come from CoreDNS),
	// -DD logs every query it receives and every upstream fragment.
	w.iodined = w.startProc(w.tunnel.NS, "iodined", "iodined", "-f", "-c", "-DD", "-P", iodinePassword,
		"-p", strconv.Itoa(iodinePort), iodineServerIP, iodineZone)
	// The sink listens on the tun address once iodined has configured it.
	w.sink = &sink{port: iodineSinkPort}
	var ln net.Listener
	if !waitFor(30*time.Second, func() bool {
		var err error
		ln, err = netmodel.ListenTCP(w.tunnel.NS, fmt.Sprintf("%s:%d", iodineServerIP, iodineSinkPort))
		return err == nil
	}) {
		t.Fatalf("iodined did not configure %s:\n%s", iodineServerIP, w.iodined.Out.String())
	}
	netmodel.ServeTCP(t, ln, netmodel.CountInto(&w.sink.n))
	return w
}

// startIodine runs the iodine client in pod 0 with egressd as its name
// server; -r skips the raw UDP mode so everything goes through DNS. The query
// type is autodetected (NULL here) unless IODINE_T forces one (-T: TXT, SRV,
// MX, CNAME, A; docs/detection.md has the results per type).
func (w *iodineWorld) startIodine() *proc {
	w.t.Helper()
	args := []string{"-f", "-r", "-P", iodinePassword}
	if t := os.Getenv("IODINE_T"); t != "" {
		args = append(args, "-T", t)
	}
	return w.startProc(w.pods[0].NS, "iodine", "iodine", append(args, resolverIP, iodineZone)...)
}

// iodineUp waits for the client to report the tunnel up.
func iodineUp(p *proc, d time.Duration) bool {
	return waitFor(d, func() bool {
		select {
		case <-p.Exited:
			return true
		default:
		}
		return strings.Contains(p.Out.String(), "Connection setup complete")
	}) && strings.Contains(p.Out.String(), "Connection setup complete")
}

// sendThrough opens a TCP connection from the pod to the sink through the
// tun and writes n bytes (incompressible: iodine compresses what it sends)
// in chunks of 256, keeping the connection open until ctx ends.
func (w *iodineWorld) sendThrough(ctx context.Context, n int) (net.Conn, error) {
	var conn net.Conn
	err := w.pods[0].Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", fmt.Sprintf("%s:%d", iodineServerIP, iodineSinkPort), 20*time.Second)
		return err
	})
	if err != nil {
		return nil, err
	}
	go func() {
		buf := make([]byte, 256)
		x := uint32(2463534242)
		for sent := 0; sent < n && ctx.Err() == nil; sent += len(buf) {
			for j := range buf {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				buf[j] = byte(x)
			}
			if _, err := conn.Write(buf[:min(len(buf), n-sent)]); err != nil {
				return
			}
		}
	}()
	go func() { io.Copy(io.Discard, conn) }()
	return conn, nil
}

// iodineQuery is one query iodined received (its log at -DD).
type iodineQuery struct {
	qtype int
	data  string // the name left of the zone, without dots (iodined may cut long names)
	frags int    // upstream data fragments it carried
	bytes int    // their bytes (iodine's zlib-compressed IP packets)
}

var (
	reIodineRX   = regexp.MustCompile(`RX: client [^,]*, type (\d+), name (\S+)`)
	reIodineFrag = regexp.MustCompile(`IN +pkt seq# \d+, frag \d+ \(last=\d\), fragsize (\d+)`)
)

// serverLog parses the queries iodined received, in order.
func (w *iodineWorld) serverLog() []iodineQuery {
	var out []iodineQuery
	for _, line := range strings.Split(w.iodined.Out.String(), "\n") {
		if m := reIodineRX.FindStringSubmatch(line); m != nil {
			qt, _ := strconv.Atoi(m[1])
			out = append(out, iodineQuery{qtype: qt, data: iodineData(m[2])})
		} else if m := reIodineFrag.FindStringSubmatch(line); m != nil && len(out) > 0 {
			n, _ := strconv.Atoi(m[1])
			out[len(out)-1].frags++
			out[len(out)-1].bytes += n
		}
	}
	return out
}

func iodineData(name string) string {
	name = strings.TrimSuffix(strings.TrimSuffix(name, "."), "."+iodineZone)
	return unescapeName(strings.ReplaceAll(name, ".", ""))
}

// unescapeName resolves the presentation-format escapes (\DDD, \X) egressd's
// audit lines carry, so that a name compares with iodined's raw log.
func unescapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' && i+1 < len(s) {
			if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
				if v := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); v <= 255 {
					b.WriteByte(byte(v))
					i += 3
					continue
				}
			}
			c = s[i+1]
			i++
		}
		b.WriteByte(c)
	}
	return b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func (q iodineQuery) add(l *leak) {
	l.queries++
	if q.frags > 0 {
		l.dataQueries++
		l.bytes += q.bytes
	}
}

// leakedUpTo sums iodined's queries up to and including the one whose name
// is qname; found is false when iodined never received it.
func (w *iodineWorld) leakedUpTo(qname string) (l leak, found bool) {
	data := iodineData(qname)
	for _, q := range w.serverLog() {
		q.add(&l)
		if q.data == data || (len(q.data) >= 16 && strings.HasPrefix(data, q.data)) {
			return l, true
		}
	}
	return l, false
}

// leakedTotal sums every query iodined received.
func (w *iodineWorld) leakedTotal() leak {
	var l leak
	for _, q := range w.serverLog() {
		q.add(&l)
	}
	return l
}

// qtypes counts iodined's queries per record type.
func (w *iodineWorld) qtypes() map[string]int {
	m := map[string]int{}
	for _, q := range w.serverLog() {
		m[dns.TypeToString[uint16(q.qtype)]]++
	}
	return m
}

// TestIodineAlert: with --tunnel-detection Alert the iodine tunnel comes up
// and carries a TCP stream (the whole payload reaches the sink behind
// iodined's tun address), and it is reported within the bound: a
// dns.tunnel.suspected audit line names the workload and the registered
// domain tunnel.example, the metric counts it.
func TestIodineAlert(t *testing.T) {
	w := newIodineWorld(t)
	w.startAgent("", "--tunnel-detection", "Alert")
	c := w.startIodine()
	if !iodineUp(c, 120*time.Second) {
		t.Fatalf("iodine did not come up:\n%s", c.Out.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := w.sendThrough(ctx, payload)
	if err != nil {
		t.Fatalf("TCP through the tunnel: %v\n%s", err, c.Out.String())
	}
	defer conn.Close()
	if !waitFor(120*time.Second, func() bool { return w.sink.n.Load() >= payload }) {
		t.Fatalf("tunnel moved %d of %d bytes", w.sink.n.Load(), payload)
	}
	ev := w.alertOf(w.pods[0].Name)
	l, found := w.leakedUpTo(ev["qname"].(string))
	if !found {
		t.Fatalf("the alerting query %v never reached iodined", ev["qname"])
	}
	total := w.leakedTotal()
	t.Logf("Alert: iodine caught after %d queries at iodined (%d carrying data, %d fragment bytes) up to the alerting one; score %v, reason %v, features %v",
		l.queries, l.dataQueries, l.bytes, ev["score"], ev["reason"], ev["features"])
	t.Logf("Alert: the sink received all %d bytes; iodined received %d queries in all (%d with data, %d fragment bytes), by type %v; client: %s",
		payload, total.queries, total.dataQueries, total.bytes, w.qtypes(), iodineSetup(c))
	w.checkBound("before the alert", l)
	if n := len(w.auditEvents("dns.tunnel.blocked")); n != 0 {
		t.Errorf("%d dns.tunnel.blocked events with Alert", n)
	}
	if m := w.metric("egressd_tunnel_suspected_total"); m < 1 {
		t.Errorf("egressd_tunnel_suspected_total = %v", m)
	}
}

// TestIodineBlock: with --tunnel-detection Block the query that takes the
// pair over the threshold is refused and so is every later lookup under
// tunnel.example: the tunnel does not come up (or, if it did, moves no more
// than the bound); what reached iodined is measured.
func TestIodineBlock(t *testing.T) {
	w := newIodineWorld(t)
	w.startAgent("", "--tunnel-detection", "Block")
	c := w.startIodine()
	ev := w.alertOf(w.pods[0].Name)
	if ev["response"] != "REFUSED" {
		t.Errorf("dns.tunnel.suspected under Block answered %v, want REFUSED", ev["response"])
	}
	var blocked map[string]any
	waitFor(30*time.Second, func() bool {
		for _, e := range w.auditEvents("dns.tunnel.blocked") {
			if e["workload"] == w.pods[0].Name {
				blocked = e
				return true
			}
		}
		return false
	})
	if blocked == nil || blocked["response"] != "REFUSED" || blocked["domain"] != zoneName {
		t.Fatalf("dns.tunnel.blocked: %v", blocked)
	}
	// iodine retries refused setup queries for a while, then gives up.
	up := iodineUp(c, 30*time.Second)
	if up {
		// Should it have come up, it must not carry the payload.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if conn, err := w.sendThrough(ctx, payload); err == nil {
			defer conn.Close()
			waitFor(15*time.Second, func() bool { return w.sink.n.Load() >= payload })
		}
	}
	l := w.leakedTotal()
	got := w.sink.n.Load()
	if _, found := w.leakedUpTo(ev["qname"].(string)); found {
		t.Errorf("the query that crossed the threshold reached iodined")
	}
	t.Logf("Block: tunnel up %v; %d queries reached iodined in all (%d carrying data, %d fragment bytes), by type %v; the sink received %d of %d bytes; score %v, reason %v, features %v; client: %s",
		up, l.queries, l.dataQueries, l.bytes, w.qtypes(), got, payload, ev["score"], ev["reason"], ev["features"], iodineSetup(c))
	w.checkBound("in all under Block", l)
	if got >= payload {
		t.Errorf("the sink received the whole payload (%d bytes) under Block", got)
	}
	r, err := exchange(w.pods[0].NS, resolverAddr, "probe."+iodineZone, dns.TypeNULL)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("lookup of the quarantined domain: %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
	e := ede(r)
	if e == nil || e.InfoCode != dns.ExtendedErrorCodeProhibited {
		t.Fatalf("REFUSED without EDE 18: %v", r)
	}
	t.Logf("lookup of probe.%s: REFUSED, EDE %d %q", iodineZone, e.InfoCode, e.ExtraText)
	r, err = exchange(w.pods[0].NS, resolverAddr, "www.example.org", dns.TypeA)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("benign lookup after the block: %v %v", r, err)
	}
}

// iodineSetup is the client's log in one line, without the banner.
func iodineSetup(c *proc) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(c.Out.String(), "\n", " | ")), " ")
}

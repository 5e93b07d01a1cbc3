package attack

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/test/netmodel"
)

// Issue 16: the side doors around egressd's name policy, replayed with real
// clients in a pod against real servers on well-known public resolver
// addresses (routed to the external peer, local there): a plain resolver on
// 8.8.8.8:53 (UDP, TCP) and on [2001:4860:4860::8888]:53, DNS over TLS on
// 8.8.8.8:853 (crypto/tls, miekg/dns "tcp-tls"), a UDP 853 (DoQ) probe to
// 94.140.14.14, and DNS over HTTPS (RFC 8484 POST) on 1.1.1.1:443. The rogue
// resolvers answer every name with sideDoorAnswer, so a pod that gets it has
// resolved without egressd. Every address is in egressd's shipped DoH list,
// so the agent runs with its defaults (the replay runs unchanged against main
// 8ff4d7d, see docs/security.md).

var (
	sideDoorAnswer = netip.MustParseAddr("203.0.113.66")
	rogueV4        = []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("94.140.14.14"), netip.MustParseAddr("1.1.1.1")}
	rogueV6        = netip.MustParseAddr("2001:4860:4860::8888")
)

// routeToExternal makes addr reachable through the external peer: a route in
// the node, and a local (AnyIP) route in the peer.
func routeToExternal(t *testing.T, w *World, addr netip.Addr) {
	t.Helper()
	gw := w.External.IPv4
	if addr.Is6() {
		gw = w.External.IPv6
	}
	bits := addr.BitLen()
	dst := &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(bits, bits)}
	if err := w.Node.Netlink().RouteAdd(&netlink.Route{Dst: dst, Gw: gw.AsSlice()}); err != nil {
		t.Fatalf("route %v: %v", addr, err)
	}
	lo, err := w.External.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if addr.Is6() { // IPv6 binds only to assigned addresses
		if err := w.External.Netlink().AddrAdd(lo, &netlink.Addr{IPNet: dst, Flags: syscall.IFA_F_NODAD}); err != nil {
			t.Fatalf("address %v: %v", addr, err)
		}
		return
	}
	if err := w.External.Netlink().RouteAdd(&netlink.Route{Dst: dst, LinkIndex: lo.Attrs().Index, Type: syscall.RTN_LOCAL, Table: syscall.RT_TABLE_LOCAL, Scope: netlink.SCOPE_HOST}); err != nil {
		t.Fatalf("local route %v: %v", addr, err)
	}
}

func rogueHandler() dns.Handler {
	return dns.HandlerFunc(func(rw dns.ResponseWriter, q *dns.Msg) {
		_ = rw.WriteMsg(rogueReply(q))
	})
}

func rogueReply(q *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(q)
	if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeA {
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: sideDoorAnswer.AsSlice()}}
	}
	return m
}

// selfSigned is a certificate for the rogue TLS servers (clients skip
// verification: what is measured is whether the handshake gets through).
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dns.google"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"dns.google", "cloudflare-dns.com"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// startRogueResolvers serves plain DNS, DoT, a UDP 853 echo and DoH in the
// external peer on the rogue addresses.
func startRogueResolvers(t *testing.T, w *World) {
	t.Helper()
	cert := selfSigned(t)
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"dot", "h2", "http/1.1"}}
	var servers []*dns.Server
	var closers []io.Closer
	err := w.External.Do(func() error {
		for _, ap := range []string{"8.8.8.8:53", "[2001:4860:4860::8888]:53"} {
			pc, err := net.ListenPacket("udp", ap)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", ap)
			if err != nil {
				return err
			}
			servers = append(servers, &dns.Server{PacketConn: pc, Handler: rogueHandler()}, &dns.Server{Listener: ln, Handler: rogueHandler()})
		}
		dot, err := tls.Listen("tcp", "8.8.8.8:853", tlsCfg)
		if err != nil {
			return err
		}
		servers = append(servers, &dns.Server{Listener: dot, Handler: rogueHandler()})
		doq, err := net.ListenPacket("udp", "94.140.14.14:853")
		if err != nil {
			return err
		}
		closers = append(closers, doq)
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := doq.ReadFrom(buf)
				if err != nil {
					return
				}
				// The prober's echo format: "<identity>\n<payload>".
				_, _ = doq.WriteTo(append([]byte("doq:853\n"), buf[:n]...), from)
			}
		}()
		doh, err := tls.Listen("tcp", "1.1.1.1:443", tlsCfg)
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
			q := new(dns.Msg)
			if q.Unpack(body) != nil {
				http.Error(rw, "bad query", http.StatusBadRequest)
				return
			}
			out, _ := rogueReply(q).Pack()
			rw.Header().Set("Content-Type", "application/dns-message")
			_, _ = rw.Write(out)
		}), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(doh)
		closers = append(closers, hs)
		return nil
	})
	if err != nil {
		t.Fatalf("rogue resolvers: %v", err)
	}
	for _, s := range servers {
		go s.ActivateAndServe()
	}
	t.Cleanup(func() {
		for _, s := range servers {
			_ = s.Shutdown()
		}
		for _, c := range closers {
			_ = c.Close()
		}
	})
}

// plainQuery asks pool.minepool.test of server from the pod.
func plainQuery(pod *netmodel.Pod, server, network string) (string, error) {
	c := &dns.Client{Net: network, Timeout: 2 * time.Second}
	if network == "tcp-tls" {
		c.TLSConfig = &tls.Config{InsecureSkipVerify: true, ServerName: "dns.google"}
	}
	m := new(dns.Msg)
	m.SetQuestion("pool.minepool.test.", dns.TypeA)
	r, err := Exchange(pod.NS, c, m, server)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %v", Rcode(r), AnswerAddrs(r)), nil
}

// dohQuery POSTs the query to https://1.1.1.1/dns-query from the pod.
func dohQuery(pod *netmodel.Pod) (string, error) {
	m := new(dns.Msg)
	m.SetQuestion("pool.minepool.test.", dns.TypeA)
	wire, _ := m.Pack()
	hc := netmodel.HTTPClient(pod.NS, 2*time.Second)
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, ServerName: "cloudflare-dns.com"}
	resp, err := hc.Post("https://1.1.1.1/dns-query", "application/dns-message", bytes.NewReader(wire))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	r := new(dns.Msg)
	if err := r.Unpack(b); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %v", Rcode(r), AnswerAddrs(r)), nil
}

// TestReplaySideDoors: a pod whose egress no policy restricts, under an Admin
// Deny of *.minepool.test, tries every side door with a real client. Each
// must be answered by egressd (plain DNS, IPv4: redirected, NXDOMAIN) or
// fail (IPv6 plain DNS without an egressd IPv6 address, DoT, DoQ, DoH), with
// its event; a normal lookup and HTTPS to an address outside the DoH list are
// unaffected.
func TestReplaySideDoors(t *testing.T) {
	w := New(t, Config{Zone: "pool.minepool.test. 60 IN A 192.0.2.66\nwww.ok.test. 60 IN A 192.0.2.10\n", Policies: denyMiningPolicies})
	for _, a := range append(rogueV4, rogueV6) {
		routeToExternal(t, w, a)
	}
	startRogueResolvers(t, w)
	pod := w.Pods[0]
	a := w.StartAgent(AgentOptions{Extra: []string{"--nflog-group", "7"}})

	type door struct {
		name   string
		do     func() (string, error)
		egress string // what egressd answers when it got the query ("" : the query must fail)
	}
	doors := []door{
		{"plain DNS UDP @8.8.8.8", func() (string, error) { return plainQuery(pod, "8.8.8.8:53", "udp") }, "NXDOMAIN []"},
		{"plain DNS TCP @8.8.8.8", func() (string, error) { return plainQuery(pod, "8.8.8.8:53", "tcp") }, "NXDOMAIN []"},
		{"plain DNS UDP @[2001:4860:4860::8888] (egressd has no IPv6 address)", func() (string, error) {
			return plainQuery(pod, "[2001:4860:4860::8888]:53", "udp")
		}, ""},
		{"DoT 8.8.8.8:853 (crypto/tls)", func() (string, error) { return plainQuery(pod, "8.8.8.8:853", "tcp-tls") }, ""},
		{"DoH https://1.1.1.1/dns-query", func() (string, error) { return dohQuery(pod) }, ""},
		{"DoQ probe UDP 94.140.14.14:853", func() (string, error) {
			ok, err := (&netmodel.Prober{Timeout: 2 * time.Second}).Probe(context.Background(), pod, rogueV4[1], 853, netmodel.UDP, 0)
			if err != nil || !ok {
				return "", fmt.Errorf("no echo: %v", err)
			}
			return "echo", nil
		}, ""},
	}
	failures := 0
	for _, d := range doors {
		got, err := d.do()
		switch {
		case err != nil && d.egress == "":
			t.Logf("%-70s closed (%v)", d.name, shortErr(err))
		case err == nil && got == d.egress:
			t.Logf("%-70s answered by egressd: %s", d.name, got)
		default:
			failures++
			t.Errorf("%-70s OPEN: %q %v (want %s)", d.name, got, err, map[bool]string{true: "failure", false: d.egress}[d.egress == ""])
		}
	}
	// Unaffected: a normal lookup, and HTTPS to an address outside the list.
	if r := w.Ask(pod, "udp", "www.ok.test", dns.TypeA); Rcode(r) != "NOERROR" || len(AnswerAddrs(r)) != 1 {
		t.Errorf("normal lookup: %s %v", Rcode(r), AnswerAddrs(r))
	}
	if !w.Connect(pod, w.External.IPv4, 80) {
		t.Error("a connection to a non-resolver address was dropped")
	}
	// Events.
	redirected := a.WaitAudit(func(l map[string]any) bool {
		attrs, _ := l["attrs"].(map[string]any)
		return AuditEvent("dns.lookup.blocked", "pool.minepool.test")(l) && attrs["egressd.dns.original_destination"] == "8.8.8.8:53"
	})
	if redirected == nil {
		t.Error("no dns.lookup.blocked event with egressd.dns.original_destination 8.8.8.8:53")
	}
	for door, resolver := range map[string]string{"dot": "dns.google", "doh": "cloudflare-dns.com", "doq": "dns.adguard-dns.com", "dns": ""} {
		ev := a.WaitAudit(func(l map[string]any) bool {
			attrs, _ := l["attrs"].(map[string]any)
			return l["event"] == "dns.bypass.blocked" && attrs["egressd.dns.side_door"] == door &&
				(resolver == "" || attrs["egressd.dns.resolver"] == resolver) && l["workload"] == DefaultPod
		})
		if ev == nil {
			t.Errorf("no dns.bypass.blocked event for %s (resolver %q)", door, resolver)
		} else {
			t.Logf("event: %v", ev)
		}
	}
	t.Logf("%d of %d side doors open", failures, len(doors))
	// The rules the side doors cost (none on an agent without them).
	rules := 0
	for _, ch := range []string{"sd_filter", "sd_dns_redirect"} {
		out, err := w.Node.Exec(t.Context(), "", "nft", "-a", "list", "chain", "inet", "egressd", ch)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "# handle") && !strings.Contains(l, "{") {
				rules++
			}
		}
	}
	t.Logf("side-door rules in table inet egressd: %d", rules)
	if failures == 0 && rules != 20 { // IPv4-only egressd: docs/egressd.md "DNS side doors"
		t.Errorf("side-door rules: %d, documented 20", rules)
	}
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// TestECHStrippedFromAnswers: an HTTPS record with an ECH configuration from
// the upstream reaches the pod without its ech SvcParam (the other
// SvcParams kept), so that the pod's TLS client sends a visible SNI.
func TestECHStrippedFromAnswers(t *testing.T) {
	w := New(t, Config{Zone: `svc.test. 60 IN HTTPS 1 . alpn="h2" ech="AEX+DQBBpQAgACB/bXMk" ipv4hint=192.0.2.10` + "\n" +
		"svc.test. 60 IN A 192.0.2.10\n", Policies: denyMiningPolicies})
	w.StartAgent(AgentOptions{})
	for _, network := range []string{"udp", "tcp", "udp"} { // the second UDP query from the cache
		r := w.Ask(w.Pods[0], network, "svc.test", dns.TypeHTTPS)
		var https *dns.HTTPS
		for _, rr := range r.Answer {
			if h, ok := rr.(*dns.HTTPS); ok {
				https = h
			}
		}
		if https == nil {
			t.Fatalf("%s: no HTTPS record in %v", network, r)
		}
		keys := []string{}
		for _, kv := range https.Value {
			keys = append(keys, kv.Key().String())
		}
		t.Logf("%s: HTTPS record SvcParams %v", network, keys)
		if strings.Contains(strings.Join(keys, ","), "ech") || len(keys) != 2 {
			t.Errorf("%s: SvcParams %v, want alpn and ipv4hint without ech", network, keys)
		}
	}
}

package attack

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/vishvananda/netlink"

	"github.com/egressd/egressd/test/netmodel"
)

// resolverIPv6 is egressd's IPv6 --listen address in TestReplaySideDoorsIPv6
// (on the node's lo, like ResolverIP).
var resolverIPv6 = netip.MustParseAddr("fd00:53::10")

// dohV6 is Cloudflare's IPv6 DoH address (in the shipped list).
var dohV6 = netip.MustParseAddr("2606:4700:4700::1111")

// startRogueV6 serves DoT on [2001:4860:4860::8888]:853 and DoH on
// [2606:4700:4700::1111]:443 in the external peer (plain DNS on
// 2001:4860:4860::8888:53 is startRogueResolvers').
func startRogueV6(t *testing.T, w *World) {
	t.Helper()
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{"dot", "h2", "http/1.1"}}
	var dot, doh net.Listener
	err := w.External.Do(func() (err error) {
		if dot, err = tls.Listen("tcp", netip.AddrPortFrom(rogueV6, 853).String(), tlsCfg); err != nil {
			return err
		}
		doh, err = tls.Listen("tcp", netip.AddrPortFrom(dohV6, 443).String(), tlsCfg)
		return err
	})
	if err != nil {
		t.Fatalf("rogue IPv6 servers: %v", err)
	}
	s := &dns.Server{Listener: dot, Handler: rogueHandler()}
	go s.ActivateAndServe()
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
	t.Cleanup(func() { _ = s.Shutdown(); _ = hs.Close() })
}

// dohQueryTo POSTs the query to https://<addr>/dns-query from the pod.
func dohQueryTo(pod *netmodel.Pod, addr netip.Addr) (string, error) {
	m := new(dns.Msg)
	m.SetQuestion("pool.minepool.test.", dns.TypeA)
	wire, _ := m.Pack()
	hc := netmodel.HTTPClient(pod.NS, 2*time.Second)
	hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, ServerName: "cloudflare-dns.com"}
	resp, err := hc.Post("https://"+netip.AddrPortFrom(addr, 443).String()+"/dns-query", "application/dns-message", bytes.NewReader(wire))
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

// retryUntil calls do until it returns want, for up to 10 tries (a new
// world's IPv6 link addresses may still be tentative, DAD): the readiness of
// the world before a door is shown open, never a verdict.
func retryUntil(want string, do func() (string, error)) (string, error) {
	var got string
	var err error
	for range 10 {
		if got, err = do(); err == nil && got == want {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	return got, err
}

// TestReplaySideDoorsIPv6: the IPv6 twin of TestReplaySideDoors, with egressd
// listening on an IPv6 address too, so that plain DNS over IPv6 is
// redirected (not dropped). Each door is first shown open without egressd
// (the clients and servers work), then closed under the agent's defaults with
// its event: plain DNS over UDP and TCP to [2001:4860:4860::8888]:53 answered
// by egressd (NXDOMAIN) with the original destination in the audit event;
// DoT to [2001:4860:4860::8888]:853, DoH to https://[2606:4700:4700::1111]
// and DoQ to [2a10:50c0::ad1:ff]:853 dropped. A normal lookup over IPv6
// through egressd's IPv6 address is answered.
func TestReplaySideDoorsIPv6(t *testing.T) {
	w := New(t, Config{Zone: "pool.minepool.test. 60 IN A 192.0.2.66\nwww.ok.test. 60 IN A 192.0.2.10\n", Policies: denyMiningPolicies})
	doqV6 := netip.MustParseAddrPort("[2a10:50c0::ad1:ff]:853")
	for _, a := range append(rogueV4, rogueV6, dohV6, doqV6.Addr()) {
		routeToExternal(t, w, a)
	}
	startRogueResolvers(t, w)
	startRogueV6(t, w)
	startDoQServer(t, w, doqV6.String())
	lo, err := w.Node.Netlink().LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Node.Netlink().AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: resolverIPv6.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: syscall.IFA_F_NODAD}); err != nil {
		t.Fatal(err)
	}
	pod := w.Pods[0]
	plain := netip.AddrPortFrom(rogueV6, 53).String()
	doors := []struct {
		name, door, resolver string
		do                   func() (string, error)
		egressd              string // egressd's answer ("" : the query must fail)
	}{
		{"plain DNS UDP @[2001:4860:4860::8888]", "", "", func() (string, error) { return plainQuery(pod, plain, "udp") }, "NXDOMAIN []"},
		{"plain DNS TCP @[2001:4860:4860::8888]", "", "", func() (string, error) { return plainQuery(pod, plain, "tcp") }, "NXDOMAIN []"},
		{"DoT [2001:4860:4860::8888]:853", "dot", "dns.google", func() (string, error) {
			return plainQuery(pod, netip.AddrPortFrom(rogueV6, 853).String(), "tcp-tls")
		}, ""},
		{"DoH https://[2606:4700:4700::1111]/dns-query", "doh", "cloudflare-dns.com", func() (string, error) { return dohQueryTo(pod, dohV6) }, ""},
		{"DoQ [2a10:50c0::ad1:ff]:853 (quic-go)", "doq", "dns.adguard-dns.com", func() (string, error) { return doqQuery(pod, doqV6) }, ""},
	}
	rogue := "NOERROR [" + sideDoorAnswer.String() + "]"
	for _, d := range doors {
		got, err := retryUntil(rogue, d.do)
		if err != nil || got != rogue {
			t.Fatalf("without egressd, %s: %q %v (the client or the server does not work)", d.name, got, err)
		}
	}
	t.Logf("without egressd: %d of %d IPv6 doors open (answered %s)", len(doors), len(doors), rogue)
	a := w.StartAgent(AgentOptions{Listen: []string{ResolverAddr, netip.AddrPortFrom(resolverIPv6, 53).String()}, Extra: []string{"--nflog-group", "7"}})
	open := 0
	for _, d := range doors {
		got, err := d.do()
		switch {
		case err != nil && d.egressd == "":
			t.Logf("%-50s closed (%s)", d.name, shortErr(err))
		case err == nil && got == d.egressd:
			t.Logf("%-50s answered by egressd: %s", d.name, got)
		default:
			open++
			t.Errorf("%-50s OPEN: %q %v", d.name, got, err)
		}
		if d.door == "" {
			continue
		}
		ev := a.WaitAudit(func(l map[string]any) bool {
			attrs, _ := l["attrs"].(map[string]any)
			return l["event"] == "dns.bypass.blocked" && attrs["egressd.dns.side_door"] == d.door &&
				attrs["egressd.dns.resolver"] == d.resolver && l["client"] == pod.IPv6.String()
		})
		if ev == nil {
			t.Errorf("%s: no dns.bypass.blocked event (door %s, resolver %s, client %s)", d.name, d.door, d.resolver, pod.IPv6)
		}
	}
	redirected := a.WaitAudit(func(l map[string]any) bool {
		attrs, _ := l["attrs"].(map[string]any)
		return AuditEvent("dns.lookup.blocked", "pool.minepool.test")(l) && attrs["egressd.dns.original_destination"] == "["+rogueV6.String()+"]:53"
	})
	if redirected == nil {
		t.Errorf("no dns.lookup.blocked event with egressd.dns.original_destination [%s]:53", rogueV6)
	}
	r, err := Query(pod.NS, netip.AddrPortFrom(resolverIPv6, 53).String(), "udp", "www.ok.test.", dns.TypeA)
	if err != nil || Rcode(r) != "NOERROR" || len(AnswerAddrs(r)) != 1 {
		t.Errorf("normal lookup over IPv6: %v %v", r, err)
	}
	t.Logf("under egressd: %d of %d IPv6 doors open", open, len(doors))
}

package attack

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"

	"github.com/egressd/egressd/test/netmodel"
)

// DNS over QUIC (RFC 9250) with a real QUIC stack (github.com/quic-go/quic-go,
// test-only): a server in the external peer and a client in the pod. Debian's
// kdig (knot-dnsutils 3.2) is built without QUIC, so quic-go is the DoQ
// client at hand.

// doqALPN is the ALPN token of DoQ (RFC 9250 §4.1.1).
const doqALPN = "doq"

// startDoQServer serves DoQ on addr (udp, inside the external peer): each
// stream carries one length-prefixed query and gets the rogue answer.
func startDoQServer(t *testing.T, w *World, addr string) {
	t.Helper()
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}, NextProtos: []string{doqALPN}}
	var pc net.PacketConn
	if err := w.External.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatalf("DoQ server on %s: %v", addr, err)
	}
	ln, err := quic.Listen(pc, tlsCfg, &quic.Config{MaxIdleTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); ln.Close(); pc.Close() })
	go func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			go func() {
				for {
					st, err := conn.AcceptStream(ctx)
					if err != nil {
						return
					}
					q, err := readDoQ(st)
					if err != nil {
						st.CancelRead(1)
						continue
					}
					_ = writeDoQ(st, rogueReply(q))
					st.Close()
				}
			}()
		}
	}()
}

// readDoQ reads one 2-byte-length-prefixed DNS message.
func readDoQ(r io.Reader) (*dns.Msg, error) {
	var n uint16
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	return m, m.Unpack(b)
}

func writeDoQ(w io.Writer, m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
	return err
}

// doqQuery asks pool.minepool.test over DoQ from the pod: QUIC handshake
// (ALPN doq), one stream, message ID 0 (RFC 9250 §4.2.1).
func doqQuery(pod *netmodel.Pod, server netip.AddrPort) (string, error) {
	var pc net.PacketConn
	local := "0.0.0.0:0"
	if server.Addr().Is6() {
		local = "[::]:0"
	}
	if err := pod.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", local)
		return err
	}); err != nil {
		return "", err
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	tr := &quic.Transport{Conn: pc}
	defer tr.Close()
	conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(server),
		&tls.Config{InsecureSkipVerify: true, ServerName: "dns.adguard-dns.com", NextProtos: []string{doqALPN}},
		&quic.Config{HandshakeIdleTimeout: 3 * time.Second})
	if err != nil {
		return "", err
	}
	defer conn.CloseWithError(0, "")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return "", err
	}
	m := new(dns.Msg)
	m.SetQuestion("pool.minepool.test.", dns.TypeA)
	m.Id = 0
	if err := writeDoQ(st, m); err != nil {
		return "", err
	}
	st.Close() // STREAM FIN: the query is complete
	r, err := readDoQ(st)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s %v", Rcode(r), AnswerAddrs(r)), nil
}

// TestDoQClient: a real DoQ client in a pod against a real DoQ server on the
// AdGuard resolver addresses (IPv4 94.140.14.14 and IPv6 2a10:50c0::ad1:ff,
// routed to the external peer). Without egressd the pod gets the rogue answer
// over QUIC (the client and server work); under the agent's defaults both
// handshakes are dropped, each reported as dns.bypass.blocked (door doq, the
// resolver's name), while a normal lookup through egressd is answered.
func TestDoQClient(t *testing.T) {
	w := New(t, Config{Zone: "www.ok.test. 60 IN A 192.0.2.10\n", Policies: denyMiningPolicies})
	servers := []netip.AddrPort{netip.MustParseAddrPort("94.140.14.14:853"), netip.MustParseAddrPort("[2a10:50c0::ad1:ff]:853")}
	for _, s := range servers {
		routeToExternal(t, w, s.Addr())
		startDoQServer(t, w, s.String())
	}
	pod := w.Pods[0]
	for _, s := range servers {
		got, err := retryUntil("NOERROR ["+sideDoorAnswer.String()+"]", func() (string, error) { return doqQuery(pod, s) })
		if err != nil || got != "NOERROR ["+sideDoorAnswer.String()+"]" {
			t.Fatalf("without egressd, DoQ to %s: %q %v (the client or the server does not work)", s, got, err)
		}
		t.Logf("without egressd: DoQ %s answered %s", s, got)
	}
	a := w.StartAgent(AgentOptions{Extra: []string{"--nflog-group", "7"}})
	for _, s := range servers {
		got, err := doqQuery(pod, s)
		if err == nil {
			t.Errorf("DoQ %s from the pod under egressd: answered %q, want the handshake dropped", s, got)
		} else {
			t.Logf("DoQ %s closed: %v", s, shortErr(err))
		}
		ev := a.WaitAudit(func(l map[string]any) bool {
			attrs, _ := l["attrs"].(map[string]any)
			return l["event"] == "dns.bypass.blocked" && attrs["egressd.dns.side_door"] == "doq" &&
				attrs["server.address"] == s.Addr().String() && attrs["server.port"] == "853" &&
				attrs["network.transport"] == "udp" && attrs["egressd.dns.resolver"] == "dns.adguard-dns.com" && l["workload"] == DefaultPod
		})
		if ev == nil {
			t.Errorf("no dns.bypass.blocked event (doq, %s, dns.adguard-dns.com) for the pod", s.Addr())
		}
	}
	if r := w.Ask(pod, "udp", "www.ok.test", dns.TypeA); Rcode(r) != "NOERROR" || len(AnswerAddrs(r)) != 1 {
		t.Errorf("normal lookup: %s %v", Rcode(r), AnswerAddrs(r))
	}
}

// noPolicyForPods selects no pod of the world (the agent refuses to start on
// a policy file without a policy).
const noPolicyForPods = `apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: elsewhere}
spec:
  tier: Admin
  priority: 10
  subject: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: nobody}}}
  egress:
  - action: Deny
    to: [{fqdn: {matchPattern: "*.minepool.test"}}]
`

// TestSideDoorsPodWithoutPolicy: the doors are closed by default for a pod
// that no policy selects at all: its plain DNS to 8.8.8.8 is answered by
// egressd (the upstream's 192.0.2.66, not the rogue 203.0.113.66), its DoT,
// DoH and DoQ (a real QUIC client) are dropped and reported.
func TestSideDoorsPodWithoutPolicy(t *testing.T) {
	w := New(t, Config{Zone: "pool.minepool.test. 60 IN A 192.0.2.66\n", Policies: noPolicyForPods})
	for _, a := range append(rogueV4, rogueV6) {
		routeToExternal(t, w, a)
	}
	startRogueResolvers(t, w)
	// 94.140.14.14:853/udp is the rogue UDP echo; the DoQ server takes
	// AdGuard's other address.
	doqAddr := netip.MustParseAddrPort("94.140.15.15:853")
	routeToExternal(t, w, doqAddr.Addr())
	startDoQServer(t, w, doqAddr.String())
	pod := w.Pods[0]
	a := w.StartAgent(AgentOptions{Extra: []string{"--nflog-group", "7"}})
	if got, err := plainQuery(pod, "8.8.8.8:53", "udp"); err != nil || got != "NOERROR [192.0.2.66]" {
		t.Errorf("plain DNS @8.8.8.8: %q %v, want egressd's answer NOERROR [192.0.2.66]", got, err)
	}
	for _, d := range []struct {
		door string
		do   func() (string, error)
	}{
		{"dot", func() (string, error) { return plainQuery(pod, "8.8.8.8:853", "tcp-tls") }},
		{"doh", func() (string, error) { return dohQuery(pod) }},
		{"doq", func() (string, error) { return doqQuery(pod, doqAddr) }},
	} {
		if got, err := d.do(); err == nil {
			t.Errorf("%s from a pod no policy selects: answered %q, want dropped", d.door, got)
		}
		ev := a.WaitAudit(func(l map[string]any) bool {
			attrs, _ := l["attrs"].(map[string]any)
			return l["event"] == "dns.bypass.blocked" && attrs["egressd.dns.side_door"] == d.door && l["workload"] == DefaultPod && l["policy"] == nil
		})
		if ev == nil {
			t.Errorf("no dns.bypass.blocked event (%s) for the pod", d.door)
		}
	}
}

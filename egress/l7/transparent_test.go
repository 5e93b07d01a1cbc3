package l7

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// transparentSetup: a TLS origin and an HTTP origin on 127.0.0.3, the
// transparent proxy on 127.0.0.1 whose "original destination" is chosen per
// test through dstFor.
func transparentSetup(t *testing.T) (tp *Transparent, rec *recorder, tlsPort, httpPort int, setDst func(netip.AddrPort), proxyAddr string) {
	return transparentSetupLimits(t, Limits{HelloTimeout: 300 * time.Millisecond})
}

func transparentSetupLimits(t *testing.T, limits Limits) (tp *Transparent, rec *recorder, tlsPort, httpPort int, setDst func(netip.AddrPort), proxyAddr string) {
	c, _ := newTestChecker(t)
	lnT, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.3 (Linux loopback serves all of 127/8): %v", err)
	}
	srvT := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "tls %s", r.Host) }))
	srvT.Listener = lnT
	srvT.StartTLS()
	t.Cleanup(srvT.Close)
	lnH, _ := net.Listen("tcp", "127.0.0.3:0")
	srvH := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "http %s", r.Host) })}
	go srvH.Serve(lnH)
	t.Cleanup(func() { srvH.Close() })

	rec = &recorder{}
	tp = NewTransparent(c, limits, rec.hooks())
	dst := make(chan netip.AddrPort, 1)
	var cur netip.AddrPort
	tp.OrigDst = func(net.Conn) (netip.AddrPort, error) {
		select {
		case cur = <-dst:
		default:
		}
		return cur, nil
	}
	pl, _ := net.Listen("tcp", "127.0.0.1:0")
	go tp.Serve(pl)
	t.Cleanup(func() { tp.Close() })
	return tp, rec, lnT.Addr().(*net.TCPAddr).Port, lnH.Addr().(*net.TCPAddr).Port,
		func(ap netip.AddrPort) { dst <- ap }, pl.Addr().String()
}

func TestTransparent(t *testing.T) {
	tp, rec, tlsPort, httpPort, setDst, paddr := transparentSetup(t)
	ip3 := netip.MustParseAddr("127.0.0.3")
	handshake := func(sni string, dst netip.AddrPort) error {
		setDst(dst)
		c, err := net.Dial("tcp", paddr)
		if err != nil {
			return err
		}
		defer c.Close()
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(3 * time.Second))
		return tc.Handshake()
	}
	if err := handshake("good.example.com", netip.AddrPortFrom(ip3, uint16(tlsPort))); err != nil {
		t.Fatalf("good: %v", err)
	}
	if err := handshake("evil.example.com", netip.AddrPortFrom(ip3, uint16(tlsPort))); err == nil {
		t.Fatal("evil: handshake succeeded")
	}
	// SNI spoofing: allowed name, other address.
	if err := handshake("good.example.com", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.4"), uint16(tlsPort))); err == nil {
		t.Fatal("spoof: handshake succeeded")
	}

	// Split ClientHello: 5-byte writes with pauses.
	setDst(netip.AddrPortFrom(ip3, uint16(tlsPort)))
	raw := captureHello(t, "good.example.com")
	c, _ := net.Dial("tcp", paddr)
	for i := 0; i < len(raw); i += 50 {
		c.Write(raw[i:min(i+50, len(raw))])
		time.Sleep(2 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 22 {
		t.Fatalf("split hello: no ServerHello: %v %x", err, b)
	}
	c.Close()

	// Silent client: reset after HelloTimeout.
	setDst(netip.AddrPortFrom(ip3, uint16(tlsPort)))
	c, _ = net.Dial("tcp", paddr)
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(b)
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("silent client: %v after %v", err, time.Since(start))
	}
	c.Close()

	// HTTP by Host header.
	get := func(host string) string {
		setDst(netip.AddrPortFrom(ip3, uint16(httpPort)))
		c, _ := net.Dial("tcp", paddr)
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := get("good.example.com"); !strings.Contains(got, "http good.example.com") {
		t.Fatalf("http good: %q", got)
	}
	if got := get("evil.example.com"); !strings.Contains(got, "403") || !strings.Contains(got, ReasonOtherName) {
		t.Fatalf("http evil: %q", got)
	}
	time.Sleep(50 * time.Millisecond)
	rec.mu.Lock()
	reasons := []string{}
	for _, ev := range rec.evs {
		reasons = append(reasons, ev.Attrs[AttrMode]+":"+ev.Reason)
	}
	rec.mu.Unlock()
	want := "transparent-tls:address-of-other-name transparent-tls:address-mismatch transparent-tls:client-hello-timeout transparent-http:address-of-other-name"
	if strings.Join(reasons, " ") != want {
		t.Fatalf("events: %v", reasons)
	}
	if tp.Active() != 0 {
		t.Logf("active: %d", tp.Active())
	}
}

// A ClientHello that hides the name (no SNI, ECH) or is not one is refused
// with a reset and an event with its reason.
func TestTransparentRefusesHiddenNames(t *testing.T) {
	_, rec, tlsPort, _, setDst, paddr := transparentSetup(t)
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), uint16(tlsPort))
	cases := []struct {
		name   string
		hello  []byte
		reason string
	}{
		{"no SNI (crypto/tls without ServerName)", captureHello(t, ""), ReasonNoSNI},
		{"ECH", buildHello(4096, sniExt("good.example.com"), ext(extECH, []byte{0, 1, 2})), ReasonECH},
		{"not a ClientHello", []byte{22, 3, 1, 0, 4, 2, 0, 0, 0}, ReasonBadHello},
	}
	for _, tc := range cases {
		setDst(dst)
		c, err := net.Dial("tcp", paddr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(tc.hello); err != nil {
			t.Fatalf("%s: write: %v", tc.name, err)
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(make([]byte, 64))
		c.Close()
		if err == nil || n > 0 || isTimeout(err) {
			t.Errorf("%s: read %d bytes, %v; want a reset", tc.name, n, err)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.evs) != len(cases) {
		t.Fatalf("events: %+v", rec.evs)
	}
	for i, tc := range cases {
		if ev := rec.evs[i]; ev.Reason != tc.reason || ev.Attrs[AttrMode] != string(ModeTransparentTLS) || ev.Response != "reset" || ev.Attrs[AttrDestination] != dst.Addr().String() {
			t.Errorf("%s: event %+v, want reason %s", tc.name, ev, tc.reason)
		}
	}
}

// With MaxConns 1, a silent client holds the only slot: a second client is
// not served (its ClientHello waits in the accept queue) until the first goes.
func TestTransparentMaxConns(t *testing.T) {
	tp, _, tlsPort, _, setDst, paddr := transparentSetupLimits(t, Limits{MaxConns: 1, HelloTimeout: time.Minute})
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), uint16(tlsPort))
	setDst(dst)
	first, err := net.Dial("tcp", paddr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	deadline := time.Now().Add(10 * time.Second)
	for tp.Active() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("first connection not accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second, err := net.Dial("tcp", paddr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if _, err := second.Write(captureHello(t, "good.example.com")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 5)
	second.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := second.Read(b); n != 0 || !isTimeout(err) {
		t.Fatalf("second connection served while the first holds the slot: %d bytes, %v", n, err)
	}
	if n := tp.Active(); n != 1 {
		t.Fatalf("%d connections served, limit 1", n)
	}
	first.Close()
	second.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(second, b); err != nil || b[0] != 22 {
		t.Fatalf("second connection after the first closed: %v %x", err, b)
	}
}

// Package l7 tests the L7 egress proxy end to end: a node and pods as network
// namespaces (test/netmodel), the enforcer's table with the transparent
// redirect, real curl in the pod, a real TLS server with a generated CA.
package l7

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/egress"
	"github.com/egressd/egressd/egress/l7"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
	"github.com/egressd/egressd/telemetry/event"
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

var (
	proxyIP      = netip.MustParseAddr("169.254.20.10")
	transparent  = netip.AddrPortFrom(proxyIP, 15001)
	explicit     = netip.AddrPortFrom(proxyIP, 3128)
	proxyIP6     = netip.MustParseAddr("fd00::a9fe:140a")
	transparent6 = netip.AddrPortFrom(proxyIP6, 15001)
	explicit6    = netip.AddrPortFrom(proxyIP6, 3128)
)

// policyYAML: good.test, other.test and evil.test share one address (per
// family); good.test and other.test are allowed by two policies (cdn sorts
// first, so Decide reports cdn's rule for good.test once other.test resolved:
// the L7 check must decide per name), evil.test by none. An Audit-mode policy
// would deny other.test.
const policyYAML = `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: web, namespace: apps}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{fqdn: {matchName: good.test}}]
    ports: [{port: 443}, {port: 80}]
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: cdn, namespace: apps}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{fqdn: {matchName: other.test}}]
    ports: [{port: 443}, {port: 80}]
---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: staged, namespace: apps}
spec:
  podSelector: {}
  mode: Audit
  egress:
  - action: Deny
    to: [{fqdn: {matchName: other.test}}]
`

// testCA makes a CA and a server certificate for names, and writes the CA PEM.
func testCA(t testing.TB, dir string, names ...string) (tls.Certificate, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "egressd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}, path
}

type env struct {
	t       testing.TB
	node    *netmodel.Node
	client  *netmodel.Pod
	ext     *netmodel.Pod // good.test and evil.test (one IP)
	ext2    *netmodel.Pod // spoof target
	caPath  string
	caPool  *x509.CertPool
	tp      *l7.Transparent
	mu      sync.Mutex
	blocked []event.Event
	audited []event.Event
}

func setup(t testing.TB) *env {
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "curl")
	e := &env{t: t}
	e.node = netmodel.NewTestNode(t, netmodel.Options{Ports: []int{81}})
	pods, err := e.node.AddPods("apps/client")
	if err != nil {
		t.Fatal(err)
	}
	e.client = pods[0]
	if e.ext, err = e.node.AddExternal(netmodel.ExternalSpec{Ports: []int{81}}); err != nil {
		t.Fatal(err)
	}
	if e.ext2, err = e.node.AddExternal(netmodel.ExternalSpec{Name: "external2", Ports: []int{81},
		IPv4: netip.MustParsePrefix("198.51.100.10/24"), IPv6: netip.MustParsePrefix("2001:db8:1::10/64")}); err != nil {
		t.Fatal(err)
	}
	// The node-local proxy addresses.
	for _, args := range [][]string{
		{"addr", "add", proxyIP.String() + "/32", "dev", "lo"},
		{"-6", "addr", "add", proxyIP6.String() + "/128", "dev", "lo", "nodad"},
	} {
		if out, err := e.node.Exec(context.Background(), "", "ip", args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	cert, caPath := testCA(t, t.TempDir(), "good.test", "other.test", "evil.test")
	e.caPath = caPath
	e.caPool = x509.NewCertPool()
	e.caPool.AddCert(must(x509.ParseCertificate(cert.Certificate[1])))
	for _, p := range []*netmodel.Pod{e.ext, e.ext2} {
		e.serve(p, cert)
	}

	// Policy.
	store := policy.NewStore()
	if err := store.LoadWorkloads(&policy.Workloads{
		Namespaces: []policy.Namespace{{Name: "apps"}},
		Pods:       []policy.Workload{{Namespace: "apps", Name: "client", IPs: []netip.Addr{e.client.IPv4, e.client.IPv6}}},
	}); err != nil {
		t.Fatal(err)
	}
	objs, err := manifest.Decode("test", strings.NewReader(policyYAML))
	if err != nil {
		t.Fatal(err)
	}
	for i := range objs {
		if err := objs[i].Apply(store); err != nil {
			t.Fatal(err)
		}
	}
	comp := policy.NewCompiler(store, policy.Options{})
	plan, changes := comp.Compile()
	enf, err := egress.New(egress.WithNetNS(e.node.Fd()),
		egress.WithDNSExempt(netip.AddrPortFrom(proxyIP, 53), transparent, explicit, transparent6, explicit6))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enf.Close() })
	if err := enf.Apply(context.Background(), plan, changes); err != nil {
		t.Fatal(err)
	}
	if err := egress.ApplyRedirect(egress.Redirect{NetNS: e.node.Fd(), To4: transparent, To6: transparent6,
		Sources: []netip.Addr{e.client.IPv4, e.client.IPv6}}); err != nil {
		t.Fatal(err)
	}
	shared := []netip.Addr{e.ext.IPv4, e.ext.IPv6}
	hosts := map[string][]netip.Addr{"good.test": shared, "other.test": shared, "evil.test": shared}
	checker := &l7.Checker{
		Engine: policy.NewEngine(store, policy.Options{}),
		Resolve: func(_ context.Context, h string) ([]netip.Addr, error) {
			if a, ok := hosts[h]; ok {
				return a, nil
			}
			return nil, fmt.Errorf("nxdomain %s", h)
		},
	}
	hooks := l7.Hooks{
		Events: event.SinkFunc(func(_ context.Context, ev event.Event) {
			e.mu.Lock()
			defer e.mu.Unlock()
			if ev.Name == event.HTTPAudit {
				e.audited = append(e.audited, ev)
			} else {
				e.blocked = append(e.blocked, ev)
			}
		}),
		// The proxy runs in the node namespace (in production: the host's).
		Dial: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = e.node.Do(func() (derr error) {
				c, derr = (&net.Dialer{}).DialContext(ctx, network, addr)
				return derr
			})
			return c, err
		},
	}
	e.tp = l7.NewTransparent(checker, l7.Limits{HelloTimeout: time.Second, IdleTimeout: 10 * time.Second}, hooks)
	ex := l7.NewExplicit(checker, l7.Limits{}, hooks)
	var lns [4]net.Listener
	if err := e.node.Do(func() (err error) {
		for i, ap := range []netip.AddrPort{transparent, transparent6, explicit, explicit6} {
			if lns[i], err = net.Listen("tcp", ap.String()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	go e.tp.Serve(lns[0])
	go e.tp.Serve(lns[1])
	go ex.Serve(lns[2])
	go ex.Serve(lns[3])
	t.Cleanup(func() { e.tp.Close(); ex.Close() })
	return e
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// serve runs HTTPS on :443 and HTTP on :80 in p, answering "<name> via <host>".
func (e *env) serve(p *netmodel.Pod, cert tls.Certificate) {
	var l443, l80 net.Listener
	if err := p.Do(func() (err error) {
		if l443, err = net.Listen("tcp", ":443"); err != nil {
			return err
		}
		l80, err = net.Listen("tcp", ":80")
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s via %s", p.Name, r.Host) })
	s := &http.Server{Handler: h}
	go s.Serve(tls.NewListener(l443, &tls.Config{Certificates: []tls.Certificate{cert}}))
	s2 := &http.Server{Handler: h}
	go s2.Serve(l80)
	e.t.Cleanup(func() { s.Close(); s2.Close() })
}

// curl runs curl in the client pod; it returns the body and curl's exit code.
func (e *env) curl(args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	base := []string{"-sS", "--max-time", "8", "--cacert", e.caPath}
	out, err := e.client.Exec(ctx, "", "curl", append(base, args...)...)
	code := 0
	if err != nil {
		code = -1
		var ee interface{ ExitCode() int }
		if errorsAs(err, &ee) {
			code = ee.ExitCode()
		}
	}
	return string(out), code
}

func (e *env) audits() []event.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]event.Event(nil), e.audited...)
}

func (e *env) lastBlocked() event.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.blocked) == 0 {
		return event.Event{}
	}
	return e.blocked[len(e.blocked)-1]
}

func TestL7EndToEnd(t *testing.T) {
	e := setup(t)
	ip := e.ext.IPv4.String()
	proxy := "http://" + explicit.String()

	t.Run("explicit-http", func(t *testing.T) {
		if out, code := e.curl("--proxy", proxy, "http://good.test/"); code != 0 || !strings.Contains(out, "external via good.test") {
			t.Fatalf("good: %d %q", code, out)
		}
		out, code := e.curl("--proxy", proxy, "-w", "%{http_code}", "http://evil.test/")
		if !strings.HasSuffix(out, "403") || !strings.Contains(out, "address-of-other-name by FirewallPolicy/apps/") {
			t.Fatalf("evil: %d %q", code, out)
		}
		if ev := e.lastBlocked(); ev.Attrs[l7.AttrMode] != string(l7.ModeHTTP) || ev.QName != "evil.test" || ev.Attrs["server.port"] != "80" || ev.Response != "403" {
			t.Fatalf("event: %+v", ev)
		}
	})
	t.Run("explicit-connect", func(t *testing.T) {
		if out, code := e.curl("--proxy", proxy, "https://good.test/"); code != 0 || !strings.Contains(out, "external via good.test") {
			t.Fatalf("good: %d %q", code, out)
		}
		out, code := e.curl("--proxy", proxy, "https://evil.test/")
		if code == 0 || !strings.Contains(out, "403") {
			t.Fatalf("evil: %d %q", code, out)
		}
		if ev := e.lastBlocked(); ev.Attrs[l7.AttrMode] != string(l7.ModeConnect) || ev.Reason != l7.ReasonOtherName || !strings.HasPrefix(ev.Policy, "FirewallPolicy/apps/") {
			t.Fatalf("event: %+v", ev)
		}
	})
	t.Run("transparent-tls", func(t *testing.T) {
		if out, code := e.curl("--resolve", "good.test:443:"+ip, "https://good.test/"); code != 0 || !strings.Contains(out, "external via good.test") {
			t.Fatalf("good: %d %q", code, out)
		}
		if out, code := e.curl("--resolve", "evil.test:443:"+ip, "https://evil.test/"); code == 0 {
			t.Fatalf("evil passed: %q", out)
		}
		if ev := e.lastBlocked(); ev.Attrs[l7.AttrMode] != string(l7.ModeTransparentTLS) || ev.Reason != l7.ReasonOtherName || ev.Response != "reset" {
			t.Fatalf("event: %+v", ev)
		}
	})
	t.Run("transparent-http", func(t *testing.T) {
		if out, code := e.curl("--resolve", "good.test:80:"+ip, "http://good.test/"); code != 0 || !strings.Contains(out, "external via good.test") {
			t.Fatalf("good: %d %q", code, out)
		}
		if out, _ := e.curl("--resolve", "evil.test:80:"+ip, "-w", "%{http_code}", "http://evil.test/"); !strings.HasSuffix(out, "403") {
			t.Fatalf("evil: %q", out)
		}
	})
	// good.test and other.test share the address and are allowed by two
	// policies: both pass in every mode (other.test first, so Decide's rule for
	// the address is cdn's); evil.test, a third name on it, does not. Every
	// other.test request is an Audit event of the staged policy.
	t.Run("two-allowed-names", func(t *testing.T) {
		before := len(e.audits())
		for _, m := range []struct {
			mode l7.Mode
			args func(name string) []string
		}{
			{l7.ModeHTTP, func(n string) []string { return []string{"--proxy", proxy, "http://" + n + "/"} }},
			{l7.ModeConnect, func(n string) []string { return []string{"--proxy", proxy, "https://" + n + "/"} }},
			{l7.ModeTransparentTLS, func(n string) []string { return []string{"--resolve", n + ":443:" + ip, "https://" + n + "/"} }},
			{l7.ModeTransparentHTTP, func(n string) []string { return []string{"--resolve", n + ":80:" + ip, "http://" + n + "/"} }},
		} {
			for _, name := range []string{"other.test", "good.test"} {
				if out, code := e.curl(m.args(name)...); code != 0 || !strings.Contains(out, "external via "+name) {
					t.Errorf("%s %s: %d %q", m.mode, name, code, out)
				}
			}
			out, code := e.curl(append([]string{"-w", "%{http_code}"}, m.args("evil.test")...)...)
			if code == 0 && !strings.HasSuffix(out, "403") {
				t.Errorf("%s evil.test passed: %q", m.mode, out)
			}
			if ev := e.lastBlocked(); ev.Attrs[l7.AttrMode] != string(m.mode) || ev.QName != "evil.test" || ev.Reason != l7.ReasonOtherName {
				t.Errorf("%s: event %+v", m.mode, ev)
			}
		}
		audits := e.audits()[before:]
		if len(audits) != 4 {
			t.Fatalf("%d audit events, want one per mode: %+v", len(audits), audits)
		}
		for _, a := range audits {
			if a.QName != "other.test" || a.Response != "" ||
				a.Policy != "FirewallPolicy/apps/staged" || a.Reason != l7.ReasonNameDenied {
				t.Errorf("audit event %+v", a)
			}
		}
	})
	ip6 := "[" + e.ext.IPv6.String() + "]"
	t.Run("ipv6", func(t *testing.T) {
		for _, name := range []string{"good.test", "other.test"} {
			if out, code := e.curl("-6", "--resolve", name+":443:"+ip6, "https://"+name+"/"); code != 0 || !strings.Contains(out, "external via "+name) {
				t.Fatalf("transparent TLS over IPv6, %s: %d %q", name, code, out)
			}
			if out, code := e.curl("-6", "--resolve", name+":80:"+ip6, "http://"+name+"/"); code != 0 || !strings.Contains(out, "external via "+name) {
				t.Fatalf("transparent HTTP over IPv6, %s: %d %q", name, code, out)
			}
		}
		if out, code := e.curl("-6", "--resolve", "evil.test:443:"+ip6, "https://evil.test/"); code == 0 {
			t.Fatalf("evil over IPv6 passed: %q", out)
		}
		if ev := e.lastBlocked(); ev.Attrs[l7.AttrMode] != string(l7.ModeTransparentTLS) || ev.Attrs[l7.AttrDestination] != e.ext.IPv6.String() || ev.Client != e.client.IPv6.String() || ev.Reason != l7.ReasonOtherName {
			t.Fatalf("event: %+v", ev)
		}
		if out, _ := e.curl("-6", "--resolve", "evil.test:80:"+ip6, "-w", "%{http_code}", "http://evil.test/"); !strings.HasSuffix(out, "403") {
			t.Fatalf("evil HTTP over IPv6: %q", out)
		}
		// SNI spoofing over IPv6.
		if out, code := e.curl("-6", "--resolve", "good.test:443:["+e.ext2.IPv6.String()+"]", "https://good.test/"); code == 0 {
			t.Fatalf("IPv6 spoof passed: %q", out)
		}
		if ev := e.lastBlocked(); ev.Reason != l7.ReasonAddrMismatch || ev.Attrs[l7.AttrDestination] != e.ext2.IPv6.String() {
			t.Fatalf("event: %+v", ev)
		}
		// The explicit proxy on its IPv6 address.
		proxy6 := "http://" + explicit6.String()
		if out, code := e.curl("--proxy", proxy6, "https://good.test/"); code != 0 || !strings.Contains(out, "external via good.test") {
			t.Fatalf("CONNECT via the IPv6 proxy address: %d %q", code, out)
		}
		if out, code := e.curl("--proxy", proxy6, "https://evil.test/"); code == 0 || !strings.Contains(out, "403") {
			t.Fatalf("evil via the IPv6 proxy address: %d %q", code, out)
		}
		if ev := e.lastBlocked(); ev.Attrs[l7.AttrMode] != string(l7.ModeConnect) || ev.Client != e.client.IPv6.String() {
			t.Fatalf("event: %+v", ev)
		}
	})
	t.Run("sni-spoofing", func(t *testing.T) {
		// Allowed name, sent to an address it does not resolve to.
		out, code := e.curl("--resolve", "good.test:443:"+e.ext2.IPv4.String(), "https://good.test/")
		if code == 0 {
			t.Fatalf("spoof passed: %q", out)
		}
		if ev := e.lastBlocked(); ev.Reason != l7.ReasonAddrMismatch || ev.Attrs[l7.AttrDestination] != e.ext2.IPv4.String() {
			t.Fatalf("event: %+v", ev)
		}
	})
	t.Run("split-client-hello", func(t *testing.T) {
		c := e.dialFromClient(t, netip.AddrPortFrom(e.ext.IPv4, 443))
		// Go's ClientHello is ~1.8 KB (post-quantum key share): 64-byte segments make
		// ~30 of them, well inside the 1 s hello timeout on a busy machine.
		tc := tls.Client(&chunked{Conn: c, size: 64, pause: 3 * time.Millisecond}, &tls.Config{ServerName: "good.test", RootCAs: e.caPool})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake with a hello in 64-byte segments: %v", err)
		}
		tc.Close()
	})
	t.Run("silent-client", func(t *testing.T) {
		c := e.dialFromClient(t, netip.AddrPortFrom(e.ext.IPv4, 443))
		c.Write([]byte{22, 3, 1}) // a record header, then silence
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Read(make([]byte, 1))
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("silent client not cut: %v after %v", err, time.Since(start))
		}
		c.Close()
		if ev := e.lastBlocked(); ev.Reason != l7.ReasonHelloTimeout {
			t.Fatalf("event: %+v", ev)
		}
		deadline := time.Now().Add(3 * time.Second)
		for e.tp.Active() != 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if n := e.tp.Active(); n != 0 {
			t.Fatalf("%d connections still held", n)
		}
	})
}

func (e *env) dialFromClient(t testing.TB, to netip.AddrPort) net.Conn {
	var c net.Conn
	if err := e.client.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", to.String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// chunked writes in small pieces with pauses: separate TCP segments.
type chunked struct {
	net.Conn
	size  int
	pause time.Duration
}

func (c *chunked) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(c.size, len(p))
		m, err := c.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
		time.Sleep(c.pause)
	}
	return n, nil
}

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
	"github.com/egressd/egressd/test/netmodel"
	"github.com/egressd/egressd/test/testenv"
)

var (
	proxyIP     = netip.MustParseAddr("169.254.20.10")
	transparent = netip.AddrPortFrom(proxyIP, 15001)
	explicit    = netip.AddrPortFrom(proxyIP, 3128)
)

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
	blocked []l7.Event
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
	// The node-local proxy address.
	if out, err := e.node.Exec(context.Background(), "", "ip", "addr", "add", proxyIP.String()+"/32", "dev", "lo"); err != nil {
		t.Fatalf("ip addr: %v %s", err, out)
	}
	cert, caPath := testCA(t, t.TempDir(), "good.test", "evil.test")
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
		egress.WithDNSExempt(netip.AddrPortFrom(proxyIP, 53), transparent, explicit))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { enf.Close() })
	if err := enf.Apply(context.Background(), plan, changes); err != nil {
		t.Fatal(err)
	}
	if err := egress.ApplyRedirect(egress.Redirect{NetNS: e.node.Fd(), To4: transparent, Sources: []netip.Addr{e.client.IPv4}}); err != nil {
		t.Fatal(err)
	}
	hosts := map[string][]netip.Addr{
		"good.test": {e.ext.IPv4}, "evil.test": {e.ext.IPv4},
	}
	checker := &l7.Checker{
		Engine: policy.NewEngine(store, policy.Options{}),
		Plan:   comp.Plan,
		Resolve: func(_ context.Context, h string) ([]netip.Addr, error) {
			if a, ok := hosts[h]; ok {
				return a, nil
			}
			return nil, fmt.Errorf("nxdomain %s", h)
		},
	}
	hooks := l7.Hooks{
		Blocked: func(_ context.Context, ev l7.Event) {
			e.mu.Lock()
			e.blocked = append(e.blocked, ev)
			e.mu.Unlock()
		},
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
	var lnT, lnE net.Listener
	if err := e.node.Do(func() (err error) {
		if lnT, err = net.Listen("tcp", transparent.String()); err != nil {
			return err
		}
		lnE, err = net.Listen("tcp", explicit.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go e.tp.Serve(lnT)
	go ex.Serve(lnE)
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

func (e *env) lastBlocked() l7.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.blocked) == 0 {
		return l7.Event{}
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
		if !strings.HasSuffix(out, "403") || !strings.Contains(out, "address-of-other-name by FirewallPolicy/apps/web") {
			t.Fatalf("evil: %d %q", code, out)
		}
		if ev := e.lastBlocked(); ev.Mode != l7.ModeHTTP || ev.Host != "evil.test" || ev.Port != 80 || ev.Response != "403" {
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
		if ev := e.lastBlocked(); ev.Mode != l7.ModeConnect || ev.Verdict.Policy != "FirewallPolicy/apps/web" {
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
		if ev := e.lastBlocked(); ev.Mode != l7.ModeTransparentTLS || ev.Verdict.Reason != l7.ReasonOtherName || ev.Response != "reset" {
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
	t.Run("sni-spoofing", func(t *testing.T) {
		// Allowed name, sent to an address it does not resolve to.
		out, code := e.curl("--resolve", "good.test:443:"+e.ext2.IPv4.String(), "https://good.test/")
		if code == 0 {
			t.Fatalf("spoof passed: %q", out)
		}
		if ev := e.lastBlocked(); ev.Verdict.Reason != l7.ReasonAddrMismatch || ev.Dst != e.ext2.IPv4 {
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
		if ev := e.lastBlocked(); ev.Verdict.Reason != l7.ReasonHelloTimeout {
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

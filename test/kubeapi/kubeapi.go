// Package kubeapi builds (once per machine, cached) and starts a real control plane
// for tests: etcd (Debian's etcd-server) and kube-apiserver built from the
// k8s.io/kubernetes Go module. No controller-manager, scheduler or kubelet run:
// tests create what those would (pod status through the status subresource).
//
//	cp := kubeapi.Start(t)          // etcd + kube-apiserver on free 127.0.0.1 ports
//	cs := kubernetes.NewForConfigOrDie(cp.Config)
//	// cp.Kubeconfig is a kubeconfig file for the same admin identity
//
// The binary is built from k8s.io/kubernetes at Version in a throwaway tools module
// (shared RECIPES "kube-apiserver + etcd") into
// $HOME/.cache/egressd/kube-apiserver-<Version>/kube-apiserver (EGRESSD_CACHE
// overrides $HOME/.cache/egressd; EGRESSD_KUBE_APISERVER names a binary to use
// instead). It is never rebuilt while the cached binary exists; a file lock makes
// concurrent test processes wait for one build. Prebuild with
// `go run ./test/kubeapi/cmd/kubeapi-build` (hack/install-test-deps.sh does).
package kubeapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/egressd/egressd/test/testenv"
	"github.com/egressd/egressd/test/toolcache"
)

// Require returns the kube-apiserver and etcd binaries, building kube-apiserver if
// needed. When they cannot be had, the test is skipped outside CI and fails in CI.
// Under -short the test is skipped.
func Require(t testing.TB) (apiserver, etcd string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: needs a real kube-apiserver and etcd (test/kubeapi)")
	}
	etcdPath, err := exec.LookPath("etcd")
	if err != nil {
		testenv.Unavailable(t, "etcd not on PATH (apt-get install etcd-server; make test-deps installs it)")
		return "", ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			var c2 context.CancelFunc
			ctx, c2 = context.WithDeadline(ctx, dl.Add(-2*time.Minute))
			defer c2()
		}
	}
	if !toolcache.IsExecutable(BinaryPath()) {
		t.Logf("building kube-apiserver %s into %s (once per machine, ~5+ minutes)", Version, CacheDir())
	}
	start := time.Now()
	bin, err := EnsureBinary(ctx, nil)
	if err != nil {
		testenv.Unavailable(t, "kube-apiserver %s: %v (prebuild with: go run ./test/kubeapi/cmd/kubeapi-build)", Version, err)
		return "", ""
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("kube-apiserver ready after %s", d.Round(time.Second))
	}
	return bin, etcdPath
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	// Config is an admin (system:masters) client config.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file with the same server and credentials.
	Kubeconfig string
	// URL is the API server's https URL.
	URL string
	// Token is the admin bearer token.
	Token string

	procs []*proc
	dir   string
}

type proc struct {
	name   string
	cmd    *exec.Cmd
	logs   *syncBuffer
	exited chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 8<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start starts etcd and kube-apiserver in a temporary directory on free ports,
// waits until the API server is ready, and stops both at the end of the test
// (their logs are printed if the test failed).
func Start(t testing.TB, extraArgs ...string) *ControlPlane {
	t.Helper()
	apiserver, etcd := Require(t)
	var lastErr error
	for range 3 { // a free port may be taken between choosing and binding it
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cp, err := StartBinaries(ctx, apiserver, etcd, t.TempDir(), extraArgs...)
		cancel()
		if err == nil {
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("control plane logs (tail):\n%s", cp.Logs(8000))
				}
				cp.Stop()
			})
			return cp
		}
		lastErr = err
	}
	t.Fatalf("starting the control plane: %v", lastErr)
	return nil
}

// StartBinaries starts etcd and kube-apiserver with files in dir. Stop them with Stop.
func StartBinaries(ctx context.Context, apiserver, etcd, dir string, extraArgs ...string) (*ControlPlane, error) {
	ports, err := testenv.FreePorts(3)
	if err != nil {
		return nil, err
	}
	cp := &ControlPlane{dir: dir}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	if err := cp.start("etcd", etcd,
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL,
		"--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		"--initial-advertise-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		"--initial-cluster", fmt.Sprintf("default=http://127.0.0.1:%d", ports[1]),
		"--unsafe-no-fsync", "--log-level", "warn",
	); err != nil {
		return nil, err
	}
	if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", ports[0]), cp.procs[0]); err != nil {
		cp.Stop()
		return nil, fmt.Errorf("etcd: %w\n%s", err, cp.Logs(4000))
	}
	saKey := filepath.Join(dir, "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		cp.Stop()
		return nil, err
	}
	tok := make([]byte, 16)
	rand.Read(tok)
	cp.Token = hex.EncodeToString(tok)
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(cp.Token+",admin,admin,system:masters\n"), 0o600); err != nil {
		cp.Stop()
		return nil, err
	}
	cp.URL = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		fmt.Sprintf("--secure-port=%d", ports[2]),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--endpoint-reconciler-type=none", // a loopback advertise address needs it
		"--service-cluster-ip-range=10.96.0.0/16",
		"--disable-admission-plugins=ServiceAccount",
		"--enable-priority-and-fairness=false",
		"--v=1",
	}
	args = append(args, extraArgs...)
	if err := cp.start("kube-apiserver", apiserver, args...); err != nil {
		cp.Stop()
		return nil, err
	}
	cp.Config = &rest.Config{
		Host:            cp.URL,
		BearerToken:     cp.Token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             1000,
		Burst:           2000,
	}
	if err := cp.waitReady(ctx); err != nil {
		cp.Stop()
		return nil, fmt.Errorf("kube-apiserver: %w\n%s", err, cp.Logs(6000))
	}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, cp.URL, cp.Token)
	if err := os.WriteFile(cp.Kubeconfig, []byte(kc), 0o600); err != nil {
		cp.Stop()
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) start(name, bin string, args ...string) error {
	p := &proc{name: name, logs: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = cp.dir
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	go func() { p.cmd.Wait(); close(p.exited) }()
	cp.procs = append(cp.procs, p)
	return nil
}

func (cp *ControlPlane) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: mustTransport(cp.Config)}
	api := cp.procs[len(cp.procs)-1]
	for {
		resp, err := client.Get(cp.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), err)
		case <-api.exited:
			return fmt.Errorf("exited before it was ready: %v", api.cmd.ProcessState)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func mustTransport(c *rest.Config) http.RoundTripper {
	rt, err := rest.TransportFor(c)
	if err != nil {
		panic(err)
	}
	return rt
}

// Logs returns the last n bytes of each process's output.
func (cp *ControlPlane) Logs(n int) string {
	var b bytes.Buffer
	for _, p := range cp.procs {
		s := p.logs.String()
		if len(s) > n {
			s = s[len(s)-n:]
		}
		fmt.Fprintf(&b, "--- %s ---\n%s\n", p.name, s)
	}
	return b.String()
}

// Stop terminates kube-apiserver and etcd (SIGTERM, then SIGKILL after 10s).
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		select {
		case <-p.exited:
			continue
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	}
}

func waitTCP(ctx context.Context, addr string, p *proc) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
			return fmt.Errorf("exited: %v", p.cmd.ProcessState)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func writeRSAKey(path string) error {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	return os.WriteFile(path, b, 0o600)
}

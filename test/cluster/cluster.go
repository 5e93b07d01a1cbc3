package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/egressd/egressd/test/testenv"
)

// Options configure Start.
type Options struct {
	// Dir holds everything of the cluster (state, configuration, logs, the node's /var
	// changes); it is created. Required.
	Dir string
	// Log receives progress lines; nil: discarded.
	Log io.Writer
	// APIPort is the host port (127.0.0.1) that reaches the API server; 0: a free one.
	APIPort int
	// Images are further image archives to import into the node's containerd (e.g.
	// the egressd image of `make image`).
	Images []string
}

// Proc is a process of the cluster, started detached (it outlives the program that
// started it, for `make cluster`).
type Proc struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// Exe is the binary, checked against /proc/PID/exe before the PID is killed.
	Exe string `json:"exe"`
	Log string `json:"log"`
}

// State is what Stop needs to tear a cluster down, also from another process
// (`make cluster-down` reads it from Dir/state.json).
type State struct {
	Name string `json:"name"`
	Dir  string `json:"dir"`
	// NodeNS and ExtNS are the network namespaces (/run/netns/NAME) of the node and of
	// the external world.
	NodeNS string `json:"nodeNetns"`
	ExtNS  string `json:"extNetns"`
	// AnchorPID holds the node's mount namespace; AnchorMntNS is that namespace's
	// identity (readlink /proc/PID/ns/mnt).
	AnchorPID   int    `json:"anchorPid"`
	AnchorMntNS string `json:"anchorMntns"`
	// CgroupRoot is kubelet's cgroupRoot, made in every cgroup hierarchy.
	CgroupRoot string `json:"cgroupRoot"`
	Procs      []Proc `json:"procs"`
	// APIPort is the host port forwarded to the API server; Kubeconfig the admin
	// kubeconfig using it.
	APIPort    int    `json:"apiPort"`
	Kubeconfig string `json:"kubeconfig"`
}

// Cluster is a running single-node cluster.
type Cluster struct {
	State
	Bin *Binaries
	// Config is the admin client configuration; Client a clientset for it.
	Config *rest.Config
	Client kubernetes.Interface
	// BinDir holds this package's helper programs (probe, pause, forward).
	BinDir string
	// Timings are the durations of Start's steps, in order.
	Timings []Timing

	log   io.Writer
	start time.Time
}

// Timing is how long one step of Start took.
type Timing struct {
	Step string
	D    time.Duration
}

type layout string

func (l layout) path(p string) string   { return filepath.Join(string(l), p) }
func (l layout) varUpper() string       { return l.path("var/upper") }
func (l layout) varWork() string        { return l.path("var/work") }
func (l layout) anchorReady() string    { return l.path("anchor.ready") }
func (l layout) containerdSock() string { return l.path("containerd/containerd.sock") }
func (l layout) sysctlFile(k string) string {
	return l.path("sysctl/" + strings.ReplaceAll(k, "/", "."))
}

// StateFile is where Start records State inside Options.Dir.
const StateFile = "state.json"

// Start brings a cluster up: node namespaces, control plane, containerd, kubelet,
// kube-proxy and CoreDNS, and returns once CoreDNS is available. On error it tears down
// what it started.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.Dir == "" {
		return nil, errors.New("cluster: Options.Dir is required")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	c := &Cluster{log: logw, start: time.Now()}
	c.logf("building or finding the node components")
	if c.Bin, err = EnsureBinaries(ctx, logw); err != nil {
		return nil, err
	}
	c.step("binaries")
	id := make([]byte, 3)
	_, _ = rand.Read(id)
	name := "egc" + hex.EncodeToString(id)
	c.State = State{Name: name, Dir: dir, NodeNS: name + "-node", ExtNS: name + "-ext", CgroupRoot: "/" + name}
	defer func() {
		if err != nil && c.Dir != "" {
			c.logf("start failed, tearing down: %v", err)
			if terr := c.Stop(); terr != nil {
				c.logf("teardown: %v", terr)
			}
		}
	}()
	l := layout(dir)
	for _, d := range []string{"var/upper", "var/work", "sysctl", "logs", "bin", "images", "kubelet/pki",
		"containerd/root", "containerd/state", "containerd/opt", "cni/net.d", "cni/ipam", "ext"} {
		if err := os.MkdirAll(l.path(d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := c.save(); err != nil {
		return nil, err
	}
	if err := c.writeFiles(ctx, l, opts.APIPort); err != nil {
		return nil, err
	}
	c.step("files")
	if err := c.setupNetwork(ctx); err != nil {
		return nil, err
	}
	if err := c.makeCgroups(); err != nil {
		return nil, err
	}
	if err := c.startAnchor(ctx, l); err != nil {
		return nil, err
	}
	c.step("namespaces")
	c.BinDir = l.path("bin")
	if err := buildHelpers(ctx, c.BinDir); err != nil {
		return nil, err
	}
	images, err := nodeImages(c.BinDir, c.Bin.CoreDNS, l.path("images"))
	if err != nil {
		return nil, err
	}
	c.step("helpers and images")

	// The external world: its DNS server and HTTP servers.
	if err := c.startExt(l, "ext-dns", c.Bin.CoreDNS, "-conf", l.path("ext/Corefile")); err != nil {
		return nil, err
	}
	if err := c.startExt(l, "ext-http", filepath.Join(c.BinDir, "probe"), "serve", "-http", ":80"); err != nil {
		return nil, err
	}

	// Control plane.
	// etcd's data lives on the anchor's private tmpfs /run: no fsync waits on a busy
	// disk (the cluster is throwaway), and it goes with the anchor.
	if err := c.startNode(l, "etcd", c.Bin.Etcd, "--data-dir", "/run/etcd",
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--log-level", "warn"); err != nil {
		return nil, err
	}
	if err := c.startNode(l, "kube-apiserver", c.Bin.Kube("kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", "--secure-port="+strconv.Itoa(apiPort), "--advertise-address="+NodeIP,
		"--tls-cert-file="+l.path("pki/apiserver.crt"), "--tls-private-key-file="+l.path("pki/apiserver.key"),
		"--client-ca-file="+l.path("pki/ca.crt"),
		"--kubelet-client-certificate="+l.path("pki/apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+l.path("pki/apiserver-kubelet-client.key"),
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-key-file="+l.path("pki/sa.key"), "--service-account-signing-key-file="+l.path("pki/sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--token-auth-file="+l.path("pki/tokens.csv"), "--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range="+ServiceCIDR, "--allow-privileged=true", "--profiling=false",
		"--cert-dir="+l.path("pki/apiserver-generated")); err != nil {
		return nil, err
	}
	if err := c.startHost("forward", filepath.Join(c.BinDir, "forward"), l,
		"-listen", "127.0.0.1:"+strconv.Itoa(c.APIPort), "-netns", "/run/netns/"+c.NodeNS,
		"-to", NodeIP+":"+strconv.Itoa(apiPort)); err != nil {
		return nil, err
	}
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	c.step("API server ready")
	// controller-manager and scheduler exit on a transient API error at start (an etcd
	// timeout on a loaded machine): they run under a restart loop.
	if err := c.startNodeRestarting(l, "kube-controller-manager", c.Bin.Kube("kube-controller-manager"),
		"--kubeconfig="+l.path("kube-controller-manager.kubeconfig"),
		"--service-account-private-key-file="+l.path("pki/sa.key"), "--root-ca-file="+l.path("pki/ca.crt"),
		"--use-service-account-credentials=true", "--leader-elect=false", "--bind-address=127.0.0.1",
		"--profiling=false"); err != nil {
		return nil, err
	}
	if err := c.startNodeRestarting(l, "kube-scheduler", c.Bin.Kube("kube-scheduler"),
		"--kubeconfig="+l.path("kube-scheduler.kubeconfig"), "--leader-elect=false", "--bind-address=127.0.0.1",
		"--profiling=false"); err != nil {
		return nil, err
	}

	// The node.
	if err := c.startNode(l, "containerd", filepath.Join(c.Bin.ContainerdDir, "containerd"),
		"--config", l.path("containerd/config.toml")); err != nil {
		return nil, err
	}
	if err := waitFile(ctx, l.containerdSock(), time.Minute, c.exited("containerd")); err != nil {
		return nil, err
	}
	for _, img := range append(images, opts.Images...) {
		if img, err = filepath.Abs(img); err != nil { // ctr runs in /
			return nil, err
		}
		if err := c.ImportImage(ctx, img); err != nil {
			return nil, err
		}
	}
	c.step("containerd up, images imported")
	if err := c.startNode(l, "kubelet", c.Bin.Kube("kubelet"),
		"--config="+l.path("kubelet.yaml"), "--kubeconfig="+l.path("kubelet.kubeconfig"),
		"--root-dir="+l.path("kubelet"), "--cert-dir="+l.path("kubelet/pki"),
		"--node-ip="+NodeIP, "--hostname-override="+NodeName); err != nil {
		return nil, err
	}
	if err := c.startNode(l, "kube-proxy", c.Bin.Kube("kube-proxy"), "--config="+l.path("kube-proxy.yaml")); err != nil {
		return nil, err
	}
	if err := c.waitNodeReady(ctx); err != nil {
		return nil, err
	}
	c.step("node Ready")
	if _, err := c.KubectlInput(ctx, addonsManifest(), "apply", "-f", "-"); err != nil {
		return nil, err
	}
	if err := c.WaitDeploymentAvailable(ctx, "kube-system", "coredns", 3*time.Minute); err != nil {
		return nil, err
	}
	c.step("CoreDNS available")
	return c, nil
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.log, "cluster [%5.1fs] %s\n", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

func (c *Cluster) step(name string) {
	var prev time.Duration
	for _, t := range c.Timings {
		prev += t.D
	}
	d := time.Since(c.start) - prev
	c.Timings = append(c.Timings, Timing{name, d})
	c.logf("%s (+%s)", name, d.Round(10*time.Millisecond))
}

func (c *Cluster) save() error {
	b, err := json.MarshalIndent(c.State, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(c.Dir, StateFile)
	if err := os.WriteFile(p+".tmp", b, 0o600); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// writeFiles writes the PKI, tokens, kubeconfigs and every component's configuration.
func (c *Cluster) writeFiles(ctx context.Context, l layout, port int) error {
	p, err := newPKI(l.path("pki"))
	if err != nil {
		return err
	}
	if err := p.issue("apiserver", "kube-apiserver", nil, "127.0.0.1", NodeIP, APIServiceIP, "localhost",
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc."+ClusterDomain); err != nil {
		return err
	}
	if err := p.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}); err != nil {
		return err
	}
	if err := p.serviceAccountKey(); err != nil {
		return err
	}
	ids := []identity{
		{name: "admin", user: "admin", groups: []string{"system:masters"}},
		{name: "kube-controller-manager", user: "system:kube-controller-manager"},
		{name: "kube-scheduler", user: "system:kube-scheduler"},
		{name: "kube-proxy", user: "system:kube-proxy"},
		{name: "kubelet", user: "system:node:" + NodeName, groups: []string{"system:nodes"}},
	}
	for i := range ids {
		ids[i].token = newToken()
	}
	if err := writeTokens(l.path("pki/tokens.csv"), ids); err != nil {
		return err
	}
	inNode := fmt.Sprintf("https://%s:%d", NodeIP, apiPort)
	for _, id := range ids {
		if err := writeKubeconfig(l.path(id.name+".kubeconfig"), inNode, p.caPEM, id.token); err != nil {
			return err
		}
	}
	if port == 0 {
		ports, err := testenv.FreePorts(1)
		if err != nil {
			return err
		}
		port = ports[0]
	}
	c.APIPort = port
	c.Kubeconfig = l.path("kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, fmt.Sprintf("https://127.0.0.1:%d", port), p.caPEM, ids[0].token); err != nil {
		return err
	}
	for k, v := range sysctls {
		if err := os.WriteFile(l.sysctlFile(k), []byte(v+"\n"), 0o644); err != nil {
			return err
		}
	}
	files := map[string]string{
		"containerd/config.toml":       containerdConfig(l, c.Bin),
		"cni/net.d/10-bridge.conflist": cniConfig(l),
		"kubelet.yaml":                 kubeletConfig(l, c.CgroupRoot),
		"kube-proxy.yaml":              kubeProxyConfig(l),
		"resolv.conf":                  "nameserver " + ExternalDNS + "\n",
		"ext/Corefile":                 externalCorefile(l),
		"ext/zone":                     externalZoneFile(),
	}
	for name, content := range files {
		if err := os.WriteFile(l.path(name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return c.save()
}

// run runs a short command and returns its output, with the output in the error.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// setupNetwork makes the node and external network namespaces and the veth between
// them. Nothing is done in the host's network namespace but creating the names.
func (c *Cluster) setupNetwork(ctx context.Context) error {
	node, ext := c.NodeNS, c.ExtNS
	cmds := [][]string{
		{"ip", "netns", "add", node},
		{"ip", "netns", "add", ext},
		{"ip", "-n", node, "link", "set", "lo", "up"},
		{"ip", "-n", ext, "link", "set", "lo", "up"},
		{"ip", "-n", node, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", ext},
		{"ip", "-n", node, "addr", "add", NodeIP + "/24", "dev", "ext0"},
		{"ip", "-n", node, "link", "set", "ext0", "up"},
		{"ip", "-n", ext, "link", "set", "eth0", "up"},
	}
	for _, n := range sortedKeys(ExternalHosts) {
		cmds = append(cmds, []string{"ip", "-n", ext, "addr", "add", ExternalHosts[n] + "/24", "dev", "eth0"})
	}
	cmds = append(cmds, []string{"ip", "-n", ext, "route", "add", ClusterCIDR, "via", NodeIP},
		// The node's default route points at the external world, as a real node's does;
		// without one, a host-network process cannot even send to a Service IP (the
		// route lookup fails before kube-proxy's DNAT).
		[]string{"ip", "-n", node, "route", "add", "default", "via", ExternalDNS})
	for _, cmd := range cmds {
		if cmd[1] == "netns" {
			// record before creating, so that a failure tears the name down
			if err := c.save(); err != nil {
				return err
			}
		}
		if _, err := run(ctx, cmd[0], cmd[1:]...); err != nil && !strings.Contains(err.Error(), "File exists") {
			return err
		}
	}
	// Forwarding in the node's namespace only: nsenter writes /proc/sys/net as seen
	// from inside it.
	_, err := run(ctx, "nsenter", "--net=/run/netns/"+node, "--", "sh", "-c",
		"echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")
	return err
}

// cgroupHierarchies are the directories under /sys/fs/cgroup (v1 controllers, the
// named systemd hierarchy and the unified one).
func cgroupHierarchies() ([]string, error) {
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return out, nil
}

// makeCgroups makes kubelet's cgroupRoot in every hierarchy (kubelet requires it to
// exist); a new cpuset needs its parent's cpus and mems before tasks can join.
func (c *Cluster) makeCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		d := filepath.Join(h, c.CgroupRoot)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", d, err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(d, f), err)
				}
			}
		}
	}
	return nil
}

// detached starts cmd in its own session with stdout and stderr to logPath, reaps it in
// the background, and records it.
func (c *Cluster) detached(name, exe string, cmd *exec.Cmd, logPath string) error {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = append(os.Environ(), "PATH="+c.Bin.ContainerdDir+":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { _ = cmd.Wait() }()
	c.Procs = append(c.Procs, Proc{Name: name, PID: cmd.Process.Pid, Exe: exe, Log: logPath})
	return c.save()
}

// startAnchor starts the process whose mount namespace the node's daemons share
// (private /run and /var, kubelet's sysctls) and which sits in the node's network
// namespace.
func (c *Cluster) startAnchor(ctx context.Context, l layout) error {
	cmd := exec.Command(c.Bin.Unshare, "--mount", "--propagation", "private", "--",
		c.Bin.Nsenter, "--net=/run/netns/"+c.NodeNS, "--", "/bin/sh", "-c", anchorScript(l))
	if err := c.detached("anchor", "/usr/bin/sleep", cmd, l.path("logs/anchor.log")); err != nil {
		return err
	}
	c.AnchorPID = cmd.Process.Pid
	if err := waitFile(ctx, l.anchorReady(), 30*time.Second, c.exited("anchor")); err != nil {
		b, _ := os.ReadFile(l.path("logs/anchor.log"))
		return fmt.Errorf("anchor: %w: %s", err, b)
	}
	mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", c.AnchorPID))
	if err != nil {
		return err
	}
	c.AnchorMntNS = mnt
	return c.save()
}

// startNode starts a daemon inside the anchor's mount and network namespaces.
func (c *Cluster) startNode(l layout, name, bin string, args ...string) error {
	cmd := exec.Command(c.Bin.Nsenter, append([]string{"-t", strconv.Itoa(c.AnchorPID), "-m", "-n", "--", bin}, args...)...)
	cmd.Dir = "/"
	return c.detached(name, bin, cmd, l.path("logs/"+name+".log"))
}

// startNodeRestarting is startNode under a shell loop that restarts the daemon a
// second after it exits.
func (c *Cluster) startNodeRestarting(l layout, name, bin string, args ...string) error {
	loop := `while :; do "$0" "$@"; echo "exited ($?), restarting"; sleep 1; done`
	cmd := exec.Command(c.Bin.Nsenter, append([]string{"-t", strconv.Itoa(c.AnchorPID), "-m", "-n", "--", "/bin/sh", "-c", loop, bin}, args...)...)
	cmd.Dir = "/"
	return c.detached(name, "/usr/bin/dash", cmd, l.path("logs/"+name+".log"))
}

// startExt starts a daemon in the external network namespace.
func (c *Cluster) startExt(l layout, name, bin string, args ...string) error {
	cmd := exec.Command(c.Bin.Nsenter, append([]string{"--net=/run/netns/" + c.ExtNS, "--", bin}, args...)...)
	cmd.Dir = "/"
	return c.detached(name, bin, cmd, l.path("logs/"+name+".log"))
}

// startHost starts a process in the host's namespaces.
func (c *Cluster) startHost(name, bin string, l layout, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	return c.detached(name, bin, cmd, l.path("logs/"+name+".log"))
}

// exited returns a check that reports the named process's exit (with its log's tail).
func (c *Cluster) exited(name string) func() error {
	return func() error {
		for _, p := range c.Procs {
			if p.Name == name && !processAlive(p.PID) {
				return fmt.Errorf("%s exited: %s", name, tail(p.Log, 2000))
			}
		}
		return nil
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// processAlive reports whether pid runs (a zombie does not: PID 1 here reaps slowly).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func waitFile(ctx context.Context, path string, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if err := check(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s", path, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// connect waits until the API server answers /readyz through the forwarder.
func (c *Cluster) connect(ctx context.Context) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/readyz", nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		for _, n := range []string{"etcd", "kube-apiserver", "forward"} {
			if err := c.exited(n)(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("API server not ready within 2m (last: %v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (c *Cluster) waitNodeReady(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err == nil {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		for _, p := range []string{"kubelet", "kube-proxy", "containerd"} {
			if err := c.exited(p)(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not Ready within 2m: %v; kubelet log: %s", NodeName, err, tail(c.procLog("kubelet"), 3000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (c *Cluster) procLog(name string) string {
	for _, p := range c.Procs {
		if p.Name == name {
			return p.Log
		}
	}
	return ""
}

// WaitDeploymentAvailable waits until every replica of the Deployment is updated and
// available.
func (c *Cluster) WaitDeploymentAvailable(ctx context.Context, ns, name string, timeout time.Duration) error {
	_, err := c.Kubectl(ctx, "-n", ns, "rollout", "status", "deployment/"+name, "--timeout="+timeout.String())
	return err
}

// ImportImage imports an image archive into the node's containerd (namespace k8s.io,
// where kubelet's images live).
func (c *Cluster) ImportImage(ctx context.Context, archive string) error {
	_, err := run(ctx, c.Bin.Nsenter, "-t", strconv.Itoa(c.AnchorPID), "-m", "-n", "--",
		filepath.Join(c.Bin.ContainerdDir, "ctr"), "--address", layout(c.Dir).containerdSock(),
		"-n", "k8s.io", "images", "import", "--platform", "linux/amd64", archive)
	return err
}

// Kubectl runs the cluster's kubectl with the admin kubeconfig and returns its output.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) ([]byte, error) {
	return c.KubectlInput(ctx, "", args...)
}

// KubectlInput is Kubectl with stdin.
func (c *Cluster) KubectlInput(ctx context.Context, stdin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.Bin.Kube("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}

// NodeExec runs a command inside the node's mount and network namespaces (nft, ip,
// crictl-like inspection).
func (c *Cluster) NodeExec(ctx context.Context, name string, args ...string) ([]byte, error) {
	return run(ctx, c.Bin.Nsenter, append([]string{"-t", strconv.Itoa(c.AnchorPID), "-m", "-n", "--", name}, args...)...)
}

// Logs returns the tail (n bytes) of a component's log (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy, ext-dns,
// ext-http, forward).
func (c *Cluster) Logs(name string, n int) string { return tail(c.procLog(name), n) }

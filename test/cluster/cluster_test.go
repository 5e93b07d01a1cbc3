package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/test/cluster"
	"github.com/egressd/egressd/test/testenv"
)

// One cluster serves every test of the package (bringing it up takes 15-30 s warm);
// TestMain tears it down and checks that the host is as it was.
var (
	sharedOnce sync.Once
	shared     *cluster.Cluster
	sharedErr  error
	sharedDir  string
	hostBefore hostState
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		start := time.Now()
		err := shared.Stop()
		fmt.Fprintf(os.Stderr, "cluster torn down in %s\n", time.Since(start).Round(10*time.Millisecond))
		if err != nil {
			fmt.Fprintln(os.Stderr, "teardown:", err)
			code = 1
		}
		if diff := hostBefore.diff(readHostState()); diff != "" {
			fmt.Fprintf(os.Stderr, "the host changed across the cluster's life:\n%s", diff)
			code = 1
		}
		if code == 0 {
			os.RemoveAll(sharedDir)
		} else {
			fmt.Fprintf(os.Stderr, "cluster files and logs kept in %s\n", sharedDir)
		}
	}
	os.Exit(code)
}

// hostState is what the cluster must leave as it found it in the host's namespaces.
type hostState struct {
	nft, links, mounts, netns, cgroups string
}

func readHostState() hostState {
	out := func(name string, args ...string) string {
		b, _ := exec.Command(name, args...).CombinedOutput()
		return string(b)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var ms []string
	for _, l := range strings.Split(string(mounts), "\n") {
		// mount points of this package's clusters (other tests of the machine come
		// and go meanwhile)
		if f := strings.Fields(l); len(f) > 4 && (strings.Contains(f[4], "/egc") || strings.Contains(f[4], "egressd-cluster-")) {
			ms = append(ms, f[4])
		}
	}
	sort.Strings(ms)
	var cg []string
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range ents {
		sub, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", h.Name()))
		for _, s := range sub {
			if s.IsDir() && strings.HasPrefix(s.Name(), "egc") {
				cg = append(cg, h.Name()+"/"+s.Name())
			}
		}
	}
	var ns []string
	nsents, _ := os.ReadDir("/run/netns")
	for _, e := range nsents {
		if strings.HasPrefix(e.Name(), "egc") {
			ns = append(ns, e.Name())
		}
	}
	return hostState{
		nft:     out("nft", "list", "tables"),
		links:   out("ip", "-o", "link", "show"),
		mounts:  strings.Join(ms, "\n"),
		netns:   strings.Join(ns, "\n"),
		cgroups: strings.Join(cg, "\n"),
	}
}

func (a hostState) diff(b hostState) string {
	var s strings.Builder
	for _, f := range []struct{ name, a, b string }{
		{"nft tables", a.nft, b.nft}, {"links", stripCounters(a.links), stripCounters(b.links)},
		{"mounts", a.mounts, b.mounts}, {"egc netns", a.netns, b.netns}, {"egc cgroups", a.cgroups, b.cgroups},
	} {
		if f.a != f.b {
			fmt.Fprintf(&s, "%s before:\n%s\nafter:\n%s\n", f.name, f.a, f.b)
		}
	}
	return s.String()
}

// stripCounters keeps a link's index and name (its flags and state may change on
// their own).
func stripCounters(links string) string {
	var out []string
	for _, l := range strings.Split(links, "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			out = append(out, f[0]+" "+f[1])
		}
	}
	return strings.Join(out, "\n")
}

// requireCluster returns the shared cluster, starting it on first use.
func requireCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	testenv.SkipShort(t, "brings up a real single-node cluster")
	testenv.RequireRoot(t)
	testenv.RequireTools(t, "ip", "nsenter", "unshare", "runc", "etcd", "nft", "ldd", "go")
	sharedOnce.Do(func() {
		hostBefore = readHostState()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
		defer cancel()
		if !cluster.BuildsCached() {
			t.Logf("building the node components (once per machine, 15-30 minutes; prebuild: go run ./test/cluster/cmd/cluster-build)")
		}
		if _, err := cluster.EnsureBinaries(ctx, nil); err != nil {
			sharedErr = fmt.Errorf("unavailable: %w", err)
			return
		}
		sharedDir, sharedErr = os.MkdirTemp("", "egressd-cluster-")
		if sharedErr != nil {
			return
		}
		start := time.Now()
		shared, sharedErr = cluster.Start(ctx, cluster.Options{Dir: sharedDir, Log: testWriter{t}})
		if sharedErr == nil {
			t.Logf("cluster up in %s: %v", time.Since(start).Round(10*time.Millisecond), shared.Timings)
		}
	})
	if sharedErr != nil {
		if strings.HasPrefix(sharedErr.Error(), "unavailable: ") {
			testenv.Unavailable(t, "%v", sharedErr)
		}
		t.Fatalf("cluster: %v", sharedErr)
	}
	return shared
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// probeResult is what the probe program prints (test/cluster/cmd/probe).
type probeResult struct {
	Server  string   `json:"server"`
	Rcode   string   `json:"rcode"`
	Answers []string `json:"answers"`
	EDE     []string `json:"ede"`
	Status  int      `json:"status"`
	Body    string   `json:"body"`
	Err     string   `json:"err"`
	Millis  int64    `json:"ms"`
}

// probe runs the probe program in a pod (kubectl exec) and returns its result.
func probe(t *testing.T, c *cluster.Cluster, ns, pod string, args ...string) probeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Kubectl(ctx, append([]string{"-n", ns, "exec", pod, "--", "/probe"}, args...)...)
	if err != nil {
		t.Fatalf("probe %v in %s/%s: %v", args, ns, pod, err)
	}
	var r probeResult
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe %v: %v: %s", args, err, out)
	}
	return r
}

func apply(t *testing.T, c *cluster.Cluster, manifest string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.KubectlInput(ctx, manifest, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

func kubectl(t *testing.T, c *cluster.Cluster, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	out, err := c.Kubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// deployment is a one-replica Deployment of the probe image.
func deployment(ns, name string, labels map[string]string, hostNetwork bool, args ...string) string {
	var lb strings.Builder
	for _, k := range sortedKeys(labels) {
		fmt.Fprintf(&lb, "        %s: %s\n", k, labels[k])
	}
	a, _ := json.Marshal(args)
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[2]s
  namespace: %[1]s
spec:
  replicas: 1
  selector:
    matchLabels:
      deployment: %[2]s
  template:
    metadata:
      labels:
        deployment: %[2]s
%[3]s    spec:
      hostNetwork: %[5]t
      dnsPolicy: %[6]s
      terminationGracePeriodSeconds: 1
      containers:
      - name: probe
        image: %[4]s
        imagePullPolicy: Never
        args: %[7]s
`, ns, name, lb.String(), cluster.ProbeImage, hostNetwork, map[bool]string{false: "ClusterFirst", true: "ClusterFirstWithHostNet"}[hostNetwork], a)
}

func sortedKeys(m map[string]string) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

// podOf waits for the Deployment's rollout and returns its one running pod.
func podOf(t *testing.T, c *cluster.Cluster, ns, deploy string) string {
	t.Helper()
	kubectl(t, c, "-n", ns, "rollout", "status", "deployment/"+deploy, "--timeout=3m")
	out := kubectl(t, c, "-n", ns, "get", "pods", "-l", "deployment="+deploy,
		"--field-selector=status.phase=Running", "-o", "jsonpath={range .items[?(@.metadata.deletionTimestamp)]}{end}{range .items[*]}{.metadata.name}{\"\\n\"}{end}")
	pods := strings.Fields(out)
	if len(pods) == 0 {
		t.Fatalf("no running pod of deployment %s/%s", ns, deploy)
	}
	return pods[len(pods)-1]
}

func namespace(t *testing.T, c *cluster.Cluster, name string) {
	t.Helper()
	apply(t, c, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", name))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		_, _ = c.Kubectl(ctx, "delete", "namespace", name, "--wait=false")
	})
}

// TestNodeServesPods: the bare node (no egressd) runs pods from Deployments with
// bridge-CNI addresses, DNS through the kube-dns Service (CoreDNS), external names,
// a ClusterIP Service, and kubelet probes.
func TestNodeServesPods(t *testing.T) {
	c := requireCluster(t)
	namespace(t, c, "basics")
	apply(t, c, deployment("basics", "client", map[string]string{"app": "client"}, false, "idle"))
	apply(t, c, deployment("basics", "server", map[string]string{"app": "server"}, false, "serve")+`        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
        livenessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: server
  namespace: basics
spec:
  selector: {app: server}
  ports: [{port: 80}]
`)
	client := podOf(t, c, "basics", "client")
	podOf(t, c, "basics", "server")

	r := probe(t, c, "basics", client, "dns", "kubernetes.default.svc.cluster.local")
	if r.Server != cluster.DNSServiceIP+":53" || r.Rcode != "NOERROR" || len(r.Answers) != 1 || r.Answers[0] != cluster.APIServiceIP {
		t.Errorf("kubernetes.default through the pod's resolv.conf: %+v", r)
	}
	r = probe(t, c, "basics", client, "dns", "allowed.example.test")
	if r.Rcode != "NOERROR" || len(r.Answers) != 1 || r.Answers[0] != cluster.ExternalHosts["allowed.example.test"] {
		t.Errorf("external name through CoreDNS: %+v", r)
	}
	r = probe(t, c, "basics", client, "dns", "nothing.example.test")
	if r.Rcode != "NXDOMAIN" {
		t.Errorf("unknown external name: %+v", r)
	}
	r = probe(t, c, "basics", client, "http", "http://allowed.example.test/")
	if r.Status != 200 {
		t.Errorf("external HTTP: %+v", r)
	}
	r = probe(t, c, "basics", client, "http", "http://server.basics.svc.cluster.local/")
	if r.Status != 200 || !strings.HasPrefix(r.Body, "ok server-") {
		t.Errorf("ClusterIP Service: %+v", r)
	}
}

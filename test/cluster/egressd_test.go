package cluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/test/cluster"
)

// The smoke namespace's policy: client pods may look up and reach only
// allowed.example.test on port 80, and the server pods of their namespace on port 80.
const smokePolicy = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata:
  name: client-egress
  namespace: smoke
spec:
  podSelector:
    matchLabels: {app: client}
  lookups: Enforce
  egress:
  - name: allowed-site
    action: Allow
    to: [{fqdn: {matchName: allowed.example.test}}]
    ports: [{port: 80}]
  - name: servers
    action: Allow
    to: [{pods: {podSelector: {matchLabels: {app: server}}}}]
    ports: [{port: 80}]
`

// serverWithService is the probe server Deployment "server" (labels app=server, HTTP
// readiness and liveness probes) and its ClusterIP Service.
func serverWithService(ns string) string {
	return deployment(ns, "server", map[string]string{"app": "server"}, false, "serve") + fmt.Sprintf(`        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
        livenessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
          failureThreshold: 2
---
apiVersion: v1
kind: Service
metadata:
  name: server
  namespace: %s
spec:
  selector: {app: server}
  ports: [{port: 80}]
`, ns)
}

// installKustomize installs egressd from deploy/ as shipped (kubectl apply -k) and
// removes it at the end of the test.
func installKustomize(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	requireEgressdImage(t, c)
	deploy := filepath.Join(repoRoot(t), "deploy")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if err := c.InstallKustomize(ctx, deploy); err != nil {
		t.Logf("egressd pods:\n%s", kubectlOut(c, "-n", "egressd", "describe", "pods"))
		t.Logf("egressd logs:\n%s", kubectlOut(c, "-n", "egressd", "logs", "ds/egressd", "--tail=50"))
		t.Fatal(err)
	}
	t.Logf("egressd installed (kubectl apply -k deploy/) and ready in %s", time.Since(start).Round(10*time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("egressd logs:\n%s", kubectlOut(c, "-n", "egressd", "logs", "ds/egressd", "--tail=100"))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := c.UninstallKustomize(ctx, deploy); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})
}

// kubectlOut runs kubectl for diagnostics (errors become the output).
func kubectlOut(c *cluster.Cluster, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := c.Kubectl(ctx, args...)
	if err != nil {
		return err.Error()
	}
	return string(out)
}

// TestEgressdOnNode installs egressd from deploy/ with `kubectl apply -k` using the
// image `make image` builds, and checks its behaviour with real pods created by
// Deployments on the real node (kubelet, containerd, bridge CNI, kube-proxy in
// nftables mode, CoreDNS behind kube-dns).
func TestEgressdOnNode(t *testing.T) {
	c := requireCluster(t)
	installKustomize(t, c)
	namespace(t, c, "smoke")
	apply(t, c, smokePolicy)
	apply(t, c, deployment("smoke", "client", map[string]string{"app": "client"}, false, "idle"))
	apply(t, c, serverWithService("smoke"))
	client := podOf(t, c, "smoke", "client")
	podOf(t, c, "smoke", "server")
	allowedIP := cluster.ExternalHosts["allowed.example.test"]
	deniedIP := cluster.ExternalHosts["denied.example.test"]

	t.Run("AllowedLookupAndConnection", func(t *testing.T) {
		r := probe(t, c, "smoke", client, "dns", "allowed.example.test")
		if r.Rcode != "NOERROR" || !slices.Equal(r.Answers, []string{allowedIP}) {
			t.Errorf("allowed lookup: %+v", r)
		}
		if r := probe(t, c, "smoke", client, "http", "http://allowed.example.test/"); r.Status != 200 {
			t.Errorf("allowed connection: %+v", r)
		}
	})
	t.Run("BlockedLookup", func(t *testing.T) {
		// The pod's resolv.conf is kubelet's default (nameserver = kube-dns's cluster IP):
		// an Extended DNS Error in the answer shows egressd answered, not CoreDNS.
		r := probe(t, c, "smoke", client, "dns", "denied.example.test")
		if r.Server != cluster.DNSServiceIP+":53" {
			t.Errorf("the pod asked %s, want kube-dns %s from its default resolv.conf", r.Server, cluster.DNSServiceIP)
		}
		if r.Rcode != "NXDOMAIN" || len(r.Answers) != 0 {
			t.Errorf("blocked lookup: %+v, want NXDOMAIN", r)
		}
		if len(r.EDE) == 0 || !strings.HasPrefix(r.EDE[0], "15: ") || !strings.Contains(r.EDE[0], "client-egress") {
			t.Errorf("blocked lookup EDE %q, want Blocked (15) naming FirewallPolicy client-egress", r.EDE)
		}
	})
	t.Run("DroppedConnection", func(t *testing.T) {
		// The address was never an allowed lookup's answer: the connection is dropped.
		if r := probe(t, c, "smoke", client, "http", "-timeout", "2s", "http://"+deniedIP+"/"); r.Err == "" {
			t.Errorf("connection to %s (no allowed lookup): %+v, want a drop", deniedIP, r)
		}
	})
	t.Run("InterceptNextToKubeProxy", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rs, err := c.NodeExec(ctx, "nft", "list", "ruleset")
		if err != nil {
			t.Fatal(err)
		}
		hooks := baseChains(string(rs))
		t.Logf("base chains in the node (table/chain: hook priority):\n%s", strings.Join(hooks, "\n"))
		if !slices.ContainsFunc(hooks, func(h string) bool { return strings.Contains(h, "l7_dns_intercept") }) {
			t.Errorf("no l7_dns_intercept chain: is --intercept-dns auto the shipped default?")
		}
		if !slices.ContainsFunc(hooks, func(h string) bool { return strings.HasPrefix(h, "ip kube-proxy/") }) {
			t.Errorf("no kube-proxy table in the node")
		}
		// The interception must DNAT before kube-proxy's Service DNAT: between
		// nat chains of equal priority the kernel promises no order.
		intercept, okI := chainPriority(hooks, "inet egressd/l7_dns_intercept")
		kubeNAT, okK := chainPriority(hooks, "ip kube-proxy/nat-prerouting")
		if !okI || !okK || intercept >= kubeNAT {
			t.Errorf("l7_dns_intercept priority %d (found %v), kube-proxy nat-prerouting %d (found %v): want the interception strictly first", intercept, okI, kubeNAT, okK)
		}
		// CoreDNS behind the Service still answers for cluster names through egressd.
		r := probe(t, c, "smoke", client, "dns", "server.smoke.svc.cluster.local")
		if r.Rcode != "NOERROR" || len(r.Answers) != 1 {
			t.Errorf("cluster name through the intercepted kube-dns: %+v", r)
		}
	})
	t.Run("ClusterIPServiceToAllowedPod", func(t *testing.T) {
		r := probe(t, c, "smoke", client, "http", "http://server.smoke.svc.cluster.local/")
		if r.Status != 200 || !strings.HasPrefix(r.Body, "ok server-") {
			t.Errorf("ClusterIP Service: %+v", r)
		}
	})
	t.Run("ProbesUnderDefaultDenyIngress", func(t *testing.T) {
		namespace(t, c, "probes")
		apply(t, c, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
  namespace: probes
spec:
  podSelector: {}
  policyTypes: [Ingress]
`)
		apply(t, c, serverWithService("probes"))
		pod := podOf(t, c, "probes", "server")
		// The policy is enforced: another namespace's pod cannot reach the server.
		if r := probe(t, c, "smoke", client, "http", "-timeout", "2s", "http://server.probes.svc.cluster.local/"); r.Err == "" {
			t.Errorf("default-deny ingress not enforced: %+v", r)
		}
		// Yet kubelet's probes (from the node) keep passing: after 8 liveness periods
		// (failureThreshold 2) the pod is still Ready and never restarted.
		time.Sleep(8 * time.Second)
		out := kubectl(t, c, "-n", "probes", "get", "pod", pod, "-o",
			`jsonpath={.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}`)
		if strings.TrimSpace(out) != "true 0" {
			t.Errorf("server under default-deny ingress: ready/restarts %q, want \"true 0\"; events:\n%s", out,
				kubectlOut(c, "-n", "probes", "describe", "pod", pod))
		}
	})
	t.Run("RecreatedPodEnforced", func(t *testing.T) {
		// A watcher pod connects to the denied address every 50 ms from its start and
		// logs each attempt; it is deleted and recreated by its Deployment with a new
		// IP. For each incarnation: the last successful connection relative to Ready.
		apply(t, c, deployment("smoke", "watcher", map[string]string{"app": "client"}, false, "watch", "-every", "50ms", deniedIP+":80"))
		var ips []string
		for i := range 2 {
			pod := podOf(t, c, "smoke", "watcher")
			ip := strings.TrimSpace(kubectl(t, c, "-n", "smoke", "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
			ready := readyTime(t, c, "smoke", pod)
			time.Sleep(3 * time.Second) // attempts after Ready
			lastOK, fails, afterReady := watchLog(t, c, "smoke", pod, ready)
			delay := "never connected"
			if !lastOK.IsZero() {
				delay = lastOK.Sub(ready).String()
			}
			t.Logf("incarnation %d: pod %s IP %s Ready at %s; last successful connection relative to Ready: %s; %d/%d attempts after Ready failed",
				i, pod, ip, ready.Format(time.RFC3339), delay, fails, afterReady)
			// A generous bound (Ready has one-second resolution): enforced within 5 s
			// of Ready, and every attempt from 5 s after Ready on failed.
			if !lastOK.IsZero() && lastOK.After(ready.Add(5*time.Second)) {
				t.Errorf("incarnation %d (%s): connections to the denied address succeeded %s after Ready", i, ip, lastOK.Sub(ready))
			}
			if afterReady == 0 {
				t.Errorf("incarnation %d: no attempts logged after Ready", i)
			}
			ips = append(ips, ip)
			if i == 0 {
				kubectl(t, c, "-n", "smoke", "delete", "pod", pod, "--wait=true")
			}
		}
		if ips[0] == ips[1] {
			t.Errorf("the recreated pod kept IP %s; want a new one", ips[0])
		}
	})
	t.Run("HostNetworkPodLeftAlone", func(t *testing.T) {
		// Labelled like the client, so the policy selects it; hostNetwork pods are the
		// node's own traffic and egressd leaves them alone.
		apply(t, c, deployment("smoke", "hostnet", map[string]string{"app": "client"}, true, "idle"))
		pod := podOf(t, c, "smoke", "hostnet")
		if r := probe(t, c, "smoke", pod, "http", "http://"+deniedIP+"/"); r.Status != 200 {
			t.Errorf("hostNetwork pod's connection to %s: %+v, want it untouched", deniedIP, r)
		}
	})
}

// baseChains lists "family table/chain: hook H priority P" for every base chain of
// an nft ruleset listing.
func baseChains(ruleset string) []string {
	var out []string
	var table string
	sc := bufio.NewScanner(strings.NewReader(ruleset))
	var chain string
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(l, "table "):
			f := strings.Fields(l)
			if len(f) >= 3 {
				table = f[1] + " " + f[2]
			}
		case strings.HasPrefix(l, "chain "):
			chain = strings.Fields(l)[1]
		case strings.HasPrefix(l, "type ") && strings.Contains(l, " hook "):
			out = append(out, fmt.Sprintf("%s/%s: %s", table, chain, strings.TrimSuffix(l, ";")))
		}
	}
	return out
}

// chainPriority is the numeric priority of the base chain "family table/chain"
// in baseChains' output ("… priority dstnat - 5" or "… priority -105").
func chainPriority(hooks []string, name string) (int, bool) {
	named := map[string]int{"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}
	for _, h := range hooks {
		if !strings.HasPrefix(h, name+":") {
			continue
		}
		_, rest, ok := strings.Cut(h, " priority ")
		if !ok {
			return 0, false
		}
		f := strings.Fields(strings.Split(rest, ";")[0])
		if len(f) == 0 {
			return 0, false
		}
		base, ok := named[f[0]]
		if !ok {
			n, err := strconv.Atoi(f[0])
			if err != nil {
				return 0, false
			}
			base = n
		}
		if len(f) == 3 {
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return 0, false
			}
			if f[1] == "-" {
				n = -n
			}
			base += n
		}
		return base, true
	}
	return 0, false
}

// readyTime is when the pod's Ready condition last became true.
func readyTime(t *testing.T, c *cluster.Cluster, ns, pod string) time.Time {
	t.Helper()
	out := kubectl(t, c, "-n", ns, "get", "pod", pod, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].lastTransitionTime}`)
	ts, err := time.Parse(time.RFC3339, strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("pod %s Ready time %q: %v", pod, out, err)
	}
	return ts
}

// watchLog reads a watcher pod's log ("<unix ms> ok|fail" lines): the time of the
// last successful attempt, and how many attempts after ready failed out of how many.
func watchLog(t *testing.T, c *cluster.Cluster, ns, pod string, ready time.Time) (lastOK time.Time, fails, after int) {
	t.Helper()
	out := kubectl(t, c, "-n", ns, "logs", pod)
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		at := time.UnixMilli(ms)
		if f[1] == "ok" {
			lastOK = at
		}
		if at.After(ready) {
			after++
			if f[1] == "fail" {
				fails++
			}
		}
	}
	return lastOK, fails, after
}

// auditEvents returns the audit lines (JSON with "event") of the agent's output.
func auditEvents(c *cluster.Cluster, event string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(kubectlOut(c, "-n", "egressd", "logs", "ds/egressd", "--tail=-1"), "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

// TestEgressdHelm installs egressd with `helm install` from deploy/helm/egressd (the
// image of `make image`; extraArgs, a documented chart value, adds the audit log on
// stdout and nflog reporting of drops), checks a blocked lookup's audit line and a
// dropped connection's packet.denied event, then uninstalls it and checks that pods'
// DNS still works.
func TestEgressdHelm(t *testing.T) {
	c := requireCluster(t)
	requireEgressdImage(t, c)
	deploy := filepath.Join(repoRoot(t), "deploy")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := c.InstallHelm(ctx, deploy, "extraArgs={--audit-stdout,--nflog-group=7}"); err != nil {
		t.Logf("egressd pods:\n%s", kubectlOut(c, "-n", "egressd", "describe", "pods"))
		t.Fatal(err)
	}
	t.Logf("egressd installed (helm install) and ready in %s", time.Since(start).Round(10*time.Millisecond))
	uninstalled := false
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("egressd logs:\n%s", kubectlOut(c, "-n", "egressd", "logs", "ds/egressd", "--tail=100"))
		}
		if !uninstalled {
			_, _ = c.Helm(context.Background(), "uninstall", "egressd", "-n", "egressd", "--wait")
		}
	})
	ns := "smoke-helm"
	namespace(t, c, ns)
	apply(t, c, strings.ReplaceAll(smokePolicy, "namespace: smoke", "namespace: "+ns))
	apply(t, c, deployment(ns, "client", map[string]string{"app": "client"}, false, "idle"))
	client := podOf(t, c, ns, "client")
	deniedIP := cluster.ExternalHosts["denied.example.test"]

	if r := probe(t, c, ns, client, "dns", "allowed.example.test"); r.Rcode != "NOERROR" {
		t.Errorf("allowed lookup: %+v", r)
	}
	r := probe(t, c, ns, client, "dns", "denied.example.test")
	if r.Rcode != "NXDOMAIN" || len(r.EDE) == 0 {
		t.Errorf("blocked lookup: %+v, want NXDOMAIN with an EDE", r)
	}
	if r := probe(t, c, ns, client, "http", "-timeout", "2s", "http://"+deniedIP+"/"); r.Err == "" {
		t.Errorf("connection to %s: %+v, want a drop", deniedIP, r)
	}
	var blocked, denied []map[string]any
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		blocked = filterEvents(auditEvents(c, "dns.lookup.blocked"), "qname", "denied.example.test")
		denied = filterEvents(auditEvents(c, "packet.denied"), "server.address", deniedIP)
		if len(blocked) > 0 && len(denied) > 0 {
			break
		}
	}
	if len(blocked) == 0 {
		t.Errorf("no dns.lookup.blocked audit line for denied.example.test")
	} else {
		t.Logf("audit: %v", blocked[0])
	}
	if len(denied) == 0 {
		t.Errorf("no packet.denied audit line for %s", deniedIP)
	} else {
		t.Logf("audit: %v", denied[0])
	}

	// Uninstall: pods' DNS keeps working (through CoreDNS directly).
	if _, err := c.Helm(ctx, "uninstall", "egressd", "-n", "egressd", "--wait"); err != nil {
		t.Fatal(err)
	}
	uninstalled = true
	var after probeResult
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if after = probe(t, c, ns, client, "dns", "allowed.example.test"); after.Rcode == "NOERROR" {
			break
		}
	}
	if after.Rcode != "NOERROR" {
		rs, _ := c.NodeExec(ctx, "nft", "list", "tables")
		t.Errorf("after helm uninstall the pod's DNS fails: %+v; node tables:\n%s", after, rs)
	}
}

// filterEvents keeps the events whose field, or attribute (attrs), equals value
// (a trailing dot ignored).
func filterEvents(evs []map[string]any, field, value string) []map[string]any {
	var out []map[string]any
	for _, e := range evs {
		v, ok := e[field].(string)
		if attrs, isMap := e["attrs"].(map[string]any); !ok && isMap {
			v, ok = attrs[field].(string)
		}
		if ok && strings.TrimSuffix(v, ".") == value {
			out = append(out, e)
		}
	}
	return out
}

// repoRoot is the module's root (two levels up from this package).
func repoRoot(t testing.TB) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	imageOnce sync.Once
	imageErr  error
)

// requireEgressdImage builds egressd's image as `make image` does (hack/image) and
// imports it into the node's containerd, once.
func requireEgressdImage(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		start := time.Now()
		out := filepath.Join(c.Dir, "egressd-image.tar")
		cmd := exec.CommandContext(ctx, "go", "run", "./hack/image", "-out", out)
		cmd.Dir = repoRoot(t)
		if b, err := cmd.CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("building egressd's image (go run ./hack/image): %w: %s", err, b)
			return
		}
		imageErr = c.ImportImage(ctx, out)
		t.Logf("egressd image built and imported in %s", time.Since(start).Round(10*time.Millisecond))
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
}

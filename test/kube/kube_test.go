// Package kube_test runs the Kubernetes source (source/kube) against a real control
// plane (test/kubeapi: etcd + kube-apiserver built from k8s.io/kubernetes): the CRDs
// of deploy/crds and the policies are applied with the real API, pods get their
// status.podIPs through the status subresource, and the Store/Engine decisions and
// the policy status conditions are checked.
package kube_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/kube"
	"github.com/egressd/egressd/test/kubeapi"
	"github.com/egressd/egressd/test/testenv"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// env is a control plane with the CRDs and a running source.
type env struct {
	t      *testing.T
	ctx    context.Context
	cs     kubernetes.Interface
	dyn    dynamic.Interface
	store  *policy.Store
	engine *policy.Engine
	src    *kube.Source
	wake   chan struct{}
	// onChange, if set (a func()), is also called on every source change.
	onChange atomic.Value

	mu   sync.Mutex
	lags []time.Duration
}

func repoRoot(t *testing.T) string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
	}
	t.Fatal("no go.mod above", wd)
	return ""
}

// ApplyCRDs creates the CRDs of deploy/crds and waits until they are established.
func applyCRDs(t *testing.T, ctx context.Context, dyn dynamic.Interface) {
	files, _ := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "crds", "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no CRDs in deploy/crds")
	}
	var names []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, err := dyn.Resource(crdGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create CRD %s: %v", f, err)
		}
		names = append(names, u.GetName())
	}
	for _, n := range names {
		waitFor(t, 30*time.Second, "CRD "+n+" established", func() bool {
			u, err := dyn.Resource(crdGVR).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				return false
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				m := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true
				}
			}
			return false
		})
	}
	// Established precedes serving by a moment: wait until the resources list.
	for _, gvr := range []schema.GroupVersionResource{kube.FirewallPolicies, kube.ClusterFirewallPolicies} {
		var lastErr error
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, lastErr = dyn.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
			if lastErr == nil {
				break
			}
			if time.Now().After(deadline) {
				crd, _ := dyn.Resource(crdGVR).Get(ctx, gvr.Resource+"."+gvr.Group, metav1.GetOptions{})
				st, _, _ := unstructured.NestedFieldNoCopy(crd.Object, "status")
				t.Fatalf("%s not served after 30s: %v\nCRD status: %v", gvr.Resource, lastErr, st)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newEnv(t *testing.T) *env {
	cp := kubeapi.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e := &env{t: t, ctx: ctx, wake: make(chan struct{}, 1)}
	e.cs = kubernetes.NewForConfigOrDie(cp.Config)
	e.dyn = dynamic.NewForConfigOrDie(cp.Config)
	applyCRDs(t, ctx, e.dyn)
	e.store = policy.NewStore()
	e.engine = policy.NewEngine(e.store, policy.Options{DefaultVerdict: policy.Allow})
	src, err := kube.New(cp.Config, e.store, kube.Options{
		NodeName: "node-1",
		Status:   kube.StatusOptions{Enabled: true, LeaseNamespace: "default", Identity: "node-1", RetryPeriod: 200 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	src.OnApplied(func(d time.Duration) {
		e.mu.Lock()
		e.lags = append(e.lags, d)
		e.mu.Unlock()
	})
	e.src = src
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := src.Run(ctx, func() {
			select {
			case e.wake <- struct{}{}:
			default:
			}
			if f, _ := e.onChange.Load().(func()); f != nil {
				f()
			}
		}); err != nil && ctx.Err() == nil {
			t.Errorf("source: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

func (e *env) namespace(name string, labels map[string]string) {
	e.t.Helper()
	_, err := e.cs.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
}

// pod creates a pod on node with labels and a named port, then sets its podIPs
// through the status subresource (no kubelet runs).
func (e *env) pod(ns, name, node string, labels map[string]string, ip string) {
	e.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: node,
			Containers: []corev1.Container{{Name: "c", Image: "example.invalid/app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
		},
	}
	p, err := e.cs.CoreV1().Pods(ns).Create(e.ctx, p, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = ip
	p.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	if _, err := e.cs.CoreV1().Pods(ns).UpdateStatus(e.ctx, p, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) relabel(ns, name string, labels map[string]string) {
	e.t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":%s}}`, mustJSON(labels))
	if _, err := e.cs.CoreV1().Pods(ns).Patch(e.ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func mustJSON(v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		panic(err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		panic(err)
	}
	return string(j)
}

// apply creates or updates a policy from YAML with the real API.
func (e *env) apply(doc string) error {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		e.t.Fatal(err)
	}
	gvr := kube.FirewallPolicies
	if u.GetKind() == policy.KindClusterFirewallPolicy {
		gvr = kube.ClusterFirewallPolicies
	}
	var ri dynamic.ResourceInterface = e.dyn.Resource(gvr)
	if u.GetNamespace() != "" {
		ri = e.dyn.Resource(gvr).Namespace(u.GetNamespace())
	}
	old, err := ri.Get(e.ctx, u.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = ri.Create(e.ctx, u, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	u.SetResourceVersion(old.GetResourceVersion())
	_, err = ri.Update(e.ctx, u, metav1.UpdateOptions{})
	return err
}

func (e *env) mustApply(doc string) {
	e.t.Helper()
	if err := e.apply(doc); err != nil {
		e.t.Fatalf("apply: %v\n%s", err, doc)
	}
}

// verdict waits until the engine's verdict for src → dst:port equals want.
func (e *env) waitVerdict(src, dst string, port int32, want policy.Verdict, what string) {
	e.t.Helper()
	c := policy.Connection{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Port: port, Protocol: policy.ProtocolTCP}
	var last policy.Decision
	deadline := time.Now().Add(20 * time.Second)
	for {
		last = e.engine.Decide(c)
		if last.Verdict == want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %s → %s:%d is %s (%+v), want %s", what, src, dst, port, last.Verdict, last.Deciding(), want)
		}
		select {
		case <-e.wake:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func condition(u *unstructured.Unstructured, typ string) map[string]any {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m := c.(map[string]any); m["type"] == typ {
			return m
		}
	}
	return nil
}

func (e *env) waitCondition(gvr schema.GroupVersionResource, ns, name, typ, status string) map[string]any {
	e.t.Helper()
	var got map[string]any
	waitFor(e.t, 20*time.Second, fmt.Sprintf("%s %s/%s condition %s=%s", gvr.Resource, ns, name, typ, status), func() bool {
		var ri dynamic.ResourceInterface = e.dyn.Resource(gvr)
		if ns != "" {
			ri = e.dyn.Resource(gvr).Namespace(ns)
		}
		u, err := ri.Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			return false
		}
		got = condition(u, typ)
		return got != nil && got["status"] == status && got["observedGeneration"] == u.GetGeneration()
	})
	return got
}

const restrictWeb = `
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: restrict-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  egress:
  - name: internal
    action: Allow
    to: [{cidr: %s}]
`

func TestKubeSource(t *testing.T) {
	e := newEnv(t)
	e.namespace("shop", map[string]string{"team": "shop"})
	e.namespace("other", nil)
	e.pod("shop", "web-1", "node-1", map[string]string{"app": "web"}, "10.244.1.10")
	e.pod("other", "db-1", "node-2", map[string]string{"app": "db"}, "10.244.2.20")
	e.mustApply(fmt.Sprintf(restrictWeb, "10.244.2.0/24"))
	waitFor(t, 30*time.Second, "source synced", e.src.Synced)

	t.Run("policy enforced on existing pod", func(t *testing.T) {
		e.waitVerdict("10.244.1.10", "10.244.2.20", 5432, policy.Allow, "allowed cidr")
		e.waitVerdict("10.244.1.10", "1.1.1.1", 443, policy.Deny, "outside the allowed cidr")
		w, ok := e.store.Workload(policy.WorkloadKey{Namespace: "shop", Name: "web-1"})
		if !ok || w.Node != "node-1" || len(w.Ports) != 1 || w.Ports[0].Name != "http" || w.Ports[0].Port != 8080 {
			t.Fatalf("workload from the pod: %+v", w)
		}
		e.waitCondition(kube.FirewallPolicies, "shop", "restrict-web", policy.ConditionAccepted, "True")
	})

	t.Run("new pod is enforced", func(t *testing.T) {
		e.pod("shop", "web-2", "node-1", map[string]string{"app": "web"}, "10.244.1.11")
		e.waitVerdict("10.244.1.11", "1.1.1.1", 443, policy.Deny, "new pod selected by the policy")
		e.waitVerdict("10.244.1.11", "10.244.2.20", 5432, policy.Allow, "new pod, allowed cidr")
	})

	t.Run("label change moves a pod between policies", func(t *testing.T) {
		e.relabel("shop", "web-2", map[string]string{"app": "batch"})
		e.waitVerdict("10.244.1.11", "1.1.1.1", 443, policy.Allow, "pod no longer selected")
		e.mustApply(`
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: batch-dns-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: batch}}
  egress:
  - action: Allow
    to: [{cidr: 9.9.9.0/24}]
`)
		e.waitVerdict("10.244.1.11", "1.1.1.1", 443, policy.Deny, "pod selected by batch-dns-only")
		e.waitVerdict("10.244.1.11", "9.9.9.9", 443, policy.Allow, "batch allowed cidr")
		e.waitVerdict("10.244.1.10", "9.9.9.9", 443, policy.Deny, "web not allowed batch cidr")
		e.relabel("shop", "web-2", map[string]string{"app": "web"})
		e.waitVerdict("10.244.1.11", "9.9.9.9", 443, policy.Deny, "moved back to restrict-web")
	})

	t.Run("policy update and delete take effect", func(t *testing.T) {
		e.mustApply(fmt.Sprintf(restrictWeb, "1.1.1.0/24"))
		e.waitVerdict("10.244.1.10", "1.1.1.1", 443, policy.Allow, "updated cidr")
		e.waitVerdict("10.244.1.10", "10.244.2.20", 5432, policy.Deny, "old cidr no longer allowed")
		if err := e.dyn.Resource(kube.FirewallPolicies).Namespace("shop").Delete(e.ctx, "restrict-web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitVerdict("10.244.1.10", "10.244.2.20", 5432, policy.Allow, "policy deleted")
		e.waitVerdict("10.244.1.10", "8.8.8.8", 53, policy.Allow, "policy deleted")
	})

	t.Run("namespace labels select peers", func(t *testing.T) {
		e.mustApply(`
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: shop-to-team}
spec:
  tier: Admin
  priority: 10
  subject: {namespaceSelector: {matchLabels: {team: shop}}}
  egress:
  - action: Deny
    to: [{namespaces: {matchLabels: {tier: restricted}}}]
`)
		e.waitVerdict("10.244.1.10", "10.244.2.20", 5432, policy.Allow, "peer namespace not labelled yet")
		patch := []byte(`{"metadata":{"labels":{"tier":"restricted"}}}`)
		if _, err := e.cs.CoreV1().Namespaces().Patch(e.ctx, "other", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitVerdict("10.244.1.10", "10.244.2.20", 5432, policy.Deny, "peer namespace labelled")
	})

	t.Run("invalid policy gets an Invalid condition naming the field", func(t *testing.T) {
		// Passes the CRD schema and CEL, fails policy validation: an unknown
		// label selector operator.
		e.mustApply(`
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: bad-selector, namespace: shop}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: Near, values: [web]}]
  egress: []
`)
		c := e.waitCondition(kube.FirewallPolicies, "shop", "bad-selector", policy.ConditionInvalid, "True")
		if msg, _ := c["message"].(string); !strings.Contains(msg, "spec.podSelector") {
			t.Errorf("Invalid condition does not name the field: %v", c)
		}
		if c["reason"] == "" {
			t.Errorf("Invalid condition without reason: %v", c)
		}
		a := e.waitCondition(kube.FirewallPolicies, "shop", "bad-selector", policy.ConditionAccepted, "False")
		t.Logf("Invalid: reason=%v message=%q; Accepted=%v", c["reason"], c["message"], a["status"])
		if slices.Contains(e.store.Policies(), policy.PolicyRef{Kind: policy.KindFirewallPolicy, Namespace: "shop", Name: "bad-selector"}) {
			t.Error("an invalid policy is in the store")
		}
		// Fixing it flips the conditions.
		e.mustApply(`
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: bad-selector, namespace: shop}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [nothing]}]
  egress: []
`)
		e.waitCondition(kube.FirewallPolicies, "shop", "bad-selector", policy.ConditionAccepted, "True")
		e.waitCondition(kube.FirewallPolicies, "shop", "bad-selector", policy.ConditionInvalid, "False")
	})

	t.Run("CEL rejects invalid policies at admission with the field", func(t *testing.T) {
		cases := []struct{ doc, want string }{
			{`
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: pass-in-baseline}
spec:
  tier: Baseline
  priority: 1
  subject: {namespaceSelector: {}}
  egress: [{action: Pass}]
`, "Pass is only allowed in the Admin tier"},
			{`
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: two-peers, namespace: shop}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{cidr: 10.0.0.0/8, fqdn: {matchName: example.com}}]
`, "spec.egress[0].to[0]"},
			{`
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: port-range, namespace: shop}
spec:
  podSelector: {}
  egress:
  - action: Allow
    ports: [{port: 9000, endPort: 8000}]
`, "spec.egress[0].ports[0].endPort"},
			{`
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: host-bits, namespace: shop}
spec:
  podSelector: {}
  egress:
  - action: Allow
    to: [{cidr: 10.0.0.1/8}]
`, "spec.egress[0].to[0].cidr"},
			{`
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: bad-priority}
spec:
  tier: Admin
  priority: 5000
  subject: {namespaceSelector: {}}
`, "spec.priority"},
		}
		for _, c := range cases {
			err := e.apply(c.doc)
			if err == nil {
				t.Errorf("API accepted an invalid policy (want %q):%s", c.want, c.doc)
				continue
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("rejection %v does not name %q", err, c.want)
			}
		}
	})

	t.Run("event-to-store latency", func(t *testing.T) {
		e.mu.Lock()
		e.lags = nil
		e.mu.Unlock()
		const n = 60
		key := policy.WorkloadKey{Namespace: "shop", Name: "web-1"}
		var lat []time.Duration
		for i := range n {
			v := fmt.Sprintf("v%d", i)
			start := time.Now()
			e.relabel("shop", "web-1", map[string]string{"app": "web", "rev": v})
			for {
				if w, ok := e.store.Workload(key); ok && w.Labels["rev"] == v {
					break
				}
				if time.Since(start) > 10*time.Second {
					t.Fatalf("label %s not in the store after 10s", v)
				}
				select {
				case <-e.wake:
				case <-time.After(2 * time.Millisecond):
				}
			}
			lat = append(lat, time.Since(start))
		}
		e.mu.Lock()
		lags := append([]time.Duration(nil), e.lags...)
		e.mu.Unlock()
		p50, p99 := percentile(lat, 50), percentile(lat, 99)
		t.Logf("API write → Store (n=%d): p50 %s p99 %s max %s", n, p50, p99, percentile(lat, 100))
		if len(lags) > 0 {
			t.Logf("informer event → Store (n=%d): p50 %s p99 %s", len(lags), percentile(lags, 50), percentile(lags, 99))
		}
		if p99 > 100*time.Millisecond {
			t.Errorf("API write → Store p99 %s over the 100ms budget", p99)
		}
	})

	t.Run("status writes converge", func(t *testing.T) {
		w := e.src.StatusWrites()
		time.Sleep(500 * time.Millisecond)
		if d := e.src.StatusWrites() - w; d != 0 {
			t.Errorf("%d status writes with nothing changing: the writer fights itself", d)
		}
	})
}

func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	if i > len(s) {
		i = len(s)
	}
	return s[i-1]
}

// TestManifestsServerDryRun: `kubectl apply --dry-run=server -k deploy/` passes a
// real API server (the manifests are valid for real), and `kubectl apply -f
// deploy/samples` works on it as on a fresh cluster.
func TestManifestsServerDryRun(t *testing.T) {
	kubectl := testenv.RequireTools(t, "kubectl")[0] // make test installs it
	cp := kubeapi.Start(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	// Server dry run of namespaced objects needs their namespace and custom
	// resources need their CRDs: create those for real first.
	applyCRDs(t, ctx, dyn)
	for _, ns := range []string{"egressd"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	root := repoRoot(t)
	for _, args := range [][]string{
		{"apply", "--dry-run=server", "-k", filepath.Join(root, "deploy")},
		// For real, on a cluster without the payments namespace: the
		// samples bring it.
		{"apply", "-f", filepath.Join(root, "deploy", "samples")},
	} {
		out, err := exec.Command(kubectl, append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		t.Logf("kubectl %s:\n%s", strings.Join(args[:3], " "), out)
	}
	// Every invalid example is rejected by the CRD schema (OpenAPI and CEL
	// rules), and the API server's message names the field its "# want-api:"
	// comment gives (the agent's own validation is checked in deploy/).
	invalid, _ := filepath.Glob(filepath.Join(root, "deploy", "examples", "invalid", "*.yaml"))
	if len(invalid) < 9 {
		t.Fatalf("deploy/examples/invalid has %d examples, want the 9 kept there", len(invalid))
	}
	for _, f := range invalid {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^# want-api: (.+)$`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no \"# want-api:\" comment", f)
		}
		out, err := exec.Command(kubectl, "--kubeconfig", cp.Kubeconfig, "apply", "--dry-run=server", "-f", f).CombinedOutput()
		switch {
		case err == nil:
			t.Errorf("%s: accepted by the API server, want a schema rejection:\n%s", f, out)
		case !strings.Contains(string(out), string(m[1])):
			t.Errorf("%s: rejected without naming %q:\n%s", f, m[1], out)
		default:
			t.Logf("%s: %s", filepath.Base(f), strings.TrimSpace(string(out)))
		}
	}
}

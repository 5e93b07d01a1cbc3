package scale

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/kube"
	"github.com/egressd/egressd/test/kubeapi"
)

// The probe: a pod of node-0 whose address is on loopback, so that the
// harness can send lookups from it, and a FirewallPolicy with lookups: Enforce
// that selects it while it carries probe=restricted.
const (
	ProbeNamespace = "probe"
	ProbePod       = "probe"
	ProbePolicy    = "probe"
	probeBlocked   = "blocked.probe.example"
)

// ProbeIP is the probe pod's address.
var ProbeIP = netip.MustParseAddr("127.77.0.1")

// Config is one run of the harness.
type Config struct {
	Spec
	// Agents is the number of agents started (node-0 … node-K-1); the first one
	// is measured, all of them report to the policy status (default 1).
	Agents int
	// Agent is the egressd binary; AgentArgs are extra flags for it.
	Agent     string
	AgentArgs []string
	// Idle and Churn are how long idle and churn CPU are measured (default 30s).
	Idle, Churn time.Duration
	// ChurnRate is the number of pod creates+deletes and of relabels per second
	// during churn (default 20 each).
	ChurnRate int
	// Samples is the number of latency samples per figure (default 20).
	Samples int
	// Dir holds the control plane's files.
	Dir string
	// APIServer and Etcd are the binaries (test/kubeapi).
	APIServer, Etcd string
	// Progress receives progress lines (may be nil).
	Progress io.Writer
}

// Report holds the figures of one run (the rows of docs/scale.md).
type Report struct {
	Spec
	Agents               int
	Ready                time.Duration
	RSS                  int64
	Heap                 float64 // live heap after a GC (go_memstats_heap_alloc_bytes right after ready + 5 s)
	IdleCPU, ChurnCPU    float64 // fraction of one core
	IdleQueries          float64 // upstream queries per second at idle
	RelabelIdle          Latencies
	RelabelChurn         Latencies
	EditChurn            Latencies
	Status               Latencies
	StatusBytes          int
	PolicyWritesPerEdit  int
	PolicyStatusBytes    int
	AgentPods, AgentPols int
}

// Latencies are samples of one latency.
type Latencies []time.Duration

// P returns the p-th percentile (0–100).
func (l Latencies) P(p int) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := append(Latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[min(i, len(s)-1)]
}

func (l Latencies) String() string {
	r := func(d time.Duration) string {
		if d < 10*time.Millisecond {
			return d.Round(10 * time.Microsecond).String()
		}
		return d.Round(time.Millisecond).String()
	}
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s (n=%d)", r(l.P(50)), r(l.P(90)), r(l.P(99)), r(l.P(100)), len(l))
}

// Table renders the report as a Markdown table.
func (r Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: %d nodes, %d namespaces, %d pods, %d policies; %d agent(s), dataplane none\n\n",
		r.Nodes, r.Namespaces, r.Pods, r.Policies, r.Agents)
	b.WriteString("| figure | measured |\n|---|---|\n")
	row := func(k, f string, a ...any) { fmt.Fprintf(&b, "| %s | %s |\n", k, fmt.Sprintf(f, a...)) }
	row("ready", "%s", r.Ready.Round(100*time.Millisecond))
	row("RSS at ready", "%d MiB, %.2f KiB per cluster pod", r.RSS>>20, float64(r.RSS)/1024/float64(max(r.Pods, 1)))
	row("Go heap in use at ready", "%.0f MiB, %.2f KiB per cluster pod", r.Heap/(1<<20), r.Heap/1024/float64(max(r.Pods, 1)))
	row("CPU at idle", "%.2f %% of a core", 100*r.IdleCPU)
	row("upstream queries at idle", "%.2f/s", r.IdleQueries)
	row("CPU under churn", "%.1f %% of a core", 100*r.ChurnCPU)
	row("label change → DNS verdict, no churn", "%s", r.RelabelIdle)
	row("label change → DNS verdict, under churn", "%s", r.RelabelChurn)
	row("policy edit → DNS verdict, under churn", "%s", r.EditChurn)
	row("`GET /status`", "%s, %d bytes", r.Status, r.StatusBytes)
	row("policy writes per edit", "%d (K=%d)", r.PolicyWritesPerEdit, r.Agents)
	row("policy status bytes", "%d (K=%d)", r.PolicyStatusBytes, r.Agents)
	return b.String()
}

// Run builds the cluster of cfg, runs the agents and measures.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Agents <= 0 {
		cfg.Agents = 1
	}
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Second
	}
	if cfg.Churn <= 0 {
		cfg.Churn = 30 * time.Second
	}
	if cfg.ChurnRate <= 0 {
		cfg.ChurnRate = 20
	}
	if cfg.Samples <= 0 {
		cfg.Samples = 20
	}
	logf := func(f string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "%s "+f+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
		}
	}
	rep := Report{Spec: cfg.Spec, Agents: cfg.Agents}
	cp, err := kubeapi.StartBinaries(ctx, cfg.APIServer, cfg.Etcd, cfg.Dir)
	if err != nil {
		return rep, err
	}
	defer cp.Stop()
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	if err := kubeapi.ApplyCRDs(ctx, dyn, CRDFiles()); err != nil {
		return rep, err
	}
	start := time.Now()
	if err := Fill(ctx, cs, dyn, cfg.Spec, func(s string) { logf("fill %s", s) }); err != nil {
		return rep, err
	}
	if err := CreateProbe(ctx, cs, dyn); err != nil {
		return rep, err
	}
	logf("cluster filled in %s", time.Since(start).Round(time.Second))
	up, err := StartUpstream()
	if err != nil {
		return rep, err
	}
	defer up.Close()
	var agents []*Agent
	defer func() {
		for _, a := range agents {
			a.Stop()
		}
	}()
	for i := range cfg.Agents {
		a, err := StartAgent(cfg.Agent, cp.Kubeconfig, Node(i), up.Addr, cfg.AgentArgs...)
		if err != nil {
			return rep, err
		}
		agents = append(agents, a)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	for i, a := range agents {
		d, err := a.WaitReady(wctx)
		if err != nil {
			return rep, err
		}
		if i == 0 {
			rep.Ready = d
		}
	}
	a := agents[0]
	logf("agent ready after %s", rep.Ready.Round(time.Millisecond))
	time.Sleep(5 * time.Second) // the first status writes, GC
	if rep.RSS, err = a.RSS(); err != nil {
		return rep, err
	}
	if rep.Heap, err = a.Metric("go_memstats_heap_inuse_bytes"); err != nil {
		return rep, err
	}

	// Idle.
	q0, c0, t0 := up.Queries.Load(), must(a.CPU()), time.Now()
	time.Sleep(cfg.Idle)
	q1, c1, el := up.Queries.Load(), must(a.CPU()), time.Since(t0)
	rep.IdleCPU = float64(c1-c0) / float64(el)
	rep.IdleQueries = float64(q1-q0) / el.Seconds()
	logf("idle: cpu %.2f%%, %.2f upstream queries/s", 100*rep.IdleCPU, rep.IdleQueries)

	for range cfg.Samples {
		d, n, err := a.StatusTime()
		if err != nil {
			return rep, err
		}
		rep.Status, rep.StatusBytes = append(rep.Status, d), n
	}
	logf("/status: %s", rep.Status)

	pr := &prober{ctx: ctx, cs: cs, dyn: dyn, a: a, restricted: true}
	for range cfg.Samples {
		d, err := pr.relabel()
		if err != nil {
			return rep, err
		}
		rep.RelabelIdle = append(rep.RelabelIdle, d)
	}
	logf("relabel → verdict (idle): %s", rep.RelabelIdle)

	// Policy writes per edit (and the status size), counted on the probe
	// policy's watch once the writer's start-up pass reached it.
	if rep.PolicyWritesPerEdit, rep.PolicyStatusBytes, err = pr.writesPerEdit(cfg.Agents); err != nil {
		return rep, err
	}
	logf("policy writes per edit: %d, status %d bytes", rep.PolicyWritesPerEdit, rep.PolicyStatusBytes)

	// Churn.
	cctx, stopChurn := context.WithCancel(ctx)
	var churnErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := Churn(cctx, cs, cfg.Spec, cfg.ChurnRate); err != nil && cctx.Err() == nil {
			churnErr.Store(err)
		}
	}()
	time.Sleep(2 * time.Second)
	c0, t0 = must(a.CPU()), time.Now()
	deadline := t0.Add(cfg.Churn)
	for time.Now().Before(deadline) || len(rep.RelabelChurn) < cfg.Samples || len(rep.EditChurn) < cfg.Samples/2 {
		if len(rep.RelabelChurn) < cfg.Samples {
			d, err := pr.relabel()
			if err != nil {
				stopChurn()
				return rep, err
			}
			rep.RelabelChurn = append(rep.RelabelChurn, d)
		}
		if len(rep.EditChurn) < cfg.Samples/2 {
			d, err := pr.edit()
			if err != nil {
				stopChurn()
				return rep, err
			}
			rep.EditChurn = append(rep.EditChurn, d)
		}
		if len(rep.RelabelChurn) >= cfg.Samples && len(rep.EditChurn) >= cfg.Samples/2 {
			time.Sleep(time.Until(deadline))
		}
	}
	c1, el = must(a.CPU()), time.Since(t0)
	stopChurn()
	wg.Wait()
	if err, _ := churnErr.Load().(error); err != nil {
		return rep, fmt.Errorf("churn: %w", err)
	}
	rep.ChurnCPU = float64(c1-c0) / float64(el)
	logf("churn: cpu %.1f%%; relabel → verdict %s; edit → verdict %s", 100*rep.ChurnCPU, rep.RelabelChurn, rep.EditChurn)
	return rep, nil
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// CRDFiles are the CRDs of deploy/crds (found from the working directory up).
func CRDFiles() []string { return kubeapi.RepoFiles("deploy/crds/*.yaml") }

// CreateProbe creates the probe namespace, pod (node-0, ProbeIP, restricted)
// and policy (lookups Enforce, Allow allowed.probe.example).
func CreateProbe(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ProbeNamespace}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := CreatePod(ctx, cs, ProbeNamespace, ProbePod, Node(0), map[string]string{"probe": "restricted"}, ProbeIP); err != nil {
		return err
	}
	return createUnstructured(ctx, dyn, kube.FirewallPolicies, ProbeNamespace, probePolicy("allowed.probe.example"))
}

func probePolicy(names ...string) map[string]any {
	var to []any
	for _, n := range names {
		to = append(to, map[string]any{"fqdn": map[string]any{"matchName": n}})
	}
	return map[string]any{
		"apiVersion": policy.APIVersion, "kind": policy.KindFirewallPolicy,
		"metadata": map[string]any{"name": ProbePolicy, "namespace": ProbeNamespace},
		"spec": map[string]any{
			"podSelector": map[string]any{"matchLabels": map[string]any{"probe": "restricted"}},
			"lookups":     "Enforce",
			"egress":      []any{map[string]any{"action": "Allow", "to": to}},
		},
	}
}

// prober measures verdict latencies with lookups from the probe pod.
type prober struct {
	ctx        context.Context
	cs         kubernetes.Interface
	dyn        dynamic.Interface
	a          *Agent
	restricted bool // the probe's label now (true at start)
	edits      int
}

// waitRcode polls name from the probe until the rcode is want (at most 30 s).
func (p *prober) waitRcode(name string, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		rc, err := p.a.Lookup(ProbeIP, name)
		if err == nil && rc == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lookup %s from the probe: rcode %d (%v), want %d", name, rc, err, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// relabel flips the probe's label and returns the time from the API call to
// the first lookup answered with the new verdict.
func (p *prober) relabel() (time.Duration, error) {
	to, want := "open", dns.RcodeSuccess
	if !p.restricted {
		to, want = "restricted", dns.RcodeNameError
	}
	if err := p.waitRcode(probeBlocked, map[bool]int{true: dns.RcodeNameError, false: dns.RcodeSuccess}[p.restricted]); err != nil {
		return 0, fmt.Errorf("before relabel: %w", err)
	}
	start := time.Now()
	patch := fmt.Sprintf(`{"metadata":{"labels":{"probe":%q}}}`, to)
	if _, err := p.cs.CoreV1().Pods(ProbeNamespace).Patch(p.ctx, ProbePod, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return 0, err
	}
	if err := p.waitRcode(probeBlocked, want); err != nil {
		return 0, err
	}
	p.restricted = !p.restricted
	return time.Since(start), nil
}

// edit adds a name to the probe policy's Allow rule (the probe restricted) and
// returns the time from the API call to the first lookup of it answered.
func (p *prober) edit() (time.Duration, error) {
	if !p.restricted {
		if _, err := p.relabel(); err != nil {
			return 0, err
		}
	}
	p.edits++
	name := fmt.Sprintf("edit-%d.probe.example", p.edits)
	if err := p.waitRcode(name, dns.RcodeNameError); err != nil {
		return 0, fmt.Errorf("before edit: %w", err)
	}
	ri := p.dyn.Resource(kube.FirewallPolicies).Namespace(ProbeNamespace)
	start := time.Now()
	patch := fmt.Sprintf(`{"spec":{"egress":[{"action":"Allow","to":[{"fqdn":{"matchName":"allowed.probe.example"}},{"fqdn":{"matchName":%q}}]}]}}`, name)
	if _, err := ri.Patch(p.ctx, ProbePolicy, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return 0, err
	}
	if err := p.waitRcode(name, dns.RcodeSuccess); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// writesPerEdit waits until the probe policy is programmed on every agent
// (the writer's start-up pass over every policy reached it), edits it once and
// counts the writes to the object until the edit is programmed on every agent;
// it returns them and the size of the object's status then.
func (p *prober) writesPerEdit(agents int) (int, int, error) {
	ri := p.dyn.Resource(kube.FirewallPolicies).Namespace(ProbeNamespace)
	want := fmt.Sprintf("True programmed on %d/%d nodes", agents, agents)
	programmed := func(u *unstructured.Unstructured) bool {
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == policy.ConditionProgrammed && m["observedGeneration"] == u.GetGeneration() {
				return fmt.Sprint(m["status"], " ", m["message"]) == want
			}
		}
		return false
	}
	wait := func(what string, cond func(u *unstructured.Unstructured) bool) (*unstructured.Unstructured, error) {
		deadline := time.Now().Add(10 * time.Minute)
		for {
			u, err := ri.Get(p.ctx, ProbePolicy, metav1.GetOptions{})
			if err == nil && cond(u) {
				return u, nil
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("%s: not %q after 10 minutes (%v)", what, want, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cur, err := wait("the probe policy", programmed)
	if err != nil {
		return 0, 0, err
	}
	w, err := ri.Watch(p.ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + ProbePolicy, ResourceVersion: cur.GetResourceVersion()})
	if err != nil {
		return 0, 0, err
	}
	defer w.Stop()
	if _, err := p.edit(); err != nil {
		return 0, 0, err
	}
	last, err := wait("the edited probe policy", func(u *unstructured.Unstructured) bool {
		return u.GetGeneration() > cur.GetGeneration() && programmed(u)
	})
	if err != nil {
		return 0, 0, err
	}
	writes := -1 // the edit itself
	for rv := ""; rv != last.GetResourceVersion(); {
		ev, ok := <-w.ResultChan()
		if !ok {
			return 0, 0, fmt.Errorf("watch closed")
		}
		if o, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type == watch.Modified {
			rv = o.GetResourceVersion()
			writes++
		}
	}
	b, _ := json.Marshal(last.Object["status"])
	return writes, len(b), nil
}

// Churn creates and deletes rate pods per second and relabels rate existing
// pods per second anywhere in the cluster until ctx ends.
func Churn(ctx context.Context, cs kubernetes.Interface, spec Spec, rate int) error {
	t := time.NewTicker(time.Second / time.Duration(rate))
	defer t.Stop()
	rng := rand.New(rand.NewPCG(1, 2))
	var prev []string // namespace/name of the churn pods alive
	errc := make(chan error, 4)
	sem := make(chan struct{}, 8)
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case <-t.C:
		}
		i := spec.Pods + 1000 + n // churn pods: addresses after the filled ones
		ns, node := Namespace(rng.IntN(spec.Namespaces)), Node(1+rng.IntN(max(spec.Nodes-1, 1)))
		name := fmt.Sprintf("churn-%d", n)
		victim := rng.IntN(spec.Pods)
		vns, _ := spec.PodPlace(victim)
		var del string
		if len(prev) >= rate {
			del, prev = prev[0], prev[1:]
		}
		prev = append(prev, ns+"/"+name)
		labels := PodLabels(rng.IntN(1000))
		patch := fmt.Sprintf(`{"metadata":{"labels":{"app":"app-%d"}}}`, rng.IntN(50))
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			if err := CreatePod(ctx, cs, ns, name, node, labels, PodIP(i%(1<<23))); err != nil && ctx.Err() == nil {
				errc <- err
				return
			}
			if del != "" {
				delNS, dname, _ := strings.Cut(del, "/")
				_ = cs.CoreV1().Pods(delNS).Delete(ctx, dname, metav1.DeleteOptions{})
			}
			if _, err := cs.CoreV1().Pods(vns).Patch(ctx, PodName(victim), types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil && ctx.Err() == nil {
				errc <- err
			}
		}()
	}
}

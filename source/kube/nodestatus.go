package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/egressd/egressd/policy"
)

// AgentLeaseLabel marks the per-node agent Leases: every agent holds the Lease
// "egressd-node-<node>" in the lease namespace and renews it; the status writer
// counts the unexpired ones as the nodes a policy must be programmed on.
const AgentLeaseLabel = "egressd.io/agent-lease"

// AgentLeaseName is the name of node's agent Lease.
func AgentLeaseName(node string) string { return "egressd-node-" + node }

// nodeStatus reports, for this node, the policy generations programmed into the
// kernel in status.nodes[node] with server-side apply under the field manager
// "egressd/<node>": each node owns its own list entry, so nodes never conflict.
// ReportProgrammed only records and queues; one goroutine writes (through the
// client's rate limiter), never the dataplane.
type nodeStatus struct {
	src     *Source
	node    string
	manager string
	queue   workqueue.TypedRateLimitingInterface[policy.PolicyRef]

	mu      sync.Mutex
	want    map[policy.PolicyRef]int64
	written map[policy.PolicyRef]written
}

type written struct {
	gen int64
	at  time.Time
}

func newNodeStatus(src *Source, node string) *nodeStatus {
	return &nodeStatus{src: src, node: node, manager: "egressd/" + node,
		want: map[policy.PolicyRef]int64{}, written: map[policy.PolicyRef]written{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[policy.PolicyRef](100*time.Millisecond, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[policy.PolicyRef]{Name: "egressd-node-status"}),
	}
}

// StoreGenerations returns the metadata.generation of every FirewallPolicy and
// ClusterFirewallPolicy version held by the Store. Take it before compiling a
// plan and pass it to ReportProgrammed once the plan is in the kernel: a policy
// updated meanwhile is then reported at its older generation (conservative) and
// the next sync reports the newer one.
func (s *Source) StoreGenerations() map[policy.PolicyRef]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[policy.PolicyRef]int64, len(s.inStore))
	for k, v := range s.inStore {
		out[k] = v
	}
	return out
}

// ReportProgrammed records that the policy generations gens (from
// StoreGenerations) are programmed on this node; the node's entries in the
// policies' status.nodes are updated asynchronously. It never blocks.
func (s *Source) ReportProgrammed(gens map[policy.PolicyRef]int64) {
	if s.nodeStatus == nil {
		return
	}
	n := s.nodeStatus
	n.mu.Lock()
	for ref, g := range gens {
		if n.want[ref] != g {
			n.want[ref] = g
			n.queue.Add(ref)
		}
	}
	n.mu.Unlock()
}

// check queues ref when its object may disagree with what this node programmed.
func (n *nodeStatus) check(ref policy.PolicyRef) {
	n.mu.Lock()
	_, ok := n.want[ref]
	n.mu.Unlock()
	if ok {
		n.queue.Add(ref)
	}
}

func (n *nodeStatus) forget(ref policy.PolicyRef) {
	n.mu.Lock()
	delete(n.want, ref)
	delete(n.written, ref)
	n.mu.Unlock()
	n.queue.Forget(ref)
}

func (n *nodeStatus) run(ctx context.Context) {
	go func() { <-ctx.Done(); n.queue.ShutDown() }()
	for {
		ref, quit := n.queue.Get()
		if quit {
			return
		}
		err := n.write(ctx, ref)
		switch {
		case err == nil || apierrors.IsNotFound(err):
			n.queue.Forget(ref)
		case ctx.Err() == nil:
			n.src.log.Warn("node status write failed; retrying", "policy", ref.String(), "err", err)
			n.queue.AddRateLimited(ref)
		}
		n.queue.Done(ref)
	}
}

// nodeEntry is one element of status.nodes.
type nodeEntry struct {
	index int
	gen   int64
	at    time.Time
}

// nodeEntries returns status.nodes of an object by node name.
func nodeEntries(u *unstructured.Unstructured) map[string]nodeEntry {
	out := map[string]nodeEntry{}
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "nodes")
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		name, _ := m["nodeName"].(string)
		g, _ := m["observedGeneration"].(int64)
		ts, _ := m["lastProgrammedTime"].(string)
		at, _ := time.Parse(time.RFC3339, ts)
		out[name] = nodeEntry{index: i, gen: g, at: at}
	}
	return out
}

func (s *Source) cached(ref policy.PolicyRef) (*unstructured.Unstructured, bool) {
	inf, ck := s.fwps, ref.Namespace+"/"+ref.Name
	if ref.Kind == kindCFWP {
		inf, ck = s.cfwps, ref.Name
	}
	o, ok, err := inf.GetStore().GetByKey(ck)
	if err != nil || !ok {
		return nil, false
	}
	u, ok := o.(*unstructured.Unstructured)
	return u, ok
}

func (n *nodeStatus) write(ctx context.Context, ref policy.PolicyRef) error {
	n.mu.Lock()
	g, ok := n.want[ref]
	last := n.written[ref]
	n.mu.Unlock()
	if !ok {
		return nil
	}
	u, ok := n.src.cached(ref)
	if !ok {
		return nil
	}
	if cur, has := nodeEntries(u)[n.node]; has && cur.gen == g {
		return nil
	}
	// Our own write may not be in the cache yet; its event re-queues the ref.
	if last.gen == g && time.Since(last.at) < 5*time.Second {
		return nil
	}
	now := metav1.Now()
	apply := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": policy.APIVersion,
		"kind":       ref.Kind,
		"metadata":   map[string]any{"name": ref.Name},
		"status": map[string]any{"nodes": []any{map[string]any{
			"nodeName":           n.node,
			"observedGeneration": g,
			"lastProgrammedTime": now.UTC().Format(time.RFC3339),
		}}},
	}}
	res := n.src.dyn.Resource(gvrOf(ref.Kind))
	opts := metav1.ApplyOptions{FieldManager: n.manager, Force: true}
	var err error
	if ref.Namespace != "" {
		apply.SetNamespace(ref.Namespace)
		_, err = res.Namespace(ref.Namespace).ApplyStatus(ctx, ref.Name, apply, opts)
	} else {
		_, err = res.ApplyStatus(ctx, ref.Name, apply, opts)
	}
	if err != nil {
		return fmt.Errorf("apply status.nodes[%s]: %w", n.node, err)
	}
	n.mu.Lock()
	n.written[ref] = written{gen: g, at: time.Now()}
	n.mu.Unlock()
	n.src.nodeWrites.Add(1)
	return nil
}

// NodeStatusWrites returns how many status.nodes writes this agent made.
func (s *Source) NodeStatusWrites() int64 { return s.nodeWrites.Load() }

// agentLease keeps this node's agent Lease renewed until ctx ends. The Lease is
// left in place on shutdown: a restarted agent takes it over, and a node whose
// agent is gone for good drops out when the Lease expires.
func (s *Source) agentLease(ctx context.Context, ns, node string, d time.Duration) {
	leases := s.kube.CoordinationV1().Leases(ns)
	name := AgentLeaseName(node)
	renew := func() error {
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
					Labels: map[string]string{AgentLeaseLabel: "true", "app.kubernetes.io/name": "egressd"}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node),
					LeaseDurationSeconds: ptr.To(int32(d.Seconds())), AcquireTime: &now, RenewTime: &now},
			}, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		l.Spec.HolderIdentity = ptr.To(node)
		l.Spec.LeaseDurationSeconds = ptr.To(int32(d.Seconds()))
		l.Spec.RenewTime = &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	}
	t := time.NewTicker(d / 4)
	defer t.Stop()
	for {
		if err := renew(); err != nil && ctx.Err() == nil {
			s.log.Warn("agent lease renewal failed", "lease", ns+"/"+name, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// agentLeases watches the agent Leases of the lease namespace (the status writer's
// view of which nodes run an agent).
func newAgentLeaseInformer(s *Source, ns string) (informers.SharedInformerFactory, cache.SharedIndexInformer) {
	f := informers.NewSharedInformerFactoryWithOptions(s.kube, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = labels.Set{AgentLeaseLabel: "true"}.String()
		}))
	return f, f.Coordination().V1().Leases().Informer()
}

// liveNodes returns the nodes whose agent Lease has not expired, sorted; nil when
// agent Leases are not used (no lease namespace).
func (w *statusWriter) liveNodes(now time.Time) []string {
	if w.leases == nil {
		return nil
	}
	out := []string{}
	for _, o := range w.leases.GetStore().List() {
		l, ok := o.(*coordinationv1.Lease)
		if !ok || l.Spec.HolderIdentity == nil || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
			continue
		}
		exp := l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
		if now.Before(exp) && strings.HasPrefix(l.Name, "egressd-node-") {
			out = append(out, *l.Spec.HolderIdentity)
		}
	}
	sort.Strings(out)
	return out
}

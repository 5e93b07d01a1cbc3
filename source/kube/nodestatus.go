package kube

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/egressd/egressd/policy"
)

// What each node has programmed is published on its own agent Lease, never in
// the policies (docs/scale.md "Policy status"): a policy's status does not grow
// with the node count and an edit causes at most two writes to it, whatever the
// number of nodes. Each agent holds the Lease "egressd-node-<node>" in the lease
// namespace, renews it, and annotates it with a digest of the policy
// generations it programmed (ProgrammedDigest); only the status writer (the
// leader) watches these Leases and turns them into the Programmed condition.

// AgentLeaseLabel marks the per-node agent Leases: every agent holds the Lease
// "egressd-node-<node>" in the lease namespace and renews it; the status writer
// counts the unexpired ones as the nodes a policy must be programmed on.
const AgentLeaseLabel = "egressd.io/agent-lease"

// Annotations of the agent Leases.
const (
	// AnnotationProgrammedDigest is the ProgrammedDigest of the policy
	// generations the node programmed last.
	AnnotationProgrammedDigest = "egressd.io/programmed-digest"
	// AnnotationProgrammedPolicies is how many policies that digest covers.
	AnnotationProgrammedPolicies = "egressd.io/programmed-policies"
	// AnnotationProgrammedTime is when the node programmed it (RFC 3339).
	AnnotationProgrammedTime = "egressd.io/programmed-time"
)

// AgentLeaseName is the name of node's agent Lease.
func AgentLeaseName(node string) string { return "egressd-node-" + node }

// ProgrammedDigest is a digest of policy generations (StoreGenerations): two
// agents that hold the same policies at the same generations have the same
// digest, whatever the order they got them in.
func ProgrammedDigest(gens map[policy.PolicyRef]int64) string {
	refs := slices.Collect(maps.Keys(gens))
	sort.Slice(refs, func(i, j int) bool { return refs[i].String() < refs[j].String() })
	h := fnv.New64a()
	var b [8]byte
	for _, r := range refs {
		h.Write([]byte(r.String()))
		binary.BigEndian.PutUint64(b[:], uint64(gens[r]))
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// programmedState is what this node programmed last (published on its Lease).
type programmedState struct {
	mu       sync.Mutex
	digest   string
	policies int
	at       time.Time
	changed  chan struct{} // signalled when digest changes
}

// StoreGenerations returns the metadata.generation of every FirewallPolicy and
// ClusterFirewallPolicy version held by the Store. Take it before compiling a
// plan and pass it to ReportProgrammed once the plan is in the kernel: a policy
// updated meanwhile is then reported at its older generation (conservative) and
// the next sync reports the newer one.
func (s *Source) StoreGenerations() map[policy.PolicyRef]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.inStore)
}

// ReportProgrammed records that the policy generations gens (from
// StoreGenerations) are programmed on this node; the node's agent Lease is
// annotated with their digest soon after (at most once a second). It never
// blocks.
func (s *Source) ReportProgrammed(gens map[policy.PolicyRef]int64) {
	d := ProgrammedDigest(gens)
	p := &s.programmed
	p.mu.Lock()
	changed := d != p.digest
	p.digest, p.policies, p.at = d, len(gens), time.Now()
	p.mu.Unlock()
	if !changed {
		return
	}
	select {
	case p.changed <- struct{}{}:
	default:
	}
	if s.status != nil && s.opts.Status.LeaseNamespace == "" {
		// No agent Leases: this agent is the only node the writer counts.
		s.status.nodeProgrammed(s.opts.NodeName, d)
	}
}

// ProgrammedDigest returns the digest of what this node programmed last and
// when ("" before the first report).
func (s *Source) ProgrammedDigest() (string, time.Time) {
	s.programmed.mu.Lock()
	defer s.programmed.mu.Unlock()
	return s.programmed.digest, s.programmed.at
}

// agentLease keeps this node's agent Lease renewed (every quarter of d) and
// annotated with what the node programmed (within a second of a change) until
// ctx ends. The Lease is left in place on shutdown: a restarted agent takes it
// over, and a node whose agent is gone for good drops out when it expires.
func (s *Source) agentLease(ctx context.Context, ns, node string, d time.Duration) {
	leases := s.kube.CoordinationV1().Leases(ns)
	name := AgentLeaseName(node)
	renew := func() error {
		now := metav1.NewMicroTime(time.Now())
		digest, at := s.ProgrammedDigest()
		s.programmed.mu.Lock()
		count := s.programmed.policies
		s.programmed.mu.Unlock()
		annotate := func(l *coordinationv1.Lease) {
			if digest == "" {
				return
			}
			if l.Annotations == nil {
				l.Annotations = map[string]string{}
			}
			l.Annotations[AnnotationProgrammedDigest] = digest
			l.Annotations[AnnotationProgrammedPolicies] = strconv.Itoa(count)
			l.Annotations[AnnotationProgrammedTime] = at.UTC().Format(time.RFC3339)
		}
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
					Labels: map[string]string{AgentLeaseLabel: "true", "app.kubernetes.io/name": "egressd"}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node),
					LeaseDurationSeconds: ptr.To(int32(d.Seconds())), AcquireTime: &now, RenewTime: &now},
			}
			annotate(l)
			_, err = leases.Create(ctx, l, metav1.CreateOptions{})
			return err
		}
		if err != nil {
			return err
		}
		l.Spec.HolderIdentity = ptr.To(node)
		l.Spec.LeaseDurationSeconds = ptr.To(int32(d.Seconds()))
		l.Spec.RenewTime = &now
		annotate(l)
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	}
	t := time.NewTicker(d / 4)
	defer t.Stop()
	var last time.Time
	for {
		if err := renew(); err != nil && ctx.Err() == nil {
			s.log.Warn("agent lease renewal failed", "lease", ns+"/"+name, "err", err)
		}
		last = time.Now()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.programmed.changed:
			// At most one extra write a second, whatever the sync rate.
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(last.Add(time.Second))):
			}
		}
	}
}

// newAgentLeaseInformer watches the agent Leases of the lease namespace (the
// status writer's view of which nodes run an agent and what they programmed).
func newAgentLeaseInformer(s *Source, ns string) (informers.SharedInformerFactory, cache.SharedIndexInformer) {
	f := informers.NewSharedInformerFactoryWithOptions(s.kube, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.LabelSelector = labels.Set{AgentLeaseLabel: "true"}.String()
		}))
	return f, f.Coordination().V1().Leases().Informer()
}

// liveNodes returns the nodes whose agent Lease has not expired, sorted, with
// the digest each published; without agent Leases (no lease namespace) the
// nodes that reported to this writer directly.
func (w *statusWriter) liveNodes(now time.Time) ([]string, map[string]string) {
	if w.leases == nil {
		w.progMu.Lock()
		defer w.progMu.Unlock()
		out := slices.Sorted(maps.Keys(w.direct))
		return out, maps.Clone(w.direct)
	}
	out := []string{}
	digests := map[string]string{}
	for _, o := range w.leases.GetStore().List() {
		l, ok := o.(*coordinationv1.Lease)
		if !ok || l.Spec.HolderIdentity == nil || l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
			continue
		}
		exp := l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
		if now.Before(exp) && strings.HasPrefix(l.Name, "egressd-node-") {
			n := *l.Spec.HolderIdentity
			out = append(out, n)
			digests[n] = l.Annotations[AnnotationProgrammedDigest]
		}
	}
	sort.Strings(out)
	return out, digests
}

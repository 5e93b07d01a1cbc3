package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"

	"github.com/egressd/egressd/policy"
)

// StatusOptions configure the policy status writer.
//
// Every agent validates every policy with the same code, so every agent would write
// the same conditions. To keep N nodes from writing (and fighting over
// lastTransitionTime), only one agent writes: the holder of a coordination.k8s.io
// Lease (LeaseNamespace/LeaseName) when LeaseNamespace is set; with no lease, every
// agent with Enabled writes (for a single agent or tests). The writer uses
// server-side apply of the status subresource with one field manager and skips a
// write when the object's conditions already say the same thing, so a new leader
// after a failover writes nothing that is already right.
type StatusOptions struct {
	Enabled bool
	// FieldManager of the server-side apply (default "egressd").
	FieldManager string
	// LeaseNamespace and LeaseName (default "egressd-status") of the leader lease;
	// empty LeaseNamespace: no leader election.
	LeaseNamespace string
	LeaseName      string
	// Identity of this agent in the lease (default: the node name, else hostname).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod of the leader election
	// (defaults 15s, 10s, 2s).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// NodeLeaseDuration of the per-node agent Leases (default 40s, renewed every
	// quarter of it): a node counts for the Programmed condition while its Lease
	// is unexpired; its status.nodes entries are pruned once the Lease expired
	// and the entry is older than this duration.
	NodeLeaseDuration time.Duration
}

// Condition reasons.
const (
	ReasonValid       = "Valid"
	ReasonDecodeError = "DecodeError"
	// Programmed: True/Programmed when every node runs metadata.generation,
	// False/Pending when some do not yet, False/Invalid for an invalid policy.
	ReasonProgrammed = "Programmed"
	ReasonPending    = "Pending"
	ReasonInvalid    = "Invalid"
)

type statusWriter struct {
	src     *Source
	opts    StatusOptions
	queue   workqueue.TypedRateLimitingInterface[policy.PolicyRef]
	leading atomic.Bool
	writes  atomic.Int64

	leaseFact informers.SharedInformerFactory
	leases    cache.SharedIndexInformer // agent Leases; nil without a lease namespace
	liveMu    sync.Mutex
	lastLive  []string
}

func newStatusWriter(src *Source, opts StatusOptions) *statusWriter {
	if opts.FieldManager == "" {
		opts.FieldManager = "egressd"
	}
	if opts.LeaseName == "" {
		opts.LeaseName = "egressd-status"
	}
	if opts.Identity == "" {
		opts.Identity = src.opts.NodeName
		if opts.Identity == "" {
			opts.Identity, _ = os.Hostname()
		}
	}
	if opts.LeaseDuration == 0 {
		opts.LeaseDuration = 15 * time.Second
	}
	if opts.RenewDeadline == 0 {
		opts.RenewDeadline = 10 * time.Second
	}
	if opts.RetryPeriod == 0 {
		opts.RetryPeriod = 2 * time.Second
	}
	if opts.NodeLeaseDuration < time.Second {
		opts.NodeLeaseDuration = 40 * time.Second
	}
	w := &statusWriter{src: src, opts: opts,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[policy.PolicyRef](100*time.Millisecond, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[policy.PolicyRef]{Name: "egressd-status"}),
	}
	if opts.LeaseNamespace != "" {
		w.leaseFact, w.leases = newAgentLeaseInformer(src, opts.LeaseNamespace)
		_, _ = w.leases.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { w.checkLive() },
			UpdateFunc: func(_, _ any) { w.checkLive() },
			DeleteFunc: func(any) { w.checkLive() },
		})
	}
	return w
}

// checkLive re-checks every policy when the set of nodes with a live agent
// changed (a node joined, or its agent Lease expired).
func (w *statusWriter) checkLive() {
	live := w.liveNodes(time.Now())
	w.liveMu.Lock()
	changed := !slices.Equal(live, w.lastLive)
	w.lastLive = live
	w.liveMu.Unlock()
	if changed && w.leading.Load() {
		w.src.log.Info("policy status writer: nodes with an agent", "nodes", live)
		w.queueAll()
	}
}

func (w *statusWriter) enqueue(ref policy.PolicyRef) {
	if w.leading.Load() {
		w.queue.Add(ref)
	}
}

func (w *statusWriter) forget(ref policy.PolicyRef) { w.queue.Forget(ref) }

// Writes returns how many status writes this agent made.
func (s *Source) StatusWrites() int64 {
	if s.status == nil {
		return 0
	}
	return s.status.writes.Load()
}

func (w *statusWriter) run(ctx context.Context) {
	defer w.queue.ShutDown()
	if w.leases != nil {
		w.leaseFact.Start(ctx.Done())
		defer w.leaseFact.Shutdown()
		cache.WaitForCacheSync(ctx.Done(), w.leases.HasSynced)
		go func() {
			// Leases expire without an event.
			t := time.NewTicker(max(w.opts.NodeLeaseDuration/8, 100*time.Millisecond))
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					w.checkLive()
				}
			}
		}()
	}
	go func() {
		for w.processOne(ctx) {
		}
	}()
	if w.opts.LeaseNamespace == "" {
		w.startLeading()
		<-ctx.Done()
		return
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: w.opts.LeaseNamespace, Name: w.opts.LeaseName},
		Client:     w.src.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: w.opts.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   w.opts.LeaseDuration,
			RenewDeadline:   w.opts.RenewDeadline,
			RetryPeriod:     w.opts.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            "egressd-status",
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(context.Context) { w.startLeading() },
				OnStoppedLeading: func() {
					w.leading.Store(false)
					w.src.log.Info("policy status writer: lost the lease")
				},
			},
		})
		if err != nil {
			w.src.log.Error("policy status writer: leader election", "err", err)
			return
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
	}
}

// startLeading queues every policy: the new writer checks them all.
func (w *statusWriter) startLeading() {
	w.leading.Store(true)
	w.src.log.Info("policy status writer: writing policy status", "identity", w.opts.Identity)
	w.queueAll()
}

func (w *statusWriter) queueAll() {
	for _, inf := range []struct {
		kind string
		keys []string
	}{{kindFWP, w.src.fwps.GetStore().ListKeys()}, {kindCFWP, w.src.cfwps.GetStore().ListKeys()}} {
		for _, k := range inf.keys {
			ns, name, _ := strings.Cut(k, "/")
			if name == "" {
				ns, name = "", k
			}
			w.queue.Add(policy.PolicyRef{Kind: inf.kind, Namespace: ns, Name: name})
		}
	}
}

func (w *statusWriter) processOne(ctx context.Context) bool {
	ref, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(ref)
	if !w.leading.Load() {
		w.queue.Forget(ref)
		return true
	}
	if err := w.write(ctx, ref); err != nil {
		if ctx.Err() != nil {
			return false
		}
		if isNotFound(err) {
			w.queue.Forget(ref)
			return true
		}
		w.src.log.Warn("policy status write failed; retrying", "policy", ref.String(), "err", err)
		w.queue.AddRateLimited(ref)
		return true
	}
	w.queue.Forget(ref)
	return true
}

// DesiredConditions returns the Accepted and Invalid conditions for a policy at
// generation gen whose validation returned err (nil: valid).
func DesiredConditions(gen int64, err error) []metav1.Condition {
	if err == nil {
		return []metav1.Condition{
			{Type: policy.ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonValid, Message: "the policy is valid and in force", ObservedGeneration: gen},
			{Type: policy.ConditionInvalid, Status: metav1.ConditionFalse, Reason: ReasonValid, Message: "no problems", ObservedGeneration: gen},
		}
	}
	reason, msg := ReasonDecodeError, err.Error()
	var ve *policy.ValidationError
	if errors.As(err, &ve) && len(ve.Errs) > 0 {
		reason = string(ve.Errs[0].Type) // e.g. FieldValueInvalid
		parts := make([]string, len(ve.Errs))
		for i, fe := range ve.Errs {
			parts[i] = fe.Error() // "spec.egress[0].to[0].cidr: Invalid value: ..."
		}
		msg = strings.Join(parts, "; ")
	}
	if len(msg) > 32000 {
		msg = msg[:32000]
	}
	return []metav1.Condition{
		{Type: policy.ConditionAccepted, Status: metav1.ConditionFalse, Reason: reason, Message: "rejected; the previous version (if any) stays in force: " + msg, ObservedGeneration: gen},
		{Type: policy.ConditionInvalid, Status: metav1.ConditionTrue, Reason: reason, Message: msg, ObservedGeneration: gen},
	}
}

func (w *statusWriter) write(ctx context.Context, ref policy.PolicyRef) error {
	inf := w.src.fwps
	ck := ref.Namespace + "/" + ref.Name
	if ref.Kind == kindCFWP {
		inf, ck = w.src.cfwps, ref.Name
	}
	o, exists, err := inf.GetStore().GetByKey(ck)
	if err != nil || !exists {
		return err
	}
	u := o.(*unstructured.Unstructured)
	gen := u.GetGeneration()
	w.src.mu.Lock()
	applied, handled := w.src.applied[ref]
	verr := w.src.invalid[ref]
	w.src.mu.Unlock()
	if !handled || applied != gen {
		return nil // the source has not seen this generation yet; it will queue it
	}
	var cur struct {
		Conditions []metav1.Condition `json:"conditions"`
	}
	if st, ok := u.Object["status"].(map[string]any); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(st, &cur)
	}
	want := DesiredConditions(gen, verr)
	prog, prune, recheck := w.programmed(u, gen, verr != nil, time.Now())
	want = append(want, prog)
	if recheck > 0 {
		w.queue.AddAfter(ref, recheck)
	}
	same := len(prune) == 0
	out := make([]metav1.Condition, 0, len(want))
	for _, c := range want {
		old := meta.FindStatusCondition(cur.Conditions, c.Type)
		if old != nil && old.Status == c.Status {
			c.LastTransitionTime = old.LastTransitionTime
		} else {
			c.LastTransitionTime = metav1.Now()
		}
		if old == nil || old.Status != c.Status || old.Reason != c.Reason || old.Message != c.Message || old.ObservedGeneration != c.ObservedGeneration {
			same = false
		}
		out = append(out, c)
	}
	if same {
		return nil
	}
	if err := w.prune(ctx, ref, prune); err != nil {
		return err
	}
	conds := make([]any, len(out))
	for i := range out {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&out[i])
		if err != nil {
			return err
		}
		conds[i] = m
	}
	apply := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": policy.APIVersion,
		"kind":       ref.Kind,
		"metadata":   map[string]any{"name": ref.Name},
		"status":     map[string]any{"conditions": conds},
	}}
	if ref.Namespace != "" {
		apply.SetNamespace(ref.Namespace)
	}
	res := w.src.dyn.Resource(gvrOf(ref.Kind))
	opts := metav1.ApplyOptions{FieldManager: w.opts.FieldManager, Force: true}
	if ref.Namespace != "" {
		_, err = res.Namespace(ref.Namespace).ApplyStatus(ctx, ref.Name, apply, opts)
	} else {
		_, err = res.ApplyStatus(ctx, ref.Name, apply, opts)
	}
	if err != nil {
		return fmt.Errorf("apply status: %w", err)
	}
	w.writes.Add(1)
	return nil
}

// programmed returns the Programmed condition of a policy at generation gen from
// its status.nodes, the entries to prune (nodes whose agent Lease expired, with
// an entry older than the node lease duration) and, when an entry will become
// prunable later, after how long to look again.
func (w *statusWriter) programmed(u *unstructured.Unstructured, gen int64, invalid bool, now time.Time) (metav1.Condition, []string, time.Duration) {
	entries := nodeEntries(u)
	live := w.liveNodes(now)
	var prune []string
	var recheck time.Duration
	if live == nil { // no agent Leases: every node that reported counts
		live = make([]string, 0, len(entries))
		for n := range entries {
			live = append(live, n)
		}
	} else {
		for n, e := range entries {
			if slices.Contains(live, n) {
				continue
			}
			if age := now.Sub(e.at); age >= w.opts.NodeLeaseDuration {
				prune = append(prune, n)
			} else if d := w.opts.NodeLeaseDuration - age + 100*time.Millisecond; recheck == 0 || d < recheck {
				recheck = d
			}
		}
	}
	done := 0
	for _, n := range live {
		if e, ok := entries[n]; ok && e.gen == gen {
			done++
		}
	}
	c := metav1.Condition{Type: policy.ConditionProgrammed, ObservedGeneration: gen,
		Message: fmt.Sprintf("programmed on %d/%d nodes", done, len(live))}
	switch {
	case invalid:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonInvalid
	case len(live) > 0 && done == len(live):
		c.Status, c.Reason = metav1.ConditionTrue, ReasonProgrammed
	default:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonPending
	}
	sort.Strings(prune)
	return c, prune, recheck
}

// prune removes the status.nodes entries of gone nodes with a JSON patch whose
// test operations make it fail (and be retried) when the list moved meanwhile.
// The entries belong to the nodes' field managers, so an apply cannot drop them.
func (w *statusWriter) prune(ctx context.Context, ref policy.PolicyRef, nodes []string) error {
	if len(nodes) == 0 {
		return nil
	}
	u, ok := w.src.cached(ref)
	if !ok {
		return nil
	}
	entries := nodeEntries(u)
	idx := make([]int, 0, len(nodes))
	name := map[int]string{}
	for _, n := range nodes {
		if e, ok := entries[n]; ok {
			idx = append(idx, e.index)
			name[e.index] = n
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(idx)))
	var ops []map[string]any
	for _, i := range idx {
		p := fmt.Sprintf("/status/nodes/%d", i)
		ops = append(ops,
			map[string]any{"op": "test", "path": p + "/nodeName", "value": name[i]},
			map[string]any{"op": "remove", "path": p})
	}
	body, err := json.Marshal(ops)
	if err != nil {
		return err
	}
	res := w.src.dyn.Resource(gvrOf(ref.Kind))
	if ref.Namespace != "" {
		_, err = res.Namespace(ref.Namespace).Patch(ctx, ref.Name, types.JSONPatchType, body, metav1.PatchOptions{}, "status")
	} else {
		_, err = res.Patch(ctx, ref.Name, types.JSONPatchType, body, metav1.PatchOptions{}, "status")
	}
	if err != nil {
		return fmt.Errorf("prune status.nodes %v: %w", nodes, err)
	}
	w.src.log.Info("policy status writer: pruned nodes without an agent", "policy", ref.String(), "nodes", nodes)
	return nil
}

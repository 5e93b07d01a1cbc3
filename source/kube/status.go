package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
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
	// is unexpired.
	NodeLeaseDuration time.Duration
	// ProgressInterval is how often, at most, the writer rewrites a pending
	// Programmed condition whose node count moved (default 10s): an edit that
	// every node programs within it costs two writes (Pending, then Programmed),
	// whatever the node count.
	ProgressInterval time.Duration
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
	ctx     context.Context // of run

	leaseFact  informers.SharedInformerFactory
	leases     cache.SharedIndexInformer // agent Leases; nil without a lease namespace
	leasesOnce sync.Once                 // started when leading: only the writer watches them

	// What the nodes programmed (progress.go's model, docs/scale.md): seq
	// numbers the writer's own successive policy states; a node that
	// published the digest of state s has programmed every policy whose
	// changedAt is at most s.
	progMu    sync.Mutex
	seq       uint64
	history   map[string]uint64 // digest → seq (the last historyLimit states)
	order     []string          // digests of history, oldest first
	prevGens  map[policy.PolicyRef]int64
	changedAt map[policy.PolicyRef]uint64
	nodeSeq   map[string]uint64 // best state seq each node published
	direct    map[string]string // no agent Leases: node → digest, reported in process
	snap      progressSnapshot
	kickTimer *time.Timer
	lastWrite map[policy.PolicyRef]time.Time
}

// progressSnapshot is the live nodes' state seqs, sorted.
type progressSnapshot struct {
	nodes []string
	seqs  []uint64
}

// historyLimit bounds the policy states the writer remembers: a node whose
// digest is older than that counts as programmed only for the policies its
// last recognised state covers.
const historyLimit = 256

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
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 10 * time.Second
	}
	w := &statusWriter{src: src, opts: opts,
		history: map[string]uint64{}, changedAt: map[policy.PolicyRef]uint64{}, nodeSeq: map[string]uint64{},
		direct: map[string]string{}, lastWrite: map[policy.PolicyRef]time.Time{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[policy.PolicyRef](100*time.Millisecond, time.Minute),
			workqueue.TypedRateLimitingQueueConfig[policy.PolicyRef]{Name: "egressd-status"}),
	}
	if opts.LeaseNamespace != "" {
		w.leaseFact, w.leases = newAgentLeaseInformer(src, opts.LeaseNamespace)
		_, _ = w.leases.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { w.kick() },
			UpdateFunc: func(_, _ any) { w.kick() },
			DeleteFunc: func(any) { w.kick() },
		})
	}
	return w
}

// kick re-evaluates the nodes' progress within a second (one evaluation for a
// burst of Lease updates).
func (w *statusWriter) kick() {
	w.progMu.Lock()
	defer w.progMu.Unlock()
	if w.kickTimer != nil {
		return
	}
	w.kickTimer = time.AfterFunc(time.Second, func() {
		w.progMu.Lock()
		w.kickTimer = nil
		w.progMu.Unlock()
		w.checkProgress()
	})
}

// checkProgress recomputes the live nodes' progress and, when it moved (a node
// joined or left, or published a newer state), re-checks every policy; the
// writes skip the policies whose conditions stay the same.
func (w *statusWriter) checkProgress() {
	live, digests := w.liveNodes(time.Now())
	w.progMu.Lock()
	snap := progressSnapshot{nodes: live, seqs: make([]uint64, 0, len(live))}
	for _, n := range live {
		if s, ok := w.history[digests[n]]; ok && s > w.nodeSeq[n] {
			w.nodeSeq[n] = s
		}
		snap.seqs = append(snap.seqs, w.nodeSeq[n])
	}
	slices.Sort(snap.seqs)
	changed := !slices.Equal(snap.nodes, w.snap.nodes) || !slices.Equal(snap.seqs, w.snap.seqs)
	nodesChanged := !slices.Equal(snap.nodes, w.snap.nodes)
	w.snap = snap
	w.progMu.Unlock()
	if nodesChanged && w.leading.Load() {
		w.src.log.Info("policy status writer: nodes with an agent", "nodes", len(live))
	}
	if changed && w.leading.Load() {
		w.queueAll()
	}
}

// observe records the writer's own policy state after a change of the Store
// (the generations of the policies it holds): a new state gets the next seq,
// and each policy whose generation changed is marked as changed at it.
func (w *statusWriter) observe(gens map[policy.PolicyRef]int64) {
	d := ProgrammedDigest(gens)
	w.progMu.Lock()
	if _, ok := w.history[d]; ok && w.seq > 0 && w.order[len(w.order)-1] == d {
		w.progMu.Unlock()
		return
	}
	w.seq++
	if _, ok := w.history[d]; !ok {
		w.order = append(w.order, d)
	}
	w.history[d] = w.seq
	for len(w.order) > historyLimit {
		delete(w.history, w.order[0])
		w.order = w.order[1:]
	}
	for ref, g := range gens {
		if old, ok := w.prevGens[ref]; !ok || old != g {
			w.changedAt[ref] = w.seq
		}
	}
	for ref := range w.changedAt {
		if _, ok := gens[ref]; !ok {
			delete(w.changedAt, ref)
		}
	}
	w.prevGens = gens
	w.progMu.Unlock()
	w.checkProgress() // a node may have published this state before the writer saw it
}

// nodeProgrammed records, without agent Leases, what a node programmed.
func (w *statusWriter) nodeProgrammed(node, digest string) {
	w.progMu.Lock()
	w.direct[node] = digest
	w.progMu.Unlock()
	w.kick()
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
	w.ctx = ctx
	if w.leases != nil {
		defer func() {
			w.leasesOnce.Do(func() {}) // never start them after this
			w.leaseFact.Shutdown()
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

// startLeading starts watching the agent Leases (only the writer watches
// them: N agents watching N Leases would be N² events per renewal round) and
// queues every policy: the new writer checks them all.
func (w *statusWriter) startLeading() {
	w.leading.Store(true)
	w.src.log.Info("policy status writer: writing policy status", "identity", w.opts.Identity)
	if w.leases != nil {
		w.leasesOnce.Do(func() {
			ctx := w.ctx
			w.leaseFact.Start(ctx.Done())
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
						w.checkProgress()
					}
				}
			}()
		})
	}
	w.checkProgress()
	w.queueAll()
}

func (w *statusWriter) queueAll() {
	for _, inf := range []struct {
		kind string
		keys []string
	}{{kindFWP, w.src.fwps.GetStore().ListKeys()}, {kindCFWP, w.src.cfwps.GetStore().ListKeys()}, {kindCNP, w.src.cnpKeys()}} {
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
	switch ref.Kind {
	case kindCFWP:
		inf, ck = w.src.cfwps, ref.Name
	case kindCNP:
		if inf, _ = w.src.cnpInformer(); inf == nil {
			return nil
		}
		ck = ref.Name
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
	inForce, hasVersion := w.src.inStore[ref]
	w.src.mu.Unlock()
	if !handled || applied != gen {
		return nil // the source has not seen this generation yet; it will queue it
	}
	var cur currentStatus
	if st, ok := u.Object["status"].(map[string]any); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(st, &cur)
	}
	want := DesiredConditions(gen, verr)
	if !hasVersion {
		inForce = -1
	}
	want = append(want, w.programmed(ref, gen, inForce, verr != nil))
	if ref.Kind == kindCNP {
		// Another implementation may own the unprefixed types.
		for i := range want {
			want[i].Type = "egressd.io/" + want[i].Type
		}
	}
	_, hasNodes := cur.Nodes()
	same, progressOnly := !hasNodes, !hasNodes
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
			// Only the node count of a condition that stays pending moved.
			if old == nil || strings.TrimPrefix(c.Type, "egressd.io/") != policy.ConditionProgrammed || c.Status == metav1.ConditionTrue ||
				old.Status != c.Status || old.Reason != c.Reason || old.ObservedGeneration != c.ObservedGeneration {
				progressOnly = false
			}
		}
		out = append(out, c)
	}
	if same {
		return nil
	}
	if progressOnly {
		w.progMu.Lock()
		wait := w.opts.ProgressInterval - time.Since(w.lastWrite[ref])
		w.progMu.Unlock()
		if wait > 0 {
			w.queue.AddAfter(ref, wait)
			return nil
		}
	}
	if hasNodes {
		if err := w.dropNodes(ctx, ref); err != nil {
			return err
		}
	}
	conds := make([]any, len(out))
	for i := range out {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&out[i])
		if err != nil {
			return err
		}
		conds[i] = m
	}
	apiVersion := policy.APIVersion
	if ref.Kind == kindCNP {
		apiVersion = w.src.gvrOf(kindCNP).GroupVersion().String()
	}
	apply := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": apiVersion,
		"kind":       ref.Kind,
		"metadata":   map[string]any{"name": ref.Name},
		"status":     map[string]any{"conditions": conds},
	}}
	if ref.Namespace != "" {
		apply.SetNamespace(ref.Namespace)
	}
	res := w.src.dyn.Resource(w.src.gvrOf(ref.Kind))
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
	w.progMu.Lock()
	w.lastWrite[ref] = time.Now()
	w.progMu.Unlock()
	return nil
}

// currentStatus is what the writer reads of a policy's status.
type currentStatus struct {
	Conditions []metav1.Condition `json:"conditions"`
	// NodeList is status.nodes, the per-node entries earlier versions wrote
	// (one per node); the writer removes it.
	NodeList []any `json:"nodes"`
}

// Nodes returns status.nodes and whether the object has it.
func (c currentStatus) Nodes() ([]any, bool) { return c.NodeList, c.NodeList != nil }

// programmed returns the Programmed condition of a policy at generation gen
// whose version in force (in the Store) is at generation inForce (-1: none):
// "programmed on N/M nodes", M the nodes with a live agent, N those whose
// published state includes that version.
func (w *statusWriter) programmed(ref policy.PolicyRef, gen, inForce int64, invalid bool) metav1.Condition {
	w.progMu.Lock()
	snap := w.snap
	at, known := w.changedAt[ref]
	// The writer has not observed the Store's version yet: nobody counts.
	known = known && w.prevGens[ref] == inForce
	w.progMu.Unlock()
	done := 0
	if known {
		// seqs is sorted: the nodes at or past the policy's change.
		i, _ := slices.BinarySearch(snap.seqs, at)
		done = len(snap.seqs) - i
	}
	live := len(snap.nodes)
	c := metav1.Condition{Type: policy.ConditionProgrammed, ObservedGeneration: gen,
		Message: fmt.Sprintf("programmed on %d/%d nodes", done, live)}
	switch {
	case invalid:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonInvalid
	case live > 0 && done == live:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonProgrammed
	default:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonPending
	}
	return c
}

// dropNodes removes status.nodes, the per-node entries of earlier versions
// (upgrade). They belong to the nodes' field managers, so an apply cannot drop
// them; a JSON patch removes the whole list in one write.
func (w *statusWriter) dropNodes(ctx context.Context, ref policy.PolicyRef) error {
	body := []byte(`[{"op":"remove","path":"/status/nodes"}]`)
	res := w.src.dyn.Resource(w.src.gvrOf(ref.Kind))
	var err error
	if ref.Namespace != "" {
		_, err = res.Namespace(ref.Namespace).Patch(ctx, ref.Name, types.JSONPatchType, body, metav1.PatchOptions{}, "status")
	} else {
		_, err = res.Patch(ctx, ref.Name, types.JSONPatchType, body, metav1.PatchOptions{}, "status")
	}
	if err != nil {
		return fmt.Errorf("remove status.nodes: %w", err)
	}
	w.writes.Add(1)
	w.src.log.Info("policy status writer: removed the per-node status entries of an earlier version", "policy", ref.String())
	return nil
}

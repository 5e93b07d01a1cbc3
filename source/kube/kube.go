// Package kube is the cluster policy source: it watches the Kubernetes API with
// client-go informers (Pods, Namespaces, Nodes, NetworkPolicies, FirewallPolicies,
// ClusterFirewallPolicies, ClusterNetworkPolicies when their CRD is installed,
// and the cluster DNS Service) and keeps a policy.Store in
// line with the cluster, the way source/file does for the standalone files.
//
// Every informer event only enqueues the object's key; one worker reads the current
// object from the informer cache (level-triggered: the last read wins, so events
// handled in any order converge) and updates the Store, then calls onChange once
// per batch. Nothing reaches the Store before every informer has synced: the first
// batch is the complete cluster state, so the agent never compiles a partial cache
// (until then the kernel keeps what the previous agent left).
//
// An invalid FirewallPolicy or ClusterFirewallPolicy keeps its previous version in
// force (policy.Store semantics) and, when the status writer runs, gets the
// conditions Accepted=False and Invalid=True naming the field; a valid one gets
// Accepted=True. See docs/kubernetes.md for how one writer is chosen.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/egressd/egressd/policy"
)

// GVRs of the project's policy kinds.
var (
	FirewallPolicies        = policy.SchemeGroupVersion.WithResource("firewallpolicies")
	ClusterFirewallPolicies = policy.SchemeGroupVersion.WithResource("clusterfirewallpolicies")
)

// Options configure a Source.
type Options struct {
	// NodeName is this node; pods with that spec.nodeName are this node's (the
	// enforcer keeps only those, see egress.WithNode). Every pod is still loaded:
	// peer selectors match pods of every node.
	NodeName string
	// DNSService is the cluster DNS Service, "namespace/name" (default
	// kube-system/kube-dns).
	DNSService string
	// NoDNSService: do not watch a cluster DNS Service (DNSServiceIPs is empty).
	NoDNSService bool
	// Status enables the policy status writer (see StatusOptions).
	Status StatusOptions
	// Resync is the informers' resync period (0: none; the worker is level-triggered
	// so a resync only re-checks).
	Resync time.Duration
	// Log receives the source's logs (default slog.Default()).
	Log *slog.Logger
	// CNPProbeInterval is how often the source looks for the
	// ClusterNetworkPolicy CRD while it is not installed (default 30s).
	CNPProbeInterval time.Duration
}

// kinds of queued keys.
const (
	kindPod     = "Pod"
	kindNS      = "Namespace"
	kindNetpol  = policy.KindNetworkPolicy
	kindFWP     = policy.KindFirewallPolicy
	kindCFWP    = policy.KindClusterFirewallPolicy
	kindService = "Service"
	kindNode    = "Node"
)

type key struct {
	kind, namespace, name string
}

// Source keeps a policy.Store in sync with the cluster.
type Source struct {
	store   *policy.Store
	opts    Options
	log     *slog.Logger
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	factory informers.SharedInformerFactory
	dynFact dynamicinformer.DynamicSharedInformerFactory
	svcFact informers.SharedInformerFactory

	pods, nss, netpols, services cache.SharedIndexInformer
	// nodes feeds the Store's nodes (ClusterNetworkPolicy nodes peers).
	nodes       cache.SharedIndexInformer
	fwps, cfwps cache.SharedIndexInformer
	// cnps watches ClusterNetworkPolicies (cnp.go); nil while the CRD is
	// not installed. Guarded by mu.
	cnps   cache.SharedIndexInformer
	cnpGVR schema.GroupVersionResource

	queue workqueue.TypedRateLimitingInterface[key]
	// handlersSynced report when every informer delivered its initial list
	// to the queue.
	handlersSynced []cache.InformerSynced
	synced         atomic.Bool
	status         *statusWriter
	programmed     programmedState // what this node programmed (nodestatus.go)
	// policiesChanged: the batch being handled changed a policy (the worker's
	// own flag).
	policiesChanged bool

	mu sync.Mutex
	// applied is the generation of each policy in the store (or rejected at
	// that generation), to skip status-only updates.
	applied map[policy.PolicyRef]int64
	// invalid holds the validation error of each rejected policy.
	invalid map[policy.PolicyRef]error
	// inStore is the generation of the version of each policy the Store holds.
	inStore map[policy.PolicyRef]int64
	dnsIPs  []netip.Addr
	// eventTimes records when each queued key was first seen since it was last
	// handled (for latency metrics).
	eventTimes map[key]time.Time
	onApplied  func(lag time.Duration)
}

// New returns a source for the API server of cfg. It does not contact the server
// before Run.
func New(cfg *rest.Config, store *policy.Store, opts Options) (*Source, error) {
	// Built-in types (pods, namespaces, NetworkPolicies, Leases) over
	// protobuf: smaller and cheaper to decode than JSON, which matters for the
	// initial list of every pod of the cluster. CRDs only speak JSON.
	pb := rest.CopyConfig(cfg)
	pb.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	pb.ContentType = "application/vnd.kubernetes.protobuf"
	kc, err := kubernetes.NewForConfig(pb)
	if err != nil {
		return nil, err
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return NewForClients(kc, dc, store, opts)
}

// NewForClients is New with existing clients.
func NewForClients(kc kubernetes.Interface, dc dynamic.Interface, store *policy.Store, opts Options) (*Source, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.DNSService == "" {
		opts.DNSService = "kube-system/kube-dns"
	}
	dnsNS, dnsName, ok := strings.Cut(opts.DNSService, "/")
	if !ok || dnsNS == "" || dnsName == "" {
		return nil, fmt.Errorf("DNS service %q: want namespace/name", opts.DNSService)
	}
	s := &Source{
		store: store, opts: opts, log: opts.Log, kube: kc, dyn: dc,
		applied:    map[policy.PolicyRef]int64{},
		invalid:    map[policy.PolicyRef]error{},
		inStore:    map[policy.PolicyRef]int64{},
		eventTimes: map[key]time.Time{},
		programmed: programmedState{changed: make(chan struct{}, 1)},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[key](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "egressd-kube-source"}),
	}
	s.factory = informers.NewSharedInformerFactory(kc, opts.Resync)
	s.svcFact = informers.NewSharedInformerFactoryWithOptions(kc, opts.Resync,
		informers.WithNamespace(dnsNS),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			lo.FieldSelector = fields.OneTermEqualSelector("metadata.name", dnsName).String()
		}))
	s.dynFact = dynamicinformer.NewDynamicSharedInformerFactory(dc, opts.Resync)
	s.pods = s.factory.Core().V1().Pods().Informer()
	s.nss = s.factory.Core().V1().Namespaces().Informer()
	s.netpols = s.factory.Networking().V1().NetworkPolicies().Informer()
	s.nodes = s.factory.Core().V1().Nodes().Informer()
	_ = s.nodes.SetTransform(trimNode)
	if !opts.NoDNSService {
		s.services = s.svcFact.Core().V1().Services().Informer()
	}
	s.fwps = s.dynFact.ForResource(FirewallPolicies).Informer()
	s.cfwps = s.dynFact.ForResource(ClusterFirewallPolicies).Informer()
	// The caches keep only what the source reads (docs/scale.md "Slim
	// caches"): every pod of the cluster is cached, so the pods most of all.
	_ = s.pods.SetTransform(trimPod)
	_ = s.nss.SetTransform(trimNamespace)
	_ = s.netpols.SetTransform(trimMeta)
	_ = s.fwps.SetTransform(trimMeta)
	_ = s.cfwps.SetTransform(trimMeta)
	for kind, inf := range map[string]cache.SharedIndexInformer{
		kindPod: s.pods, kindNS: s.nss, kindNetpol: s.netpols, kindService: s.services,
		kindFWP: s.fwps, kindCFWP: s.cfwps, kindNode: s.nodes,
	} {
		if inf == nil {
			continue
		}
		reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { s.enqueue(kind, o) },
			UpdateFunc: func(_, o any) { s.enqueue(kind, o) },
			DeleteFunc: func(o any) { s.enqueue(kind, o) },
		})
		if err != nil {
			return nil, err
		}
		// The handler's HasSynced, not the informer's: the informer has
		// synced once its cache holds the initial list, the handler once
		// every object of it was delivered (queued here). Waiting on the
		// informer's let the first batch miss objects still in delivery.
		s.handlersSynced = append(s.handlersSynced, reg.HasSynced)
	}
	if opts.Status.Enabled {
		s.status = newStatusWriter(s, opts.Status)
	}
	return s, nil
}

// OnApplied sets a function called with the time from the first event of a key
// to its Store update, for every handled key (latency metrics). Call before Run.
func (s *Source) OnApplied(f func(lag time.Duration)) { s.onApplied = f }

func (s *Source) enqueue(kind string, o any) {
	k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(o)
	if err != nil {
		return
	}
	ns, name, _ := cache.SplitMetaNamespaceKey(k)
	qk := key{kind, ns, name}
	s.mu.Lock()
	if _, ok := s.eventTimes[qk]; !ok {
		s.eventTimes[qk] = time.Now()
	}
	s.mu.Unlock()
	s.queue.Add(qk)
}

// Synced reports whether every informer has synced and the first complete state
// is in the Store.
func (s *Source) Synced() bool { return s.synced.Load() }

// DNSServiceIPs returns the cluster IPs of the cluster DNS Service (nil when it
// does not exist).
func (s *Source) DNSServiceIPs() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]netip.Addr(nil), s.dnsIPs...)
}

// Invalid returns the validation error of every policy the Store rejected.
func (s *Source) Invalid() map[policy.PolicyRef]error {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[policy.PolicyRef]error, len(s.invalid))
	for k, v := range s.invalid {
		out[k] = v
	}
	return out
}

// Run starts the informers, waits until they synced, loads the complete state
// into the Store and calls onChange, then keeps the Store in line with every event
// (onChange once per batch of changes) until ctx ends. It returns an error when
// the caches cannot sync.
func (s *Source) Run(ctx context.Context, onChange func()) error {
	defer s.queue.ShutDown()
	go func() { <-ctx.Done(); s.queue.ShutDown() }() // unblocks the worker
	s.factory.Start(ctx.Done())
	s.svcFact.Start(ctx.Done())
	cnpWatched := s.setupCNP()
	s.dynFact.Start(ctx.Done())
	if !cnpWatched {
		go s.watchForCNP(ctx)
	}
	defer func() {
		s.factory.Shutdown()
		s.svcFact.Shutdown()
		s.dynFact.Shutdown()
	}()
	start := time.Now()
	if !cache.WaitForCacheSync(ctx.Done(), s.handlersSynced...) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("kube source: informer caches did not sync")
	}
	// Namespaces and policies before pods: the first batch is the whole state
	// anyway; the order only keeps the worker's first pass cheap.
	s.drain(ctx, onChange)
	s.synced.Store(true)
	s.log.Info("kubernetes caches synced", "took", time.Since(start).Round(time.Millisecond),
		"pods", len(s.pods.GetStore().ListKeys()), "policies", len(s.store.Policies()))
	s.observePolicies()
	if onChange != nil {
		onChange()
	}
	if s.status != nil {
		go s.status.run(ctx)
		if ns := s.opts.Status.LeaseNamespace; ns != "" && s.opts.NodeName != "" {
			go s.agentLease(ctx, ns, s.opts.NodeName, s.status.opts.NodeLeaseDuration)
		}
	}
	for s.processBatch(ctx, onChange) {
	}
	return ctx.Err()
}

// drain handles every queued key without blocking (the initial state).
func (s *Source) drain(ctx context.Context, _ func()) {
	for s.queue.Len() > 0 && ctx.Err() == nil {
		k, quit := s.queue.Get()
		if quit {
			return
		}
		s.handle(k)
	}
}

// processBatch blocks for one key, handles it and everything queued meanwhile,
// then calls onChange if the Store changed. It returns false when the queue shut
// down.
func (s *Source) processBatch(ctx context.Context, onChange func()) bool {
	k, quit := s.queue.Get()
	if quit {
		return false
	}
	changed := s.handle(k)
	for s.queue.Len() > 0 && ctx.Err() == nil {
		k, quit := s.queue.Get()
		if quit {
			break
		}
		changed = s.handle(k) || changed
	}
	s.observePolicies()
	if changed && onChange != nil {
		onChange()
	}
	return ctx.Err() == nil
}

// observePolicies tells the status writer the Store's policy generations
// after a batch that changed a policy.
func (s *Source) observePolicies() {
	if s.policiesChanged && s.status != nil {
		s.status.observe(s.StoreGenerations())
	}
	s.policiesChanged = false
}

// handle brings one key in line with the informer cache; it reports whether the
// Store changed.
func (s *Source) handle(k key) (changed bool) {
	defer s.queue.Done(k)
	changed, err := s.sync(k)
	if err != nil {
		s.log.Warn("kube source: retrying", "kind", k.kind, "namespace", k.namespace, "name", k.name, "err", err)
		s.queue.AddRateLimited(k)
		return changed
	}
	s.queue.Forget(k)
	s.mu.Lock()
	t0, ok := s.eventTimes[k]
	delete(s.eventTimes, k)
	s.mu.Unlock()
	if ok && changed && s.onApplied != nil {
		s.onApplied(time.Since(t0))
	}
	return changed
}

func (s *Source) sync(k key) (bool, error) {
	ck := k.name
	if k.namespace != "" {
		ck = k.namespace + "/" + k.name
	}
	var inf cache.SharedIndexInformer
	switch k.kind {
	case kindPod:
		inf = s.pods
	case kindNS:
		inf = s.nss
	case kindNode:
		inf = s.nodes
	case kindNetpol:
		inf = s.netpols
	case kindService:
		if s.services == nil {
			return false, nil
		}
		inf = s.services
	case kindFWP:
		inf = s.fwps
	case kindCFWP:
		inf = s.cfwps
	case kindCNP:
		if inf, _ = s.cnpInformer(); inf == nil {
			return false, nil
		}
	default:
		return false, nil
	}
	o, exists, err := inf.GetStore().GetByKey(ck)
	if err != nil {
		return false, err
	}
	switch k.kind {
	case kindPod:
		return s.syncPod(k, o, exists)
	case kindNS:
		return s.syncNamespace(k, o, exists)
	case kindNode:
		return s.syncNode(k, o, exists)
	case kindService:
		return s.syncService(o, exists), nil
	default:
		return s.syncPolicy(k, o, exists)
	}
}

func (s *Source) syncNamespace(k key, o any, exists bool) (bool, error) {
	if !exists {
		s.store.DeleteNamespace(k.name)
		return true, nil
	}
	ns := o.(*corev1.Namespace)
	return true, s.store.UpsertNamespace(policy.Namespace{Name: ns.Name, Labels: ns.Labels})
}

// syncNode keeps the Store's node (labels, status.addresses) in line; a
// change that does not touch them (conditions, heartbeats) changes nothing.
func (s *Source) syncNode(k key, o any, exists bool) (bool, error) {
	if !exists {
		if slices.Contains(s.store.Nodes(), k.name) {
			s.store.DeleteNode(k.name)
			return true, nil
		}
		return false, nil
	}
	n := NodeOf(o.(*corev1.Node))
	if old, ok := s.store.Node(n.Name); ok && reflect.DeepEqual(old, n) {
		return false, nil
	}
	return true, s.store.UpsertNode(n)
}

// NodeOf is the policy.Node of a node: its labels and the addresses of
// status.addresses (every address that parses as an IP, as upstream's nodes
// peer matches "the IPs present in the node.Status.Addresses field").
func NodeOf(n *corev1.Node) policy.Node {
	out := policy.Node{Name: n.Name, Labels: maps.Clone(n.Labels)}
	for _, a := range n.Status.Addresses {
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(out.IPs, ip.Unmap()) {
			out.IPs = append(out.IPs, ip.Unmap())
		}
	}
	return out
}

// trimNode keeps what NodeOf needs.
func trimNode(o any) (any, error) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return o, nil
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels, ResourceVersion: n.ResourceVersion},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}

func (s *Source) syncPod(k key, o any, exists bool) (bool, error) {
	wk := policy.WorkloadKey{Namespace: k.namespace, Name: k.name}
	var pod *corev1.Pod
	if exists {
		pod = o.(*corev1.Pod)
	}
	if pod == nil || podTerminated(pod) {
		// A finished pod releases its addresses (they may be reused at once).
		if _, ok := s.store.Workload(wk); ok {
			s.store.DeleteWorkload(wk)
			return true, nil
		}
		return false, nil
	}
	w := PodWorkload(pod)
	if old, ok := s.store.Workload(wk); ok && reflect.DeepEqual(old, w) {
		return false, nil
	}
	if err := s.store.UpsertWorkload(w); err != nil {
		// An address still held by a pod whose deletion is not handled yet:
		// take the pod in without addresses now (its labels count for
		// selection) and retry for the addresses.
		w2 := w
		w2.IPs = nil
		if err2 := s.store.UpsertWorkload(w2); err2 == nil {
			return true, err
		}
		return false, err
	}
	return true, nil
}

func podTerminated(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// PodWorkload is the policy.Workload of a pod: labels, status.podIPs (not for
// host-network pods, whose address is the node's), named container ports and
// spec.nodeName.
func PodWorkload(p *corev1.Pod) policy.Workload {
	w := policy.Workload{Namespace: p.Namespace, Name: p.Name, Node: p.Spec.NodeName}
	if len(p.Labels) > 0 {
		w.Labels = make(map[string]string, len(p.Labels))
		for k, v := range p.Labels {
			w.Labels[k] = v
		}
	}
	if !p.Spec.HostNetwork {
		ips := p.Status.PodIPs
		if len(ips) == 0 && p.Status.PodIP != "" {
			ips = []corev1.PodIP{{IP: p.Status.PodIP}}
		}
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip.IP); err == nil {
				w.IPs = append(w.IPs, a.Unmap())
			}
		}
	}
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			for _, cp := range c.Ports {
				if cp.Name == "" {
					continue
				}
				proto := policy.Protocol(cp.Protocol)
				if proto == "" {
					proto = policy.ProtocolTCP
				}
				w.Ports = append(w.Ports, policy.NamedPort{Name: cp.Name, Port: cp.ContainerPort, Protocol: proto})
			}
		}
	}
	return w
}

// slimMeta is the metadata the source reads of any object: its key, labels,
// generation and resource version (no managed fields, annotations, owners or
// finalizers, which can be most of an object's size).
func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Generation: m.Generation, Labels: m.Labels, DeletionTimestamp: m.DeletionTimestamp}
}

// trimNamespace keeps a namespace's name and labels.
func trimNamespace(o any) (any, error) {
	ns, ok := o.(*corev1.Namespace)
	if !ok {
		return o, nil
	}
	return &corev1.Namespace{ObjectMeta: slimMeta(ns.ObjectMeta)}, nil
}

// trimMeta drops the managed fields and annotations of a policy (the status
// writer reads the status conditions, so the rest stays).
func trimMeta(o any) (any, error) {
	switch v := o.(type) {
	case *networkingv1.NetworkPolicy:
		v.ObjectMeta = slimMeta(v.ObjectMeta)
	case *unstructured.Unstructured:
		if md, ok := v.Object["metadata"].(map[string]any); ok {
			delete(md, "managedFields")
			delete(md, "annotations")
		}
	}
	return o, nil
}

// trimPod keeps what PodWorkload and the latency bookkeeping need.
func trimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	p.ObjectMeta = slimMeta(p.ObjectMeta)
	trim := func(cs []corev1.Container) []corev1.Container {
		var out []corev1.Container
		for _, c := range cs {
			if len(c.Ports) > 0 {
				out = append(out, corev1.Container{Ports: c.Ports})
			}
		}
		return out
	}
	p.Spec = corev1.PodSpec{
		NodeName:       p.Spec.NodeName,
		HostNetwork:    p.Spec.HostNetwork,
		Containers:     trim(p.Spec.Containers),
		InitContainers: trim(p.Spec.InitContainers),
	}
	p.Status = corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs}
	return p, nil
}

func (s *Source) syncService(o any, exists bool) bool {
	var ips []netip.Addr
	if exists {
		svc := o.(*corev1.Service)
		list := svc.Spec.ClusterIPs
		if len(list) == 0 && svc.Spec.ClusterIP != "" {
			list = []string{svc.Spec.ClusterIP}
		}
		for _, ip := range list {
			if a, err := netip.ParseAddr(ip); err == nil {
				ips = append(ips, a)
			}
		}
	}
	sort.Slice(ips, func(i, j int) bool { return ips[i].Less(ips[j]) })
	s.mu.Lock()
	defer s.mu.Unlock()
	if reflect.DeepEqual(ips, s.dnsIPs) {
		return false
	}
	s.dnsIPs = ips
	s.log.Info("cluster DNS service", "service", s.opts.DNSService, "ips", ips)
	// The store does not hold the DNS service; the agent reads DNSServiceIPs.
	return true
}

func (s *Source) syncPolicy(k key, o any, exists bool) (bool, error) {
	ref := policy.PolicyRef{Kind: k.kind, Namespace: k.namespace, Name: k.name}
	if !exists {
		s.mu.Lock()
		delete(s.applied, ref)
		delete(s.invalid, ref)
		delete(s.inStore, ref)
		s.mu.Unlock()
		s.store.DeletePolicy(ref)
		if s.status != nil {
			s.status.forget(ref)
		}
		s.policiesChanged = true
		return true, nil
	}
	var gen int64
	var err error
	switch k.kind {
	case kindNetpol:
		np := o.(*networkingv1.NetworkPolicy)
		gen = np.Generation
		if s.seen(ref, gen) {
			return false, nil
		}
		err = s.store.UpsertNetworkPolicy(np)
	default:
		var upsert func() error
		var decodeErr error
		switch k.kind {
		case kindFWP:
			gen, upsert, decodeErr = decodeCustom(o, s.store.UpsertFirewallPolicy)
		case kindCFWP:
			gen, upsert, decodeErr = decodeCustom(o, s.store.UpsertClusterFirewallPolicy)
		case kindCNP:
			// Fields egressd does not know (a newer CRD) are dropped: such a
			// peer has no known field and fails closed (policy semantics).
			gen, upsert, decodeErr = decodeCustom(o, s.store.UpsertClusterNetworkPolicy)
		default:
			return false, fmt.Errorf("sync policy %s: unknown kind %q", ref, k.kind)
		}
		if decodeErr != nil {
			return false, s.reject(ref, 0, decodeErr)
		}
		if s.seen(ref, gen) {
			s.requestStatus(ref)
			return false, nil
		}
		err = upsert()
	}
	s.mu.Lock()
	s.applied[ref] = gen
	if err != nil {
		s.invalid[ref] = err
	} else {
		delete(s.invalid, ref)
		if k.kind != kindNetpol {
			s.inStore[ref] = gen
			s.policiesChanged = true
		}
	}
	s.mu.Unlock()
	s.requestStatus(ref)
	if err != nil {
		var ve *policy.ValidationError
		if !errors.As(err, &ve) {
			return false, err
		}
		s.log.Warn("invalid policy rejected; its previous version (if any) stays in force", "policy", ref.String(), "err", err)
		return false, nil
	}
	return true, nil
}

// decodeCustom decodes a custom-resource object o into the type store takes
// and returns its generation and the call that stores it.
func decodeCustom[T any, P interface {
	*T
	GetGeneration() int64
}](o any, store func(P) error) (int64, func() error, error) {
	p := P(new(T))
	if err := fromUnstructured(o, p); err != nil {
		return 0, nil, err
	}
	return p.GetGeneration(), func() error { return store(p) }, nil
}

// reject records a policy that could not even be decoded.
func (s *Source) reject(ref policy.PolicyRef, gen int64, err error) error {
	s.mu.Lock()
	s.applied[ref] = gen
	s.invalid[ref] = err
	s.mu.Unlock()
	s.requestStatus(ref)
	s.log.Warn("policy does not decode", "policy", ref.String(), "err", err)
	return nil
}

// seen reports whether the policy's generation is already in the Store (or was
// rejected at that generation): status-only updates change nothing.
func (s *Source) seen(ref policy.PolicyRef, gen int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.applied[ref]
	return ok && g == gen && gen != 0
}

func (s *Source) requestStatus(ref policy.PolicyRef) {
	if ref.Kind == kindNetpol {
		return
	}
	if s.status != nil {
		s.status.enqueue(ref)
	}
}

func fromUnstructured(o any, out any) error {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return fmt.Errorf("unexpected object %T", o)
	}
	return runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, false)
}

// gvrOf returns the resource of a policy kind.
func (s *Source) gvrOf(kind string) schema.GroupVersionResource {
	switch kind {
	case kindCFWP:
		return ClusterFirewallPolicies
	case kindCNP:
		_, gvr := s.cnpInformer()
		return gvr
	}
	return FirewallPolicies
}

// isNotFound reports a 404 from the API.
func isNotFound(err error) bool { return apierrors.IsNotFound(err) }

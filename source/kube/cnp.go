package kube

import (
	"context"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/egressd/egressd/policy"
)

// kindCNP is the queue kind of ClusterNetworkPolicies.
const kindCNP = policy.KindClusterNetworkPolicy

// cnpResource is the resource name of ClusterNetworkPolicy.
const cnpResource = "clusternetworkpolicies"

// cnpVersions are the versions of policy.networking.k8s.io egressd watches, in
// order of preference (identical schemas; network-policy-api v0.3.0 serves
// both).
var cnpVersions = []string{"v1alpha2", "v1beta1"}

// cnpProbeEvery is how often the source looks for the ClusterNetworkPolicy
// CRD while it is not installed, unless Options.CNPProbeInterval says.
const cnpProbeEvery = 30 * time.Second

func (s *Source) cnpProbeInterval() time.Duration {
	if s.opts.CNPProbeInterval > 0 {
		return s.opts.CNPProbeInterval
	}
	return cnpProbeEvery
}

// Condition types egressd writes on a ClusterNetworkPolicy: prefixed, so
// that another implementation's conditions (Accepted, Programmed, ...) on the
// same object are never overwritten (server-side apply of only these types).
const (
	CNPConditionAccepted   = "egressd.io/" + policy.ConditionAccepted
	CNPConditionInvalid    = "egressd.io/" + policy.ConditionInvalid
	CNPConditionProgrammed = "egressd.io/" + policy.ConditionProgrammed
)

// findCNP returns the served ClusterNetworkPolicy resource, or false when
// the CRD is not installed (or discovery failed: the caller tries again).
func (s *Source) findCNP() (schema.GroupVersionResource, bool, error) {
	for _, v := range cnpVersions {
		gv := schema.GroupVersion{Group: policy.CNPGroup, Version: v}
		list, err := s.kube.Discovery().ServerResourcesForGroupVersion(gv.String())
		if err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return schema.GroupVersionResource{}, false, err
		}
		for _, r := range list.APIResources {
			if r.Name == cnpResource {
				return gv.WithResource(cnpResource), true, nil
			}
		}
	}
	return schema.GroupVersionResource{}, false, nil
}

// setupCNP adds the ClusterNetworkPolicy informer (before the factory
// starts) when the CRD is served; it reports whether it did.
func (s *Source) setupCNP() bool {
	gvr, ok, err := s.findCNP()
	if err != nil {
		s.log.Warn("ClusterNetworkPolicy: API discovery failed; will look again", "err", err, "every", s.cnpProbeInterval())
		return false
	}
	if !ok {
		s.log.Info("ClusterNetworkPolicy CRD (policy.networking.k8s.io clusternetworkpolicies) is not installed: "+
			"ClusterNetworkPolicies are not enforced until it is; egressd does not install it (the Helm value "+
			"clusterNetworkPolicy.installCRD or deploy/crds ships it)", "every", s.cnpProbeInterval())
		return false
	}
	inf := s.dynFact.ForResource(gvr).Informer()
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { s.enqueue(kindCNP, o) },
		UpdateFunc: func(_, o any) { s.enqueue(kindCNP, o) },
		DeleteFunc: func(o any) { s.enqueue(kindCNP, o) },
	})
	if err != nil {
		s.log.Warn("ClusterNetworkPolicy: informer handler", "err", err)
		return false
	}
	s.mu.Lock()
	s.cnps, s.cnpGVR = inf, gvr
	s.mu.Unlock()
	s.handlersSynced = append(s.handlersSynced, reg.HasSynced)
	s.log.Info("watching ClusterNetworkPolicies", "resource", gvr.String())
	return true
}

// watchForCNP looks for the CRD every cnpProbeEvery until it appears, then
// starts its informer (whose initial list reaches the Store like any event).
func (s *Source) watchForCNP(ctx context.Context) {
	t := time.NewTicker(s.cnpProbeInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		gvr, ok, err := s.findCNP()
		if err != nil || !ok {
			continue
		}
		inf := s.dynFact.ForResource(gvr).Informer()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { s.enqueue(kindCNP, o) },
			UpdateFunc: func(_, o any) { s.enqueue(kindCNP, o) },
			DeleteFunc: func(o any) { s.enqueue(kindCNP, o) },
		}); err != nil {
			s.log.Warn("ClusterNetworkPolicy: informer handler", "err", err)
			return
		}
		s.mu.Lock()
		s.cnps, s.cnpGVR = inf, gvr
		s.mu.Unlock()
		s.dynFact.Start(ctx.Done())
		s.log.Info("ClusterNetworkPolicy CRD appeared: watching ClusterNetworkPolicies", "resource", gvr.String())
		return
	}
}

// cnpInformer returns the ClusterNetworkPolicy informer (nil while the CRD
// is not installed) and its resource.
func (s *Source) cnpInformer() (cache.SharedIndexInformer, schema.GroupVersionResource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cnps, s.cnpGVR
}

// cnpKeys lists the cached ClusterNetworkPolicies' keys (none while the CRD
// is not installed).
func (s *Source) cnpKeys() []string {
	if inf, _ := s.cnpInformer(); inf != nil {
		return inf.GetStore().ListKeys()
	}
	return nil
}

package policy

import (
	"sync"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// tunnelRank orders tunnel detection actions by strictness.
func tunnelRank(t TunnelDetection) int {
	switch t {
	case TunnelDetectionOff:
		return 1
	case TunnelDetectionAlert:
		return 2
	case TunnelDetectionBlock:
		return 3
	}
	return 0
}

// compileTunnelDetection validates spec.tunnelDetection.
func compileTunnelDetection(path *field.Path, t TunnelDetection) (TunnelDetection, field.ErrorList) {
	if t == "" || tunnelRank(t) > 0 {
		return t, nil
	}
	return "", field.ErrorList{field.NotSupported(path, t, []string{string(TunnelDetectionOff), string(TunnelDetectionAlert), string(TunnelDetectionBlock)})}
}

// TunnelSetting is the DNS tunnel detection action policies set for a
// workload, and the policy that set it.
type TunnelSetting struct {
	Action TunnelDetection
	Policy PolicyRef
}

// TunnelDetection returns the tunnel detection action that policies set for
// the workload; ok is false when none does (the node default applies).
// Enforce-mode policies only. Precedence follows the tiers: an Admin-tier
// setting wins over namespaced policies, which win over Baseline; within a
// tier the strictest action (Block > Alert > Off) wins, ties broken by the
// lowest priority then the policy's name. Results are cached per store
// generation, so the call is cheap on the query path.
func (e *Engine) TunnelDetection(w WorkloadKey) (TunnelSetting, bool) {
	s := e.store
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.tunnels == 0 {
		return TunnelSetting{}, false
	}
	c := &e.tunnelCache
	c.mu.Lock()
	if c.gen != s.gen || c.m == nil {
		c.gen, c.m = s.gen, map[WorkloadKey]TunnelSetting{}
	}
	ts, hit := c.m[w]
	c.mu.Unlock()
	if hit {
		return ts, ts.Action != ""
	}
	if wl := s.workloads[w]; wl != nil {
		ts = e.tunnelSettingLocked(wl, s.namespaceLocked(wl.Namespace))
	}
	c.mu.Lock()
	if c.gen == s.gen {
		c.m[w] = ts
	}
	c.mu.Unlock()
	return ts, ts.Action != ""
}

func (e *Engine) tunnelSettingLocked(w *Workload, ns *Namespace) TunnelSetting {
	var best [3]*compiledPolicy // admin, namespaced, baseline
	for _, p := range e.store.policies {
		if p.tunnel == "" || p.audit || !p.selects(w, ns) {
			continue
		}
		i := 1
		switch p.tier {
		case TierAdmin:
			i = 0
		case TierBaseline:
			i = 2
		}
		if b := best[i]; b == nil || tunnelBetter(p, b) {
			best[i] = p
		}
	}
	for _, p := range best {
		if p != nil {
			return TunnelSetting{Action: p.tunnel, Policy: p.ref}
		}
	}
	return TunnelSetting{}
}

// tunnelBetter reports whether p's setting takes precedence over b's (same tier).
func tunnelBetter(p, b *compiledPolicy) bool {
	if rp, rb := tunnelRank(p.tunnel), tunnelRank(b.tunnel); rp != rb {
		return rp > rb
	}
	if p.priority != b.priority {
		return p.priority < b.priority
	}
	return comparePolicyRefs(p.ref, b.ref) < 0
}

// tunnelCache memoizes TunnelDetection per store generation.
type tunnelCache struct {
	mu  sync.Mutex
	gen uint64
	m   map[WorkloadKey]TunnelSetting
}

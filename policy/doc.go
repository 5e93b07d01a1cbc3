// Package policy is egressd's single source of truth for what is allowed.
//
// It owns the API types of the egressd.io/v1alpha1 policy kinds
// (FirewallPolicy, ClusterFirewallPolicy), the adapter for Kubernetes
// NetworkPolicy, validation with field paths, the Store of workloads and
// policies, the reference evaluator (Engine.Decide, Engine.DecideLookup) and the
// compiler to a kernel-independent Plan. It knows nothing of the kernel, the DNS
// wire format or Kubernetes clients.
//
// Order for one connection, per direction (egress at the source, ingress at the
// destination): the Admin tier (ClusterFirewallPolicies by ascending priority,
// first matching rule of each policy; at equal priority Deny beats Allow beats
// Pass), then the namespaced tier (FirewallPolicy and NetworkPolicy: when any
// selects the workload for the direction, some Allow rule must match and no
// FirewallPolicy Deny rule may match), then the Baseline tier (only when no
// namespaced policy selected the workload), then the node default.
// +groupName=egressd.io
// +versionName=v1alpha1
package policy

package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// GroupName is the API group of the project's policy kinds.
const GroupName = "egressd.io"

// Version is the API version of the project's policy kinds.
const Version = "v1alpha1"

// APIVersion is "egressd.io/v1alpha1".
const APIVersion = GroupName + "/" + Version

// Kind names used in manifests and in verdict explanations.
const (
	KindFirewallPolicy        = "FirewallPolicy"
	KindClusterFirewallPolicy = "ClusterFirewallPolicy"
	KindNetworkPolicy         = "NetworkPolicy"
)

// Action is what a rule does with matching traffic.
type Action string

const (
	// ActionAllow allows the traffic (final for the direction in the Admin and
	// Baseline tiers).
	ActionAllow Action = "Allow"
	// ActionDeny drops the traffic.
	ActionDeny Action = "Deny"
	// ActionPass skips the rest of the Admin tier and hands the decision to the
	// namespaced tier. Only valid in the Admin tier.
	ActionPass Action = "Pass"
)

// Mode says whether a policy is enforced or only evaluated and reported.
type Mode string

const (
	// ModeEnforce enforces the policy (the default).
	ModeEnforce Mode = "Enforce"
	// ModeAudit evaluates the policy and reports what it would have done without
	// changing any verdict (a staged policy, a dry run).
	ModeAudit Mode = "Audit"
)

// Tier is the evaluation tier of a ClusterFirewallPolicy.
type Tier string

const (
	// TierAdmin is evaluated before every namespaced policy.
	TierAdmin Tier = "Admin"
	// TierBaseline is evaluated only when no namespaced policy selects the workload
	// for the direction.
	TierBaseline Tier = "Baseline"
	// TierNamespaced is the tier of FirewallPolicy and NetworkPolicy; it never
	// appears in a ClusterFirewallPolicy spec.
	TierNamespaced Tier = "Namespaced"
	// TierDefault names the node default that decides when no tier did.
	TierDefault Tier = "Default"
)

// LookupMode says whether lookups that no rule allows are blocked for workloads
// whose egress is restricted.
type LookupMode string

const (
	// LookupsObserve resolves names that no rule allows (the default); the
	// connection is still governed at L3.
	LookupsObserve LookupMode = "Observe"
	// LookupsEnforce blocks lookups of names that no Allow FQDN rule matches.
	LookupsEnforce LookupMode = "Enforce"
)

// Protocol is a transport protocol.
type Protocol string

const (
	ProtocolTCP  Protocol = "TCP"
	ProtocolUDP  Protocol = "UDP"
	ProtocolSCTP Protocol = "SCTP"
)

// Protocols lists the protocols in a fixed order.
var Protocols = [...]Protocol{ProtocolTCP, ProtocolUDP, ProtocolSCTP}

// Direction is ingress or egress, seen from the workload a policy selects.
type Direction string

const (
	Ingress Direction = "Ingress"
	Egress  Direction = "Egress"
)

// Subject selects the workloads a ClusterFirewallPolicy applies to.
//
// +kubebuilder:object:generate=true
type Subject struct {
	// NamespaceSelector selects namespaces by label; {} selects every namespace.
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`
	// PodSelector selects pods of those namespaces; omitted means every pod.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// PodsPeer selects pods by label, optionally in namespaces selected by label.
//
// +kubebuilder:object:generate=true
type PodsPeer struct {
	// PodSelector selects pods; {} selects every pod.
	PodSelector metav1.LabelSelector `json:"podSelector"`
	// NamespaceSelector selects the namespaces of the pods. Omitted means the
	// policy's own namespace for a FirewallPolicy and every namespace for a
	// ClusterFirewallPolicy.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// FQDNPeer selects destinations by DNS name; exactly one field is set.
//
// +kubebuilder:object:generate=true
type FQDNPeer struct {
	// MatchName is an exact name, e.g. api.github.com.
	// +optional
	MatchName string `json:"matchName,omitempty"`
	// MatchPattern is a wildcard pattern: "*" matches inside one label, a leading
	// "**." matches one or more labels, a bare "*" matches every name.
	// +optional
	MatchPattern string `json:"matchPattern,omitempty"`
}

// Peer is one side of a connection that a rule matches; exactly one of Pods,
// Namespaces, CIDR or FQDN is set (Except only with CIDR).
//
// +kubebuilder:object:generate=true
type Peer struct {
	// Pods selects pods by label.
	// +optional
	Pods *PodsPeer `json:"pods,omitempty"`
	// Namespaces selects every pod of the namespaces matching this label selector.
	// +optional
	Namespaces *metav1.LabelSelector `json:"namespaces,omitempty"`
	// CIDR is an IPv4 or IPv6 prefix, e.g. 10.0.0.0/8.
	// +optional
	CIDR string `json:"cidr,omitempty"`
	// Except lists prefixes inside CIDR that are not matched.
	// +optional
	Except []string `json:"except,omitempty"`
	// FQDN selects destinations by DNS name (egress only).
	// +optional
	FQDN *FQDNPeer `json:"fqdn,omitempty"`
}

// PortRule matches a destination port or port range and a protocol.
//
// +kubebuilder:object:generate=true
type PortRule struct {
	// Port is a number (1-65535) or the name of a container port of the
	// destination pod. Omitted matches every port of the protocol.
	// +optional
	Port *intstr.IntOrString `json:"port,omitempty"`
	// EndPort makes Port the start of a range [Port, EndPort]; Port must be a number.
	// +optional
	EndPort *int32 `json:"endPort,omitempty"`
	// Protocol is TCP (default), UDP or SCTP.
	// +optional
	Protocol Protocol `json:"protocol,omitempty"`
}

// Rule is one ingress or egress rule.
//
// +kubebuilder:object:generate=true
type Rule struct {
	// Name optionally names the rule in verdicts, logs and spans; otherwise the
	// rule is named by its position, e.g. "egress[0]".
	// +optional
	Name string `json:"name,omitempty"`
	// Action is Allow, Deny or Pass (Admin tier only).
	Action Action `json:"action"`
	// To lists the destinations of an egress rule; empty matches every destination.
	// +optional
	To []Peer `json:"to,omitempty"`
	// From lists the sources of an ingress rule; empty matches every source.
	// +optional
	From []Peer `json:"from,omitempty"`
	// Ports lists the destination ports; empty matches every port and protocol.
	// +optional
	Ports []PortRule `json:"ports,omitempty"`
}

// ClusterFirewallPolicySpec is the spec of a ClusterFirewallPolicy.
//
// +kubebuilder:object:generate=true
type ClusterFirewallPolicySpec struct {
	// Tier is Admin (before namespaced policies) or Baseline (after them).
	Tier Tier `json:"tier"`
	// Priority orders policies inside the tier, lower first (0-1000).
	Priority int32 `json:"priority"`
	// Mode is Enforce (default) or Audit.
	// +optional
	Mode Mode `json:"mode,omitempty"`
	// Subject selects the workloads the policy applies to.
	Subject Subject `json:"subject"`
	// Ingress rules, evaluated in order; first match wins.
	// +optional
	Ingress []Rule `json:"ingress,omitempty"`
	// Egress rules, evaluated in order; first match wins.
	// +optional
	Egress []Rule `json:"egress,omitempty"`
}

// Condition types written to policy status.
const (
	ConditionAccepted   = "Accepted"
	ConditionInvalid    = "Invalid"
	ConditionProgrammed = "Programmed"
)

// PolicyStatus is the observed state of a policy.
//
// +kubebuilder:object:generate=true
type PolicyStatus struct {
	// Conditions: Accepted, Invalid (with reason and field), Programmed.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ClusterFirewallPolicy is a cluster-scoped policy in the Admin or Baseline tier.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:object:generate=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:subresource:status
type ClusterFirewallPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterFirewallPolicySpec `json:"spec"`
	Status PolicyStatus              `json:"status,omitempty"`
}

// ClusterFirewallPolicyList is a list of ClusterFirewallPolicy.
//
// +kubebuilder:object:root=true
// +kubebuilder:object:generate=true
type ClusterFirewallPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterFirewallPolicy `json:"items"`
}

// FirewallPolicySpec is the spec of a FirewallPolicy.
//
// +kubebuilder:object:generate=true
type FirewallPolicySpec struct {
	// Mode is Enforce (default) or Audit.
	// +optional
	Mode Mode `json:"mode,omitempty"`
	// PodSelector selects the pods of the policy's namespace; {} selects all.
	PodSelector metav1.LabelSelector `json:"podSelector"`
	// Lookups is Observe (default) or Enforce: block lookups that no Allow FQDN
	// rule matches for the selected pods.
	// +optional
	Lookups LookupMode `json:"lookups,omitempty"`
	// Ingress rules. Present (even empty) isolates the pods for ingress.
	// +optional
	Ingress []Rule `json:"ingress"`
	// Egress rules. Present (even empty) isolates the pods for egress.
	// +optional
	Egress []Rule `json:"egress"`
}

// FirewallPolicy is a namespaced policy in the namespaced tier.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:object:generate=true
// +kubebuilder:subresource:status
type FirewallPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   FirewallPolicySpec `json:"spec"`
	Status PolicyStatus       `json:"status,omitempty"`
}

// FirewallPolicyList is a list of FirewallPolicy.
//
// +kubebuilder:object:root=true
// +kubebuilder:object:generate=true
type FirewallPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FirewallPolicy `json:"items"`
}

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
//
// +kubebuilder:validation:Enum=Allow;Deny;Pass
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
//
// +kubebuilder:validation:Enum=Enforce;Audit
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
//
// +kubebuilder:validation:Enum=Observe;Enforce
type LookupMode string

const (
	// LookupsObserve resolves names that no rule allows (the default); the
	// connection is still governed at L3.
	LookupsObserve LookupMode = "Observe"
	// LookupsEnforce blocks lookups of names that no Allow FQDN rule matches.
	LookupsEnforce LookupMode = "Enforce"
)

// TunnelDetection is the DNS tunnel detection action for the workloads a
// policy selects (docs/detection.md): Off, Alert (report dns.tunnel.suspected)
// or Block (Alert, plus the suspected registered domain is refused to the
// workload for the quarantine period).
//
// +kubebuilder:validation:Enum=Off;Alert;Block
type TunnelDetection string

const (
	// TunnelDetectionOff tracks nothing for the selected workloads.
	TunnelDetectionOff TunnelDetection = "Off"
	// TunnelDetectionAlert reports suspected tunnels.
	TunnelDetectionAlert TunnelDetection = "Alert"
	// TunnelDetectionBlock reports and quarantines suspected tunnels.
	TunnelDetectionBlock TunnelDetection = "Block"
)

// DNSBypassAction is what the kernel does with a workload's DNS that does not
// go to egressd (docs/policy.md, "DNS side doors").
//
// +kubebuilder:validation:Enum=Redirect;Drop;Allow
type DNSBypassAction string

const (
	// DNSBypassRedirect sends plain DNS (UDP and TCP port 53) for any other
	// resolver to egressd (nftables DNAT; the node default), and drops
	// encrypted DNS (DoT and DoQ on port 853, DoH to the known public
	// resolvers).
	DNSBypassRedirect DNSBypassAction = "Redirect"
	// DNSBypassDrop drops plain DNS for any other resolver instead, and
	// encrypted DNS like Redirect.
	DNSBypassDrop DNSBypassAction = "Drop"
	// DNSBypassAllow exempts the workloads: their DNS to other resolvers,
	// plain or encrypted, is neither redirected nor dropped (a namespace that
	// runs its own resolver).
	DNSBypassAllow DNSBypassAction = "Allow"
)

// DNSBypass is spec.dnsBypass of a ClusterFirewallPolicy: what the kernel
// does with the selected workloads' DNS that does not go to egressd.
//
// +kubebuilder:object:generate=true
type DNSBypass struct {
	// Action is Redirect (plain DNS to egressd, encrypted DNS dropped), Drop
	// (both dropped) or Allow (neither). Omitted: the node default
	// (egressd --dns-bypass, Redirect unless changed).
	// +optional
	Action DNSBypassAction `json:"action,omitempty"`
	// Resolvers are resolver addresses (CIDRs) the selected workloads may
	// reach directly, plain (port 53) and encrypted (853, DoH), whatever the
	// action.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	Resolvers []string `json:"resolvers,omitempty"`
}

// Protocol is a transport protocol.
//
// +kubebuilder:validation:Enum=TCP;UDP;SCTP
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
// +kubebuilder:validation:XValidation:rule="has(self.matchName) != has(self.matchPattern)",message="set exactly one of matchName or matchPattern"
// +kubebuilder:validation:XValidation:rule="!has(self.matchName) || !self.matchName.contains('*')",message="matchName is an exact name; use matchPattern for wildcards",fieldPath=".matchName"
type FQDNPeer struct {
	// MatchName is an exact name, e.g. api.github.com.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	MatchName string `json:"matchName,omitempty"`
	// MatchPattern is a wildcard pattern: "*" matches inside one label, a leading
	// "**." matches one or more labels, a bare "*" matches every name.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	MatchPattern string `json:"matchPattern,omitempty"`
}

// Peer is one side of a connection that a rule matches; exactly one of Pods,
// Namespaces, CIDR or FQDN is set (Except only with CIDR).
//
// +kubebuilder:object:generate=true
// +kubebuilder:validation:XValidation:rule="[has(self.pods), has(self.namespaces), has(self.cidr), has(self.fqdn)].filter(x, x).size() == 1",message="a peer sets exactly one of pods, namespaces, cidr or fqdn"
// +kubebuilder:validation:XValidation:rule="!has(self.except) || has(self.cidr)",message="except is only valid with cidr",fieldPath=".except"
type Peer struct {
	// Pods selects pods by label.
	// +optional
	Pods *PodsPeer `json:"pods,omitempty"`
	// Namespaces selects every pod of the namespaces matching this label selector.
	// +optional
	Namespaces *metav1.LabelSelector `json:"namespaces,omitempty"`
	// CIDR is an IPv4 or IPv6 prefix, e.g. 10.0.0.0/8.
	// +optional
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self) == cidr(self).masked()",message="must be a CIDR without host bits set, e.g. 10.0.0.0/8"
	CIDR string `json:"cidr,omitempty"`
	// Except lists prefixes inside CIDR that are not matched.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	Except []string `json:"except,omitempty"`
	// FQDN selects destinations by DNS name (egress only).
	// +optional
	FQDN *FQDNPeer `json:"fqdn,omitempty"`
}

// PortRule matches a destination port or port range and a protocol.
//
// +kubebuilder:object:generate=true
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || has(self.port)",message="endPort needs port",fieldPath=".endPort"
// +kubebuilder:validation:XValidation:rule="!has(self.endPort) || !has(self.port) || (type(self.port) == int && self.endPort >= self.port)",message="endPort needs a numeric port and must be >= port",fieldPath=".endPort"
// +kubebuilder:validation:XValidation:rule="!has(self.port) || type(self.port) != int || (self.port >= 1 && self.port <= 65535)",message="must be between 1 and 65535",fieldPath=".port"
type PortRule struct {
	// Port is a number (1-65535) or the name of a container port of the
	// destination pod. Omitted matches every port of the protocol.
	// +optional
	Port *intstr.IntOrString `json:"port,omitempty"`
	// EndPort makes Port the start of a range [Port, EndPort]; Port must be a number.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
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
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name,omitempty"`
	// Action is Allow, Deny or Pass (Admin tier only).
	// +required
	Action Action `json:"action"`
	// To lists the destinations of an egress rule; empty matches every destination.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	To []Peer `json:"to,omitempty"`
	// From lists the sources of an ingress rule; empty matches every source.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	From []Peer `json:"from,omitempty"`
	// Ports lists the destination ports; empty matches every port and protocol.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Ports []PortRule `json:"ports,omitempty"`
}

// ClusterFirewallPolicySpec is the spec of a ClusterFirewallPolicy.
//
// +kubebuilder:object:generate=true
// +kubebuilder:validation:XValidation:rule="self.tier == 'Admin' || ((!has(self.ingress) || self.ingress.all(r, r.action != 'Pass')) && (!has(self.egress) || self.egress.all(r, r.action != 'Pass')))",message="Pass is only allowed in the Admin tier"
// +kubebuilder:validation:XValidation:rule="!has(self.ingress) || self.ingress.all(r, !has(r.to))",message="an ingress rule lists its peers in from",fieldPath=".ingress"
// +kubebuilder:validation:XValidation:rule="!has(self.egress) || self.egress.all(r, !has(r.from))",message="an egress rule lists its peers in to",fieldPath=".egress"
// +kubebuilder:validation:XValidation:rule="!has(self.ingress) || self.ingress.all(r, !has(r.from) || r.from.all(p, !has(p.fqdn)))",message="fqdn peers are only valid in egress rules",fieldPath=".ingress"
type ClusterFirewallPolicySpec struct {
	// Tier is Admin (before namespaced policies) or Baseline (after them).
	// +required
	// +kubebuilder:validation:Enum=Admin;Baseline
	Tier Tier `json:"tier"`
	// Priority orders policies inside the tier, lower first (0-1000).
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Priority int32 `json:"priority"`
	// Mode is Enforce (default) or Audit.
	// +optional
	Mode Mode `json:"mode,omitempty"`
	// Subject selects the workloads the policy applies to.
	Subject Subject `json:"subject"`
	// TunnelDetection sets the DNS tunnel detection action (Off, Alert,
	// Block) of the selected workloads; unset leaves it to other policies and
	// the node default. An Admin-tier setting overrides namespaced policies;
	// a Baseline-tier one applies only where no namespaced policy sets it.
	// +optional
	TunnelDetection TunnelDetection `json:"tunnelDetection,omitempty"`
	// DNSBypass says what the kernel does with the selected workloads' DNS
	// that does not go to egressd (plain DNS to other resolvers, DoT, DoQ,
	// DoH); unset leaves it to other ClusterFirewallPolicies and the node
	// default. The first Admin-tier policy (by priority, then name) that sets
	// it decides, else the first Baseline one. Enforce mode only.
	// +optional
	DNSBypass *DNSBypass `json:"dnsBypass,omitempty"`
	// Ingress rules, evaluated in order; first match wins.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	Ingress []Rule `json:"ingress,omitempty"`
	// Egress rules, evaluated in order; first match wins.
	// +optional
	// +kubebuilder:validation:MaxItems=256
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
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Nodes reports, per node running egressd, the policy generation that node
	// has programmed into its kernel. Each agent writes only its own entry
	// (server-side apply with a per-node field manager); the Programmed
	// condition summarises them.
	// +optional
	// +listType=map
	// +listMapKey=nodeName
	Nodes []NodeStatus `json:"nodes,omitempty"`
}

// NodeStatus is one node's programming state of a policy.
//
// +kubebuilder:object:generate=true
type NodeStatus struct {
	// NodeName is the node the entry belongs to.
	// +required
	NodeName string `json:"nodeName"`
	// ObservedGeneration is the policy generation programmed on the node.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// LastProgrammedTime is when the node last programmed the policy.
	// +optional
	LastProgrammedTime metav1.Time `json:"lastProgrammedTime,omitempty"`
}

// ClusterFirewallPolicy is a cluster-scoped policy in the Admin or Baseline tier.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:object:generate=true
// +kubebuilder:resource:scope=Cluster,shortName=cfwp,categories=egressd
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Tier",type=string,JSONPath=`.spec.tier`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].message`,priority=1
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Invalid")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
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
// +kubebuilder:validation:XValidation:rule="(!has(self.ingress) || self.ingress.all(r, r.action != 'Pass')) && (!has(self.egress) || self.egress.all(r, r.action != 'Pass'))",message="Pass is only allowed in the Admin tier"
// +kubebuilder:validation:XValidation:rule="!has(self.ingress) || self.ingress.all(r, !has(r.to))",message="an ingress rule lists its peers in from",fieldPath=".ingress"
// +kubebuilder:validation:XValidation:rule="!has(self.egress) || self.egress.all(r, !has(r.from))",message="an egress rule lists its peers in to",fieldPath=".egress"
// +kubebuilder:validation:XValidation:rule="!has(self.ingress) || self.ingress.all(r, !has(r.from) || r.from.all(p, !has(p.fqdn)))",message="fqdn peers are only valid in egress rules",fieldPath=".ingress"
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
	// TunnelDetection sets the DNS tunnel detection action (Off, Alert,
	// Block) of the selected pods; unset leaves it to other policies and the
	// node default. When several policies set it, the strictest applies.
	// +optional
	TunnelDetection TunnelDetection `json:"tunnelDetection,omitempty"`
	// Ingress rules. Present (even empty) isolates the pods for ingress.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	Ingress []Rule `json:"ingress"`
	// Egress rules. Present (even empty) isolates the pods for egress.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	Egress []Rule `json:"egress"`
}

// FirewallPolicy is a namespaced policy in the namespaced tier.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:object:generate=true
// +kubebuilder:resource:shortName=fwp,categories=egressd
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Lookups",type=string,JSONPath=`.spec.lookups`
// +kubebuilder:printcolumn:name="Programmed",type=string,JSONPath=`.status.conditions[?(@.type=="Programmed")].message`,priority=1
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Invalid")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
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

package policy_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/policy/manifest"
)

// TestValidationRejectsWithFieldPath decodes invalid policies and checks that
// each is rejected with the field path and the reason, and that nothing panics.
func TestValidationRejectsWithFieldPath(t *testing.T) {
	const cfp = "apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: c}\nspec:\n"
	const fp = "apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: f, namespace: x}\nspec:\n"
	const np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n, namespace: x}\nspec:\n"
	const subj = "  tier: Admin\n  priority: 1\n  subject: {namespaceSelector: {}}\n"
	cases := []struct {
		name, yaml, field, reason string
	}{
		{"bad label selector operator", fp + "  podSelector: {matchExpressions: [{key: a, operator: Like, values: [b]}]}\n", "spec.podSelector.matchExpressions[0].operator", "not a valid selector operator"},
		{"bad label value in selector", cfp + "  tier: Admin\n  priority: 1\n  subject: {namespaceSelector: {matchLabels: {a: 'b c'}}}\n", "spec.subject.namespaceSelector.matchLabels", "a valid label must be"},
		{"Exists with values", fp + "  podSelector: {}\n  ingress: [{action: Allow, from: [{pods: {podSelector: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}}}]}]\n", "spec.ingress[0].from[0].pods.podSelector.matchExpressions[0].values", "may not be specified when `operator` is 'Exists'"},
		{"bad CIDR", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{cidr: 10.0.0.0/33}]}]\n", "spec.egress[0].to[0].cidr", "not a CIDR"},
		{"CIDR with host bits", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{cidr: 10.0.0.1/8}]}]\n", "spec.egress[0].to[0].cidr", "host bits set"},
		{"except outside CIDR", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{cidr: 10.0.0.0/16, except: [10.1.0.0/24]}]}]\n", "spec.egress[0].to[0].except[0]", "must be inside cidr"},
		{"except wider than CIDR", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{cidr: 10.0.0.0/16, except: [10.0.0.0/8]}]}]\n", "spec.egress[0].to[0].except[0]", "must be inside cidr"},
		{"except of the other family", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{cidr: 10.0.0.0/8, except: ['fd00::/64']}]}]\n", "spec.egress[0].to[0].except[0]", "address family"},
		{"except without cidr", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{except: [10.0.0.0/8], namespaces: {}}]}]\n", "spec.egress[0].to[0].except", "only valid with cidr"},
		{"ipBlock except outside CIDR", np + "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/16, except: [192.168.0.0/24]}}]}]\n", "spec.ingress[0].from[0].ipBlock.except[0]", "must be inside cidr"},
		{"port out of range", fp + "  podSelector: {}\n  ingress: [{action: Allow, ports: [{port: 70000}]}]\n", "spec.ingress[0].ports[0].port", "between 1 and 65535"},
		{"port zero", fp + "  podSelector: {}\n  ingress: [{action: Allow, ports: [{port: 0}]}]\n", "spec.ingress[0].ports[0].port", "between 1 and 65535"},
		{"endPort below port", fp + "  podSelector: {}\n  ingress: [{action: Allow, ports: [{port: 90, endPort: 80}]}]\n", "spec.ingress[0].ports[0].endPort", "between port"},
		{"endPort beyond 65535", np + "  podSelector: {}\n  ingress: [{ports: [{port: 90, endPort: 65536}]}]\n", "spec.ingress[0].ports[0].endPort", "between port"},
		{"endPort without port", fp + "  podSelector: {}\n  ingress: [{action: Allow, ports: [{endPort: 80}]}]\n", "spec.ingress[0].ports[0].endPort", "needs port"},
		{"endPort with named port", fp + "  podSelector: {}\n  ingress: [{action: Allow, ports: [{port: http, endPort: 80}]}]\n", "spec.ingress[0].ports[0].endPort", "named"},
		{"endPort with named port in NetworkPolicy", np + "  podSelector: {}\n  ingress: [{ports: [{port: http, endPort: 80}]}]\n", "spec.ingress[0].ports[0].endPort", "named"},
		{"bad port name", fp + "  podSelector: {}\n  ingress: [{action: Allow, ports: [{port: Not_A_Name}]}]\n", "spec.ingress[0].ports[0].port", ""},
		{"unknown protocol", fp + "  podSelector: {}\n  ingress: [{action: Allow, ports: [{port: 80, protocol: ICMP}]}]\n", "spec.ingress[0].ports[0].protocol", "supported values"},
		{"lower-case protocol", np + "  podSelector: {}\n  ingress: [{ports: [{port: 80, protocol: tcp}]}]\n", "spec.ingress[0].ports[0].protocol", "supported values"},
		{"illegal pattern characters", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{fqdn: {matchPattern: 'a b.com'}}]}]\n", "spec.egress[0].to[0].fqdn.matchPattern", "illegal character"},
		{"double star inside a pattern", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{fqdn: {matchPattern: 'a.**.com'}}]}]\n", "spec.egress[0].to[0].fqdn.matchPattern", "first label"},
		{"wildcard in matchName", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{fqdn: {matchName: '*.com'}}]}]\n", "spec.egress[0].to[0].fqdn.matchName", "use matchPattern"},
		{"fqdn with both fields", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{fqdn: {matchName: a.com, matchPattern: '*.com'}}]}]\n", "spec.egress[0].to[0].fqdn", "exactly one"},
		{"empty fqdn", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{fqdn: {}}]}]\n", "spec.egress[0].to[0].fqdn", "exactly one"},
		{"Pass outside the Admin tier", cfp + "  tier: Baseline\n  priority: 1\n  subject: {namespaceSelector: {}}\n  egress: [{action: Pass}]\n", "spec.egress[0].action", "only allowed in the Admin tier"},
		{"Pass in a FirewallPolicy", fp + "  podSelector: {}\n  egress: [{action: Pass}]\n", "spec.egress[0].action", "only allowed in the Admin tier"},
		{"missing action", fp + "  podSelector: {}\n  egress: [{to: [{namespaces: {}}]}]\n", "spec.egress[0].action", "Required"},
		{"unknown action", fp + "  podSelector: {}\n  egress: [{action: Drop}]\n", "spec.egress[0].action", "supported values"},
		{"fqdn in ingress", fp + "  podSelector: {}\n  ingress: [{action: Allow, from: [{fqdn: {matchName: a.com}}]}]\n", "spec.ingress[0].from[0].fqdn", "only valid in egress"},
		{"peer with two kinds", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{cidr: 10.0.0.0/8, namespaces: {}}]}]\n", "spec.egress[0].to[0]", "exactly one"},
		{"peer with no kind", fp + "  podSelector: {}\n  egress: [{action: Allow, to: [{}]}]\n", "spec.egress[0].to[0]", "exactly one"},
		{"ipBlock with a selector", np + "  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]\n", "spec.ingress[0].from[0]", "may not be combined"},
		{"empty NetworkPolicy peer", np + "  podSelector: {}\n  ingress: [{from: [{}]}]\n", "spec.ingress[0].from[0]", "must specify a peer"},
		{"to in an ingress rule", fp + "  podSelector: {}\n  ingress: [{action: Allow, to: [{namespaces: {}}]}]\n", "spec.ingress[0].to", "from"},
		{"from in an egress rule", fp + "  podSelector: {}\n  egress: [{action: Allow, from: [{namespaces: {}}]}]\n", "spec.egress[0].from", "to"},
		{"bad mode", fp + "  podSelector: {}\n  mode: DryRun\n", "spec.mode", "supported values"},
		{"bad lookups mode", fp + "  podSelector: {}\n  lookups: Block\n", "spec.lookups", "supported values"},
		{"bad tunnel detection", fp + "  podSelector: {}\n  tunnelDetection: Quarantine\n", "spec.tunnelDetection", "supported values"},
		{"bad cluster tunnel detection", cfp + subj + "  tunnelDetection: on\n", "spec.tunnelDetection", "supported values"},
		{"bad tier", cfp + "  tier: Namespaced\n  priority: 1\n  subject: {namespaceSelector: {}}\n", "spec.tier", "supported values"},
		{"missing tier", cfp + "  priority: 1\n  subject: {namespaceSelector: {}}\n", "spec.tier", "Required"},
		{"negative priority", cfp + "  tier: Admin\n  priority: -1\n  subject: {namespaceSelector: {}}\n", "spec.priority", "between 0 and 1000"},
		{"priority too high", cfp + "  tier: Admin\n  priority: 1001\n  subject: {namespaceSelector: {}}\n", "spec.priority", "between 0 and 1000"},
		{"bad rule name", cfp + subj + "  egress: [{name: Bad_Name, action: Deny}]\n", "spec.egress[0].name", ""},
		{"duplicate rule name", cfp + subj + "  egress: [{name: r, action: Deny}, {name: r, action: Allow}]\n", "spec.egress[1].name", "Duplicate"},
		{"bad policyTypes", np + "  podSelector: {}\n  policyTypes: [Sideways]\n", "spec.policyTypes[0]", "supported values"},
		{"missing policy name", "apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {namespace: x}\nspec: {podSelector: {}}\n", "metadata.name", "Required"},
		{"bad policy name", "apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: Bad_Name}\nspec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}}\n", "metadata.name", ""},
		{"namespaced policy without namespace", "apiVersion: egressd.io/v1alpha1\nkind: FirewallPolicy\nmetadata: {name: f}\nspec: {podSelector: {}}\n", "metadata.namespace", "Required"},
		{"cluster policy with a namespace", "apiVersion: egressd.io/v1alpha1\nkind: ClusterFirewallPolicy\nmetadata: {name: c, namespace: x}\nspec: {tier: Admin, priority: 1, subject: {namespaceSelector: {}}}\n", "metadata.namespace", "no namespace"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// File mode rejects it with the field path, at decoding (the
			// CRD schema) or at validation.
			if err := fileModeError(c.yaml); !strings.Contains(err, c.field+":") {
				t.Errorf("file mode: no problem at %s: %s", c.field, err)
			}
			// The policy package's own validation (what the store enforces
			// whatever the source) rejects it too.
			objs := []manifest.Object{decodeTyped(t, c.yaml)}
			err := objs[0].Validate()
			var ve *policy.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want a *policy.ValidationError, got %v", err)
			}
			found := false
			for _, fe := range ve.Errs {
				if fe.Field == c.field && strings.Contains(fe.Error(), c.reason) {
					found = true
				}
			}
			if !found {
				t.Errorf("no error at %s containing %q: %v", c.field, c.reason, err)
			}
			if !strings.Contains(err.Error(), objs[0].Ref().String()) {
				t.Errorf("error does not name the policy %s: %v", objs[0].Ref(), err)
			}
			// The store rejects it too and keeps the previous version.
			s := policy.NewStore()
			if err := objs[0].Apply(s); err == nil || len(s.Policies()) != 0 {
				t.Errorf("store accepted an invalid policy: %v", err)
			}
		})
	}
}

// decodeTyped decodes one policy document straight into its API type,
// without the file-mode schema check, for the policy package's validation.
func decodeTyped(t *testing.T, doc string) manifest.Object {
	t.Helper()
	var tm struct{ APIVersion, Kind string }
	if err := manifest.Unmarshal([]byte(doc), &tm, false); err != nil {
		t.Fatal(err)
	}
	var o manifest.Object
	var into any
	switch tm.Kind {
	case policy.KindFirewallPolicy:
		o.FirewallPolicy = &policy.FirewallPolicy{}
		into = o.FirewallPolicy
	case policy.KindClusterFirewallPolicy:
		o.ClusterFirewallPolicy = &policy.ClusterFirewallPolicy{}
		into = o.ClusterFirewallPolicy
	case policy.KindNetworkPolicy:
		o.NetworkPolicy = &networkingv1.NetworkPolicy{}
		into = o.NetworkPolicy
	default:
		t.Fatalf("kind %q", tm.Kind)
	}
	if err := manifest.Unmarshal([]byte(doc), into, true); err != nil {
		t.Fatal(err)
	}
	return o
}

// fileModeError is every problem file mode finds in doc, decoding and
// validating it.
func fileModeError(doc string) string {
	objs, err := manifest.Decode("case", strings.NewReader(doc))
	msgs := []string{}
	if err != nil {
		msgs = append(msgs, err.Error())
	}
	for i := range objs {
		if err := objs[i].Validate(); err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	return strings.Join(msgs, "\n")
}

// TestValidationReportsEveryProblem checks that one policy's problems are all
// listed, each with its own path.
func TestValidationReportsEveryProblem(t *testing.T) {
	objs := []manifest.Object{decodeTyped(t, `
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: many}
spec:
  tier: Baseline
  priority: 5000
  mode: Later
  subject: {namespaceSelector: {}}
  ingress: [{action: Pass, from: [{fqdn: {matchName: a.com}}]}]
  egress: [{action: Allow, to: [{cidr: nope}], ports: [{port: 1, endPort: 0}]}]`)}
	var ve *policy.ValidationError
	if err := objs[0].Validate(); !errors.As(err, &ve) {
		t.Fatalf("got %v", err)
	}
	want := []string{"spec.priority", "spec.mode", "spec.ingress[0].action", "spec.ingress[0].from[0].fqdn", "spec.egress[0].to[0].cidr", "spec.egress[0].ports[0].endPort"}
	got := map[string]bool{}
	for _, fe := range ve.Errs {
		got[fe.Field] = true
	}
	for _, f := range want {
		if !got[f] {
			t.Errorf("missing %s in %v", f, ve)
		}
	}
}

// TestValidPoliciesAreAccepted: the design example and valid edge cases.
func TestValidPoliciesAreAccepted(t *testing.T) {
	objs, err := manifest.DecodePath("testdata/design-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	objs2, err := manifest.Decode("edge", strings.NewReader(`
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: edges}
spec:
  tier: Admin
  priority: 1000
  subject: {namespaceSelector: {}}
  egress:
  - action: Pass
    to: [{cidr: "::/0", except: ["fd00::/8"]}, {fqdn: {matchPattern: "*"}}, {fqdn: {matchPattern: "**.a.example"}}]
    ports: [{port: 1, endPort: 65535, protocol: SCTP}, {port: 65535}, {protocol: UDP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: edge, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress: [{}]
  egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.0.0.0/8, 10.1.0.0/16]}}], ports: [{port: serve-80-tcp}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range append(objs, objs2...) {
		if err := o.Validate(); err != nil {
			t.Errorf("%s: %v", o.Source, err)
		}
	}
}

// TestSubtractPrefixes checks the CIDR-minus-except arithmetic.
func TestSubtractPrefixes(t *testing.T) {
	cases := []struct {
		base   string
		except []string
		want   string
	}{
		{"10.0.0.0/30", []string{"10.0.0.1/32"}, "[10.0.0.0/32 10.0.0.2/31]"},
		{"10.0.0.0/8", []string{"10.0.0.0/8"}, "[]"},
		{"10.0.0.0/24", []string{"10.0.0.0/25", "10.0.0.128/25"}, "[]"},
		{"10.0.0.0/24", []string{"192.168.0.0/16"}, "[10.0.0.0/24]"},
		{"fd00::/126", []string{"fd00::3/128", "fd00::/128"}, "[fd00::1/128 fd00::2/128]"},
	}
	for _, c := range cases {
		var ex []netipPrefix
		for _, e := range c.except {
			ex = append(ex, mustPrefix(e))
		}
		got := policy.SubtractPrefixes(mustPrefix(c.base), ex)
		if s := fmtPrefixes(got); s != c.want {
			t.Errorf("%s - %v = %s, want %s", c.base, c.except, s, c.want)
		}
	}
}

type netipPrefix = netip.Prefix

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func fmtPrefixes(ps []netip.Prefix) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return "[" + strings.Join(out, " ") + "]"
}

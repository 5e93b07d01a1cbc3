package attack

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// rebind2Zone: a name of the attacker answering both the metadata service
// and loopback, one answering a Service address of the cluster CIDR, one
// answering an address the operator excepted, and the cluster's own
// kubernetes Service name.
const rebind2Zone = `both.attacker.test. 60 IN A 169.254.169.254
both.attacker.test. 60 IN A 127.0.0.1
svc.attacker.test. 60 IN A 10.96.0.5
lab.attacker.test. 60 IN A 169.254.77.7
kubernetes.default.svc.cluster.local. 60 IN A 10.96.0.1
`

const rebind2Policies = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: allow-attacker, namespace: builds}
spec:
  podSelector: {}
  egress:
  - name: attacker
    action: Allow
    to:
    - fqdn: {matchPattern: "*.attacker.test"}
    - fqdn: {matchPattern: "**.cluster.local"}
    ports: [{port: 443, protocol: TCP}]
`

// TestRebindingDropped replays issue 17 item 4 with the agent's flags: a name
// answering 169.254.169.254 and 127.0.0.1 gets NODATA with EDE 15, neither
// address reaches a set, the dns.rebinding.blocked event lists both and
// egressd_dns_rebinding_blocked_total counts them — on the first query and
// on a cache hit; --cluster-cidr drops a Service address from an external
// name but not from the cluster's own name; --rebind-allow keeps an excepted
// address.
func TestRebindingDropped(t *testing.T) {
	w := New(t, Config{Zone: rebind2Zone, Policies: rebind2Policies})
	a := w.StartAgent(AgentOptions{Extra: []string{"--cluster-cidr", "10.96.0.0/12", "--rebind-allow", "169.254.77.0/24"}})
	pod := w.Pods[0]
	for i := 0; i < 2; i++ { // upstream answer, then cache hit
		r := w.Ask(pod, "udp", "both.attacker.test", dns.TypeA)
		var ede string
		if e := EDE(r); e != nil {
			ede = fmt.Sprintf("%d %q", e.InfoCode, e.ExtraText)
		}
		t.Logf("both.attacker.test #%d: %s answer %v EDE %s", i, Rcode(r), AnswerAddrs(r), ede)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("#%d: %s %v, want NOERROR without records (NODATA)", i, Rcode(r), r.Answer)
		}
		if e := EDE(r); e == nil || e.InfoCode != dns.ExtendedErrorCodeBlocked || !strings.Contains(e.ExtraText, "rebinding") {
			t.Errorf("#%d: EDE %s, want 15 Blocked (rebinding)", i, ede)
		}
	}
	for _, bad := range []string{"169.254.169.254", "127.0.0.1"} {
		if sets := w.FQDNSetsWith(netip.MustParseAddr(bad)); len(sets) != 0 {
			t.Errorf("%s in FQDN sets %v", bad, sets)
		}
	}
	line := a.WaitAudit(AuditEvent("dns.rebinding.blocked", "both.attacker.test"))
	if line == nil {
		t.Fatal("no dns.rebinding.blocked audit event")
	}
	attrs, _ := line["attrs"].(map[string]any)
	dropped := fmt.Sprint(attrs["egressd.rebinding.dropped"])
	if !strings.Contains(dropped, "169.254.169.254 (link-local)") || !strings.Contains(dropped, "127.0.0.1 (loopback)") ||
		line["workload"] != DefaultPod || line["reason"] != "rebinding-link-local" {
		t.Errorf("audit event %v", line)
	}
	n := 0
	for _, l := range a.AuditLines() {
		if AuditEvent("dns.rebinding.blocked", "both.attacker.test")(l) {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d dns.rebinding.blocked events for both.attacker.test, want 2 (miss and cache hit)", n)
	}
	if ll, lo := a.Metric("egressd_dns_rebinding_blocked_total", `range="link-local"`), a.Metric("egressd_dns_rebinding_blocked_total", `range="loopback"`); ll != 2 || lo != 2 {
		t.Errorf("egressd_dns_rebinding_blocked_total link-local %v loopback %v, want 2 and 2", ll, lo)
	}

	svc := netip.MustParseAddr("10.96.0.5")
	if r := w.Ask(pod, "udp", "svc.attacker.test", dns.TypeA); slices.Contains(AnswerAddrs(r), svc) || len(w.FQDNSetsWith(svc)) != 0 {
		t.Errorf("svc.attacker.test: %v answered or in sets %v (--cluster-cidr)", AnswerAddrs(r), w.FQDNSetsWith(svc))
	}
	if a.Metric("egressd_dns_rebinding_blocked_total", `range="cluster"`) != 1 {
		t.Errorf("cluster range not counted")
	}
	kube := netip.MustParseAddr("10.96.0.1")
	if r := w.Ask(pod, "udp", "kubernetes.default.svc.cluster.local", dns.TypeA); !slices.Contains(AnswerAddrs(r), kube) {
		t.Errorf("kubernetes.default.svc.cluster.local: %s %v, want the Service address kept", Rcode(r), AnswerAddrs(r))
	}
	lab := netip.MustParseAddr("169.254.77.7")
	if r := w.Ask(pod, "udp", "lab.attacker.test", dns.TypeA); !slices.Contains(AnswerAddrs(r), lab) || len(w.FQDNSetsWith(lab)) != 1 {
		t.Errorf("lab.attacker.test: %v answered, sets %v; want kept (--rebind-allow)", AnswerAddrs(r), w.FQDNSetsWith(lab))
	}
}

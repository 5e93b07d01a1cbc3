package attack

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/netmodel"
)

// Issue 17 item 3 against the real agent: a policy or workloads file cut to 0
// bytes, or mid-document, while a pod is restricted keeps its last good
// content in force (the lookup stays blocked, the kernel rules do not move),
// and says so in /status, /metrics, the audit log and the log, once; restored,
// the error clears. Removing the file is how its policies are removed. At
// start, an empty file stops the agent (fail closed).

// restrictedPolicies: the Admin deny of *.minepool.test, and a FirewallPolicy
// that restricts builds/runner-0 to *.world.test on port 80 (per-pod rules in
// the kernel).
const restrictedPolicies = denyMiningPolicies + `---
apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: only-world, namespace: builds}
spec:
  podSelector: {}
  lookups: Enforce
  egress:
  - name: world
    action: Allow
    to:
    - fqdn: {matchPattern: "*.world.test"}
    ports: [{port: 80, protocol: TCP}]
`

// kernelRules is what the agent programmed: every rule of table inet egressd
// (with its handle) and every set with its elements, except the FQDN sets'
// elements (answers expire on their own).
func kernelRules(t *testing.T, w *World) string {
	t.Helper()
	out, err := w.Node.Exec(t.Context(), "", "nft", "-j", "list", "table", "inet", "egressd")
	if err != nil {
		t.Fatalf("nft list table: %v\n%s", err, out)
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, obj := range doc.Nftables {
		if r, ok := obj["rule"]; ok {
			lines = append(lines, "rule "+string(r))
		}
	}
	for name, s := range w.KernelSets() {
		if strings.HasPrefix(name, "fq_") {
			lines = append(lines, "set "+name)
			continue
		}
		var els []string
		for _, e := range s.Elems {
			els = append(els, strings.Join(e, " . "))
		}
		slices.Sort(els)
		lines = append(lines, "set "+name+" "+strings.Join(els, ","))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// reload is /status sync.reload.
func reload(a *Agent) map[string]any {
	sync, _ := a.Status()["sync"].(map[string]any)
	r, _ := sync["reload"].(map[string]any)
	return r
}

// waitReload polls /status until sync.reload.ok is ok (20 s at most).
func waitReload(t *testing.T, a *Agent, ok bool) map[string]any {
	t.Helper()
	for range 200 {
		if r := reload(a); r != nil && r["ok"] == ok {
			return r
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("/status sync.reload.ok never became %v: %v", ok, reload(a))
	return nil
}

func count(s, sub string) int { return strings.Count(s, sub) }

func TestPartialFileKeepsLastGood(t *testing.T) {
	for _, tc := range []struct {
		file, cut, kind string
	}{
		{"policies.yaml", "", "empty"},
		{"policies.yaml", strings.TrimSuffix(restrictedPolicies, "\n    - fqdn: {matchPattern: \"*.world.test\"}\n    ports: [{port: 80, protocol: TCP}]\n") + "\n", "undecodable"},
		{"workloads.yaml", "", "empty"},
		{"workloads.yaml", "cut", "undecodable"}, // the generated file cut mid-line, below
	} {
		t.Run(tc.file+"/"+tc.kind, func(t *testing.T) {
			w := New(t, Config{Zone: unknownZone, Policies: restrictedPolicies})
			a := w.StartAgent(AgentOptions{Extra: []string{"--reload-interval", "200ms"}})
			pod := w.Pods[0]
			if r := w.Ask(pod, "udp", "ok.world.test", dns.TypeA); r.Rcode != dns.RcodeSuccess {
				t.Fatalf("ok.world.test before the cut: %s", Rcode(r))
			}
			if r := w.Ask(pod, "udp", "pool.minepool.test", dns.TypeA); r.Rcode != dns.RcodeNameError {
				t.Fatalf("pool.minepool.test before the cut: %s, want NXDOMAIN", Rcode(r))
			}
			sync0, _ := a.Status()["sync"].(map[string]any)
			rules := kernelRules(t, w)
			errs0 := a.Metric("egressd_policy_reload_errors_total")

			path := filepath.Join(w.Dir, tc.file)
			good, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			cut := tc.cut
			if cut == "cut" {
				cut = string(good[:len(good)-6])
			}
			w.WriteFile(tc.file, cut)
			r := waitReload(t, a, false)
			resp := w.Ask(pod, "udp", "pool.minepool.test", dns.TypeA)
			sync1, _ := a.Status()["sync"].(map[string]any)
			t.Logf("%s cut to %d bytes: /status sync.reload %v; policies %v→%v workloads %v→%v; pool.minepool.test %s %v",
				tc.file, len(cut), r, sync0["policies"], sync1["policies"], sync0["workloads"], sync1["workloads"], Rcode(resp), AnswerAddrs(resp))
			if resp.Rcode != dns.RcodeNameError || len(resp.Answer) != 0 {
				t.Errorf("pool.minepool.test %s %v after the cut, want NXDOMAIN (last good content in force)", Rcode(resp), AnswerAddrs(resp))
			}
			if sync1["policies"] != sync0["policies"] || sync1["workloads"] != sync0["workloads"] {
				t.Errorf("store changed: policies %v→%v workloads %v→%v", sync0["policies"], sync1["policies"], sync0["workloads"], sync1["workloads"])
			}
			if le, _ := r["lastError"].(string); r["file"] != path || !strings.Contains(le, tc.kind) || r["since"] == nil {
				t.Errorf("/status sync.reload %v: want lastError (%s), file %s and since", r, tc.kind, path)
			}
			if after := kernelRules(t, w); after != rules {
				t.Errorf("kernel rules changed after the cut:\nbefore:\n%s\nafter:\n%s", rules, after)
			}
			if got := a.Metric("egressd_policy_reload_errors_total"); got != errs0+1 {
				t.Errorf("egressd_policy_reload_errors_total %v, want %v", got, errs0+1)
			}
			if got := a.Metric("egressd_policy_reload_ok"); got != 0 {
				t.Errorf("egressd_policy_reload_ok %v, want 0", got)
			}
			ev := a.WaitAudit(func(l map[string]any) bool { return l["event"] == "policy.reload.failed" })
			if attrs, _ := ev["attrs"].(map[string]any); ev == nil || ev["reason"] != tc.kind || attrs["file.path"] != path {
				t.Errorf("audit policy.reload.failed: %v", ev)
			}
			// Five more polls of an unchanged file: still one log line.
			time.Sleep(5 * 200 * time.Millisecond)
			if n := count(a.Log(), "policy source file not taken"); n != 1 {
				t.Errorf("%d ERROR lines for one problem, want 1:\n%s", n, netmodel.Tail(a.Log(), 3000))
			}

			w.WriteFile(tc.file, string(good))
			r = waitReload(t, a, true)
			if r["lastError"] != nil {
				t.Errorf("restored: /status sync.reload %v still has lastError", r)
			}
			if got := a.Metric("egressd_policy_reload_ok"); got != 1 {
				t.Errorf("restored: egressd_policy_reload_ok %v", got)
			}
			if a.WaitAudit(func(l map[string]any) bool { return l["event"] == "policy.reload.recovered" }) == nil {
				t.Error("restored: no policy.reload.recovered event")
			}
			if r := w.Ask(pod, "udp", "pool.minepool.test", dns.TypeA); r.Rcode != dns.RcodeNameError {
				t.Errorf("restored: pool.minepool.test %s", Rcode(r))
			}
			if r := w.Ask(pod, "udp", "ok.world.test", dns.TypeA); r.Rcode != dns.RcodeSuccess {
				t.Errorf("restored: ok.world.test %s", Rcode(r))
			}
		})
	}
}

// TestRemovedPolicyFileRemovesItsPolicies: removing the file is the
// operator's way to remove its policies; it is not an error.
func TestRemovedPolicyFileRemovesItsPolicies(t *testing.T) {
	w := New(t, Config{Zone: unknownZone, Policies: denyMiningPolicies})
	a := w.StartAgent(AgentOptions{Extra: []string{"--reload-interval", "200ms"}})
	if r := w.Ask(w.Pods[0], "udp", "pool.minepool.test", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("before: pool.minepool.test %s", Rcode(r))
	}
	if err := os.Remove(w.PoliciesPath()); err != nil {
		t.Fatal(err)
	}
	var sync map[string]any
	for range 200 {
		if sync, _ = a.Status()["sync"].(map[string]any); sync["policies"] == 0.0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := w.Ask(w.Pods[0], "udp", "pool.minepool.test", dns.TypeA)
	t.Logf("policies file removed: /status sync %v; pool.minepool.test %s %v", sync, Rcode(r), AnswerAddrs(r))
	if sync["policies"] != 0.0 {
		t.Fatalf("policies %v after the file was removed, want 0", sync["policies"])
	}
	if rl, _ := sync["reload"].(map[string]any); rl["ok"] != true {
		t.Errorf("a removal is not a reload error: %v", rl)
	}
	if r.Rcode != dns.RcodeSuccess {
		t.Errorf("pool.minepool.test %s with its policy removed, want it resolved", Rcode(r))
	}
}

// TestStartRefusedOnEmptyPolicyFile: with no last good content, an empty
// policy file stops the agent before it enforces anything (fail closed).
func TestStartRefusedOnEmptyPolicyFile(t *testing.T) {
	w := New(t, Config{Zone: unknownZone, Policies: denyMiningPolicies})
	w.WritePolicies("")
	a := w.StartAgent(AgentOptions{NoWait: true})
	select {
	case <-a.Exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the agent runs on an empty policy file:\n%s", a.Log())
	}
	t.Logf("exit %v: %s", a.Cmd.ProcessState, netmodel.Tail(a.Log(), 400))
	if a.Cmd.ProcessState.ExitCode() != 1 || !strings.Contains(a.Log(), "not starting") || !strings.Contains(a.Log(), w.PoliciesPath()) {
		t.Errorf("exit %v, want 1 with a refusal naming %s:\n%s", a.Cmd.ProcessState, w.PoliciesPath(), a.Log())
	}
	if strings.Contains(a.Log(), "egressd ready") {
		t.Error("the agent became ready")
	}
}

// TestHTTPTokenOnNodeAddress: --http-addr on the node's address with
// --http-token-file: the off-node host gets /status and /metrics only with the
// token; /healthz and /readyz stay open.
func TestHTTPTokenOnNodeAddress(t *testing.T) {
	const tok = "attack-test-token-0123456789"
	w := New(t, Config{Zone: unknownZone, Policies: denyMiningPolicies})
	tf := w.WriteFile("http-token", tok+"\n")
	addr := net.JoinHostPort(w.External.NodeIPv4.String(), "9464")
	w.StartAgent(AgentOptions{HTTPAddr: addr, Extra: []string{"--http-token-file", tf}})
	hc := netmodel.HTTPClient(w.External.NS, 5*time.Second)
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for path, want := range map[string][2]int{"/status": {401, 200}, "/metrics": {401, 200}, "/healthz": {200, 200}, "/readyz": {200, 200}} {
		without, with := get(path, ""), get(path, tok)
		t.Logf("external host %s: %d without the token, %d with it", path, without, with)
		if without != want[0] || with != want[1] {
			t.Errorf("%s: %d without, %d with the token; want %v", path, without, with, want)
		}
	}
	if got := get("/status", "wrong-token-0123456789"); got != 401 {
		t.Errorf("/status with a wrong token: %d", got)
	}
}

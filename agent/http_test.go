package agent

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/telemetry/statusapi"
)

const testPolicy = `apiVersion: egressd.io/v1alpha1
kind: FirewallPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  egress: []
`

const testWorkloads = `namespaces: [{name: x}]
pods:
- {namespace: x, name: a, ips: [10.0.0.1]}
`

// testAgent is an agent on files in a temporary directory, loaded, with
// telemetry, not serving DNS.
func testAgent(t *testing.T, extra ...string) (*Agent, string) {
	t.Helper()
	dir := t.TempDir()
	pol := filepath.Join(dir, "policies.yaml")
	wl := filepath.Join(dir, "workloads.yaml")
	writeFile(t, pol, testPolicy)
	writeFile(t, wl, testWorkloads)
	cfg, err := ParseFlags(append([]string{"--policies", pol, "--workloads", wl, "--dataplane", "none",
		"--upstream", "127.0.0.1:53", "--state-file", ""}, extra...), nil)
	if err != nil {
		t.Fatal(err)
	}
	a := New(cfg, slog.New(slog.DiscardHandler))
	stop, err := a.startTelemetry(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	a.source.SetHooks(a.sourceHooks())
	if _, err := a.source.Load(); err != nil {
		t.Fatal(err)
	}
	a.ready.Store(true)
	return a, pol
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	now := time.Now().Add(time.Duration(len(data)+1) * time.Millisecond)
	if err := os.Chtimes(path, now, now); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, h http.Handler, path, token string) (int, string) {
	t.Helper()
	req := httptest.NewRequest("GET", path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// TestNonLocalHTTPAddrNeedsToken: a --http-addr other hosts can reach is
// refused without --http-token-file; loopback needs none.
func TestNonLocalHTTPAddrNeedsToken(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:9464": true, "[::1]:9464": true, "0.0.0.0:9464": false, ":9464": false, "10.1.2.3:9464": false} {
		_, err := ParseFlags([]string{"--policies", "p", "--http-addr", addr}, nil)
		if (err == nil) != ok {
			t.Errorf("--http-addr %s without a token: err=%v, want ok=%v", addr, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "--http-token-file") {
			t.Errorf("--http-addr %s: error does not name --http-token-file: %v", addr, err)
		}
		if _, err := ParseFlags([]string{"--policies", "p", "--http-addr", addr, "--http-token-file", "t"}, nil); err != nil {
			t.Errorf("--http-addr %s with a token: %v", addr, err)
		}
	}
}

// TestHTTPTokenGuardsStatusAndMetrics: with --http-token-file, /status and
// /metrics need the token, /healthz and /readyz do not.
func TestHTTPTokenGuardsStatusAndMetrics(t *testing.T) {
	const tok = "0123456789abcdef-secret"
	tf := filepath.Join(t.TempDir(), "token")
	writeFile(t, tf, tok+"\n")
	a, _ := testAgent(t, "--http-addr", "0.0.0.0:9464", "--http-token-file", tf)
	h, err := a.httpHandler()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/status", "/metrics", "/other"} {
		if code, body := get(t, h, p, ""); code != 401 || strings.Contains(body, "egressd_") || strings.Contains(body, "sync") {
			t.Errorf("%s without the token: %d %q", p, code, body)
		}
		if code, _ := get(t, h, p, "wrong-token-0123456789"); code != 401 {
			t.Errorf("%s with a wrong token: %d", p, code)
		}
	}
	for _, p := range []string{"/status", "/metrics"} {
		if code, _ := get(t, h, p, tok); code != 200 {
			t.Errorf("%s with the token: %d", p, code)
		}
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(t, h, p, ""); code != 200 {
			t.Errorf("%s must stay open: %d %q", p, code, body)
		}
	}
}

// TestReloadErrorSurfaces: an emptied policy file shows in /status
// (sync.reload with file and time), in the metrics, and fails /readyz only
// with --ready-requires-valid-policies; restored, all of it clears.
func TestReloadErrorSurfaces(t *testing.T) {
	for _, strict := range []bool{false, true} {
		var extra []string
		if strict {
			extra = []string{"--ready-requires-valid-policies"}
		}
		a, pol := testAgent(t, extra...)
		h, err := a.httpHandler()
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, pol, "")
		if _, err := a.source.Load(); err == nil {
			t.Fatal("an empty policy file loaded without a problem")
		}
		if n := len(a.store.Policies()); n != 1 {
			t.Fatalf("%d policies in force after the file was emptied, want 1", n)
		}
		_, body := get(t, h, "/status", "")
		var st statusapi.Status
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		r := st.Sync.Reload
		if r == nil || r.OK || r.File != pol || r.Since.IsZero() || !strings.Contains(r.LastError, "holds no object") {
			t.Fatalf("/status sync.reload = %+v", r)
		}
		_, metrics := get(t, h, "/metrics", "")
		for _, want := range []string{"egressd_policy_reload_errors_total 1", "egressd_policy_reload_ok 0", `egressd_events_total{event="policy.reload.failed"} 1`} {
			if !strings.Contains(metrics, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
		code, msg := get(t, h, "/readyz", "")
		if strict && (code != 503 || !strings.Contains(msg, pol)) {
			t.Errorf("--ready-requires-valid-policies: /readyz %d %q, want 503 naming the file", code, msg)
		}
		if !strict && code != 200 {
			t.Errorf("default: /readyz %d %q, want 200 (the last good content is enforced)", code, msg)
		}
		writeFile(t, pol, testPolicy)
		if _, err := a.source.Load(); err != nil {
			t.Fatal(err)
		}
		_, body = get(t, h, "/status", "")
		st = statusapi.Status{}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		if r := st.Sync.Reload; r == nil || !r.OK || r.LastError != "" {
			t.Errorf("restored: sync.reload = %+v", r)
		}
		if code, _ := get(t, h, "/readyz", ""); code != 200 {
			t.Errorf("restored: /readyz %d", code)
		}
		_, metrics = get(t, h, "/metrics", "")
		if !strings.Contains(metrics, "egressd_policy_reload_ok 1") || !strings.Contains(metrics, `egressd_events_total{event="policy.reload.recovered"} 1`) {
			t.Errorf("restored: metrics do not show the recovery")
		}
	}
}

// TestRefusesToStartOnEmptyPolicyFile: with no last good content, an empty
// policy file stops the start (fail closed) before anything is bound.
func TestRefusesToStartOnEmptyPolicyFile(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "policies.yaml")
	writeFile(t, pol, "")
	cfg, err := ParseFlags([]string{"--policies", pol, "--dataplane", "none", "--upstream", "127.0.0.1:53",
		"--listen", "127.0.0.1:0", "--state-file", "", "--http-addr", "127.0.0.1:0"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = New(cfg, slog.New(slog.DiscardHandler)).Run(ctx)
	if err == nil || !strings.Contains(err.Error(), pol) || !strings.Contains(err.Error(), "not starting") {
		t.Fatalf("run on an empty policy file: %v, want a refusal naming the file", err)
	}
}

package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/telemetry"
)

// TestStatusSendsBearerToken: against an agent whose /status needs a token,
// status fails without it and succeeds with --token-file or $EGRESSD_TOKEN,
// and shows a policy file that is not taken.
func TestStatusSendsBearerToken(t *testing.T) {
	const tok = "0123456789abcdef-token"
	doc := `{"node":"n1","ready":true,"sync":{"source":"files","reload":{"ok":false,"lastError":"/p.yaml: empty: holds no object","file":"/p.yaml","since":"2026-01-02T03:04:05Z","problems":1}},"now":"2026-01-02T03:05:05Z","upstreams":[{"addr":"10.0.0.10:53","up":false,"since":"2026-01-02T03:04:05Z"}]}`
	srv := httptest.NewServer(telemetry.RequireBearer(tok, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(doc))
	})))
	defer srv.Close()
	t.Setenv("EGRESSD_TOKEN", "")
	if _, errOut, code := runCmd(t, "status", "--agent", srv.URL); code != 1 || !strings.Contains(errOut, "401") {
		t.Fatalf("without a token: code %d, stderr %q; want 1 and the 401", code, errOut)
	}
	tf := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tf, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCmd(t, "status", "--agent", srv.URL, "--token-file", tf)
	if code != 0 {
		t.Fatalf("--token-file: code %d, stderr %q", code, errOut)
	}
	if !strings.Contains(out, "10.0.0.10:53 DOWN for 1m0s") {
		t.Errorf("the table does not show the upstream down:\n%s", out)
	}
	if !strings.Contains(out, "Policy files") || !strings.Contains(out, "/p.yaml: empty") {
		t.Errorf("the table does not show the file not taken:\n%s", out)
	}
	t.Setenv("EGRESSD_TOKEN", tok)
	if _, errOut, code := runCmd(t, "status", "--agent", srv.URL); code != 0 {
		t.Fatalf("$EGRESSD_TOKEN: code %d, stderr %q", code, errOut)
	}
}

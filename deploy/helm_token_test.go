package deploy

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/egressd/egressd/test/testenv"
)

// TestHelmHTTPAddrNeedsToken: the chart refuses a non-loopback
// config.httpAddr without config.httpTokenSecret (the agent would refuse to
// start), and with the Secret passes --http-token-file and mounts it.
func TestHelmHTTPAddrNeedsToken(t *testing.T) {
	helm := testenv.RequireTools(t, "helm")[0]
	render := func(set ...string) (string, error) {
		args := []string{"template", "egressd", "helm/egressd", "--namespace", "egressd"}
		for _, s := range set {
			args = append(args, "--set", s)
		}
		out, err := exec.Command(helm, args...).CombinedOutput()
		return string(out), err
	}
	for _, addr := range []string{"0.0.0.0:9464", "10.0.0.1:9464", ":9464"} {
		out, err := render("config.httpAddr=" + addr)
		if err == nil || !strings.Contains(out, "httpTokenSecret") {
			t.Errorf("httpAddr %s without a token rendered (err %v):\n%.300s", addr, err, out)
		}
	}
	for _, addr := range []string{"127.0.0.1:9464", "[::1]:9464", "localhost:9464"} {
		out, err := render("config.httpAddr=" + addr)
		if err != nil || strings.Contains(out, "http-token") {
			t.Errorf("loopback httpAddr %s: err %v, token flag %v", addr, err, strings.Contains(out, "http-token"))
		}
	}
	out, err := render("config.httpAddr=0.0.0.0:9464", "config.httpTokenSecret=egressd-http-token")
	if err != nil {
		t.Fatalf("with a token Secret: %v\n%s", err, out)
	}
	for _, want := range []string{"--http-token-file=/etc/egressd/http-token/token", "secretName: egressd-http-token", "mountPath: /etc/egressd/http-token"} {
		if !strings.Contains(out, want) {
			t.Errorf("rendered chart lacks %q", want)
		}
	}
}

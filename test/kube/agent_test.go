package kube_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/source/kube"
	"github.com/egressd/egressd/test/kubeapi"
	"github.com/egressd/egressd/test/testenv"
)

func freeAddr(t *testing.T, network string) string {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().String()
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestAgentClusterMode runs the egressd binary in cluster mode (--kubeconfig, no
// --policies/--workloads, --dataplane none) against the real API server: it becomes
// ready after the first complete sync and, as the lease holder, writes the Invalid
// condition of an invalid policy.
func TestAgentClusterMode(t *testing.T) {
	cp := kubeapi.Start(t)
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	applyCRDs(t, ctx, dyn)
	bin := testenv.GoBuild(t, "github.com/egressd/egressd/cmd/egressd")
	httpAddr := freeAddr(t, "tcp")
	cmd := exec.Command(bin,
		"--kubeconfig", cp.Kubeconfig,
		"--node-name", "node-1",
		"--lease-namespace", "default",
		"--dataplane", "none",
		"--listen", freeAddr(t, "udp"),
		"--upstream", "127.0.0.1:9",
		"--http-addr", httpAddr,
		"--state-file", "",
	)
	logs := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	})
	waitFor(t, 60*time.Second, "agent /readyz", func() bool {
		select {
		case <-exited:
			t.Fatalf("agent exited: %v\n%s", cmd.ProcessState, logs.String())
		default:
		}
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == 200 && strings.HasPrefix(string(body), "ready")
	})
	e := &env{t: t, ctx: ctx, dyn: dyn}
	e.mustApply(`
apiVersion: egressd.io/v1alpha1
kind: ClusterFirewallPolicy
metadata: {name: bad-pattern}
spec:
  tier: Admin
  priority: 1
  subject: {namespaceSelector: {}}
  egress:
  - action: Deny
    to: [{fqdn: {matchPattern: "exa**mple..com"}}]
`)
	c := e.waitCondition(kube.ClusterFirewallPolicies, "", "bad-pattern", policy.ConditionInvalid, "True")
	if msg := fmt.Sprint(c["message"]); !strings.Contains(msg, "spec.egress[0].to[0].fqdn.matchPattern") {
		t.Errorf("Invalid condition does not name the field: %v", c)
	}
	t.Logf("agent wrote Invalid: reason=%v message=%q", c["reason"], c["message"])
}

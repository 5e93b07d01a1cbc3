// Command scale runs the scale harness of test/scale (docs/scale.md): a real
// kube-apiserver filled with many Nodes, namespaces, pods and policies, the
// egressd agent for one node (and K-1 more for the status fan-out), and prints
// the figures as a Markdown table. `make scale` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/egressd/egressd/test/kubeapi"
	"github.com/egressd/egressd/test/scale"
)

func main() {
	var cfg scale.Config
	flag.IntVar(&cfg.Nodes, "nodes", 5000, "Nodes in the cluster")
	flag.IntVar(&cfg.Namespaces, "namespaces", 5000, "namespaces")
	flag.IntVar(&cfg.Pods, "pods", 50000, "pods (spread round-robin over namespaces and nodes)")
	flag.IntVar(&cfg.Policies, "policies", 1200, "policies (NetworkPolicy, FirewallPolicy with FQDN rules, ClusterFirewallPolicy in turn)")
	flag.IntVar(&cfg.Agents, "agents", 1, "agents (K): node-0 is measured, all report policy status")
	flag.DurationVar(&cfg.Idle, "idle", 30*time.Second, "how long idle CPU and upstream queries are measured")
	flag.DurationVar(&cfg.Churn, "churn", 30*time.Second, "how long churn CPU is measured")
	flag.IntVar(&cfg.ChurnRate, "churn-rate", 20, "pod creates+deletes and relabels per second during churn")
	flag.IntVar(&cfg.Samples, "samples", 20, "latency samples per figure")
	agent := flag.String("agent", "", "egressd binary (default: go build ./cmd/egressd)")
	flag.Func("agent-flag", "an extra flag for the agents, e.g. -agent-flag=--upstream-health-interval=0 (repeatable)", func(s string) error {
		cfg.AgentArgs = append(cfg.AgentArgs, s)
		return nil
	})
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "egressd-scale-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg.Dir = dir
	cfg.Progress = os.Stderr
	if cfg.Agent = *agent; cfg.Agent == "" {
		cfg.Agent = filepath.Join(dir, "egressd")
		if out, err := exec.Command("go", "build", "-o", cfg.Agent, "./cmd/egressd").CombinedOutput(); err != nil {
			log.Fatalf("go build ./cmd/egressd: %v\n%s", err, out)
		}
	}
	if cfg.Etcd, err = exec.LookPath("etcd"); err != nil {
		log.Fatal("etcd not on PATH (make test-deps installs it)")
	}
	if cfg.APIServer, err = kubeapi.EnsureBinary(ctx, os.Stderr); err != nil {
		log.Fatal(err)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	start := time.Now()
	rep, err := scale.Run(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	end, _ := os.ReadFile("/proc/loadavg")
	fmt.Print(rep.Table())
	fmt.Printf("\nrun took %s; /proc/loadavg before: %s; after: %s", time.Since(start).Round(time.Second), load, end)
}

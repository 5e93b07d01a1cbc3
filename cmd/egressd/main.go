// Command egressd is the node agent: the node's DNS resolver that decides per
// workload which names may be resolved, programs allowed answers into kernel
// sets, and enforces label-based ingress and egress policy with nftables.
// Flags are documented in docs/egressd.md; the agent itself is package agent,
// this command only parses the flags and runs it until SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/egressd/egressd/agent"
	"github.com/egressd/egressd/internal/buildinfo"
)

// versionRequested: --version (or -version) alone prints the version.
func versionRequested(args []string) bool {
	return len(args) == 1 && (args[0] == "--version" || args[0] == "-version")
}

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	if versionRequested(os.Args[1:]) {
		fmt.Println("egressd", buildinfo.Version(version))
		return
	}
	cfg, err := agent.ParseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "egressd:", err)
		os.Exit(2)
	}
	log, err := agent.NewLogger(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "egressd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := agent.New(cfg, log).Run(ctx); err != nil {
		log.Error("egressd stopped", "err", err)
		os.Exit(1)
	}
}

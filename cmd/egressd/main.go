// Command egressd is the node agent: the node's DNS resolver that decides per
// workload which names may be resolved, programs allowed answers into kernel
// sets, and enforces label-based ingress and egress policy with nftables.
// Flags are documented in docs/egressd.md; this package only wires.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "egressd:", err)
		os.Exit(2)
	}
	log, err := newLogger(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "egressd:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newAgent(cfg, log).run(ctx); err != nil {
		log.Error("egressd stopped", "err", err)
		os.Exit(1)
	}
}

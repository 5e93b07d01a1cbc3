// Command cluster brings the single-node cluster of test/cluster up with egressd
// installed (`make cluster`), or tears it down (`make cluster-down`):
//
//	go run ./test/cluster/cmd/cluster up   [-dir bin/cluster] [-image bin/egressd-image.tar] [-install kustomize|helm|none]
//	go run ./test/cluster/cmd/cluster down [-dir bin/cluster]
//
// It must run as root from the repository. Everything of the cluster lives in -dir
// and in network namespaces of its own; down leaves the host as it was.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/egressd/egressd/test/cluster"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "up" && os.Args[1] != "down") {
		fmt.Fprintln(os.Stderr, "usage: cluster up|down [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	dir := fs.String("dir", "bin/cluster", "the cluster's directory (state, kubeconfig, logs)")
	image := fs.String("image", "bin/egressd-image.tar", "egressd's image archive (make image)")
	install := fs.String("install", "kustomize", "how to install egressd: kustomize (kubectl apply -k deploy/), helm (deploy/helm/egressd) or none")
	port := fs.Int("port", 0, "host port (127.0.0.1) of the API server; 0: a free one")
	_ = fs.Parse(os.Args[2:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var err error
	if os.Args[1] == "up" {
		err = cluster.Up(ctx, cluster.UpOptions{Dir: *dir, Image: *image, Install: *install, APIPort: *port, Log: os.Stderr, Out: os.Stdout})
	} else {
		err = cluster.Down(*dir, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
}

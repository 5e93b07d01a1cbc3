// Command cluster-build builds the components of the single-node cluster of
// test/cluster (Kubernetes node binaries, containerd, CNI plugins, CoreDNS) into their
// cache unless they are there already, and prints where they are. Run it before
// `go test` so that the first build (15-30 minutes on 2 cores) does not count against
// test timeouts:
//
//	go run ./test/cluster/cmd/cluster-build
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/egressd/egressd/test/cluster"
)

func main() {
	b, err := cluster.EnsureBinaries(context.Background(), os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster-build:", err)
		os.Exit(1)
	}
	fmt.Println(b.KubeDir)
	fmt.Println(b.ContainerdDir)
	fmt.Println(b.CNIDir)
	fmt.Println(b.CoreDNS)
}

// Command kubeapi-build builds the kube-apiserver binary that tests use (test/kubeapi)
// into its cache unless it is there already, and prints its path. Run it before
// `go test` where the first build (about 5 minutes on 2 cores, much more on a loaded
// machine) should not count against test timeouts:
//
//	go run ./test/kubeapi/cmd/kubeapi-build
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/egressd/egressd/test/kubeapi"
)

func main() {
	bin, err := kubeapi.EnsureBinary(context.Background(), os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubeapi-build:", err)
		os.Exit(1)
	}
	fmt.Println(bin)
}

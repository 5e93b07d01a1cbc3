// Command jaeger-build builds the Jaeger v2 binary that tests use (test/jaeger) into its
// cache unless it is there already, and prints its path. Run it before `go test` where
// the first build (about 3+ minutes on 2 cores, more on a loaded machine) should not
// count against test timeouts:
//
//	go run ./test/jaeger/cmd/jaeger-build
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/egressd/egressd/test/jaeger"
)

func main() {
	bin, err := jaeger.EnsureBinary(context.Background(), os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "jaeger-build:", err)
		os.Exit(1)
	}
	fmt.Println(bin)
}

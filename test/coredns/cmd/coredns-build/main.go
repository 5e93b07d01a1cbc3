// Command coredns-build builds the CoreDNS binary the tests use (test/coredns)
// into its cache unless it is there already, and prints its path:
//
//	go run ./test/coredns/cmd/coredns-build
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/egressd/egressd/test/coredns"
)

func main() {
	bin, err := coredns.EnsureBinary(context.Background(), os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "coredns-build:", err)
		os.Exit(1)
	}
	fmt.Println(bin)
}

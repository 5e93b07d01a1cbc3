// Command egressctl is the offline CLI of egressd: it validates policy files,
// explains the verdict on one connection or lookup and prints the whole
// reachability matrix of a set of workloads, with the same evaluator
// (policy.Engine) the agent enforces. See docs/egressctl.md.
package main

import "os"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

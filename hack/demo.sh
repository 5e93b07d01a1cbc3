#!/usr/bin/env bash
# make demo: the embedded example policies through egressctl (offline).
# The agent demo (DNS, kernel, traces) arrives with the resolver.
set -euo pipefail
cd "$(dirname "$0")/.."
ctl=./bin/egressctl
ex=deploy/examples; pol=$ex/policies
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "validate the embedded policies ($pol)"
$ctl validate -f $pol

say "allowed lookup: builds/runner-0 resolves api.github.com"
$ctl explain -f $pol --workloads $ex/workloads.yaml --from builds/runner-0 --to-name api.github.com

say "blocked lookup: builds/runner-0 resolves pool.minepool.com (Admin tier deny)"
$ctl explain -f $pol --workloads $ex/workloads.yaml --from builds/runner-0 --to-name pool.minepool.com

say "blocked connection: payments/gateway-0 to the metadata service"
$ctl explain -f $pol --workloads $ex/workloads.yaml --from payments/gateway-0 --to-ip 169.254.169.254 --port 80 --protocol TCP

say "blocked connection: builds/runner-0 to payments/gateway-0:8080 (ingress isolated)"
$ctl explain -f $pol --workloads $ex/workloads.yaml --from builds/runner-0 --to payments/gateway-0 --port 8080 --protocol TCP

say "reachability matrix, TCP 8080 and 9090"
$ctl matrix -f $pol --workloads $ex/workloads.yaml --ports 8080,9090 --protocols TCP -o table

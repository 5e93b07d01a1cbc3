#!/usr/bin/env bash
# make demo: egressd on the embedded default policy, end to end, on this machine.
#
# Builds a tiny "cluster" out of network namespaces — a node, a pod
# (builds/runner-0, 10.244.0.5) and an external network with two servers —
# starts a real upstream resolver (dnsmasq) and a real trace backend (Jaeger)
# in the node, runs egressd there with deploy/examples/demo/policies.yaml and
# shows, from inside the pod with real clients:
#   1. an allowed lookup (api.github.com) whose answer is written into the
#      kernel set before the reply, and a connection to it that works;
#   2. a blocked lookup (pool.minepool.com): NXDOMAIN with an Extended DNS
#      Error, the audit line, and its trace fetched back from Jaeger;
#   3. a blocked connection (an address nobody resolved) dropped by nftables.
# Everything lives in namespaces named egd-demo-*; they are removed on exit.
# The host's own ruleset, routes and addresses are not touched. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
[ "$(id -u)" -eq 0 ] || { echo "make demo needs root (network namespaces, nftables)" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

# Tools the demo uses.
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v dig >/dev/null || need+=(dnsutils)
command -v curl >/dev/null || need+=(curl)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v python3 >/dev/null || need+=(python3-minimal)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
jaeger=$(go run ./test/jaeger/cmd/jaeger-build)

work=$(mktemp -d /tmp/egressd-demo.XXXXXX)
NODE=egd-demo-node POD=egd-demo-pod EXT=egd-demo-ext
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in $NODE $POD $EXT; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work" "/etc/netns/$POD"
}
trap cleanup EXIT
cleanup_ns_only() { for ns in $NODE $POD $EXT; do ip netns del "$ns" 2>/dev/null || true; done; }
cleanup_ns_only

say "network: node, pod builds/runner-0 (10.244.0.5), external servers 192.0.2.10 and 192.0.2.20"
for ns in $NODE $POD $EXT; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip netns exec $NODE sysctl -qw net.ipv4.ip_forward=1
# node-local resolver address, like NodeLocal DNSCache
ip -n $NODE addr add 169.254.20.10/32 dev lo
# pod <-> node (routed, /32)
ip -n $NODE link add veth-pod type veth peer name eth0 netns $POD
ip -n $POD addr add 10.244.0.5/32 dev eth0
ip -n $POD link set eth0 up
ip -n $NODE link set veth-pod up
ip -n $NODE route add 10.244.0.5/32 dev veth-pod
ip -n $POD route add default dev eth0
# the pod's resolver is egressd (ip netns exec bind-mounts this over /etc/resolv.conf)
mkdir -p /etc/netns/$POD && echo "nameserver 169.254.20.10" > /etc/netns/$POD/resolv.conf
ip netns exec $NODE sysctl -qw net.ipv4.conf.veth-pod.proxy_arp=1
# node <-> external network
ip -n $NODE link add veth-ext type veth peer name eth0 netns $EXT
ip -n $NODE addr add 192.0.2.1/24 dev veth-ext
ip -n $EXT addr add 192.0.2.10/24 dev eth0
ip -n $EXT addr add 192.0.2.20/24 dev eth0
ip -n $NODE link set veth-ext up
ip -n $EXT link set eth0 up
ip -n $EXT route add default via 192.0.2.1
mkdir -p "$work/www" && echo "hello from api.github.com (192.0.2.10)" > "$work/www/index.html"
ip netns exec $EXT python3 -m http.server 80 --bind 0.0.0.0 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)

say "upstream resolver (dnsmasq) and trace backend (Jaeger) inside the node"
ip netns exec $NODE dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
  --listen-address=127.0.0.1 --port=5300 --log-facility=- --local-ttl=60 \
  --address=/api.github.com/192.0.2.10 --address=/pool.minepool.com/192.0.2.20 \
  --address=/example.org/192.0.2.20 >"$work/dnsmasq.log" 2>&1 &
pids+=($!)
ip netns exec $NODE "$jaeger" >"$work/jaeger.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  ip netns exec $NODE curl -fs -o /dev/null http://127.0.0.1:16686/ && break
  sleep 0.2
done

say "egressd with deploy/examples/demo/policies.yaml"
sed -n '1,200p' deploy/examples/demo/policies.yaml | grep -v '^#'
ip netns exec $NODE "$root/bin/egressd" \
  --policies deploy/examples/demo/policies.yaml --workloads deploy/examples/demo/workloads.yaml \
  --listen 169.254.20.10:53 --upstream 127.0.0.1:5300 \
  --audit-log "$work/audit.jsonl" --otlp-endpoint 127.0.0.1:4317 \
  --nflog-group 100 --http-addr 127.0.0.1:9464 --log-level warn 2>"$work/egressd.log" &
pids+=($!)
for _ in $(seq 100); do
  ip netns exec $NODE curl -fs http://127.0.0.1:9464/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
ip netns exec $NODE curl -fsS http://127.0.0.1:9464/readyz || { cat "$work/egressd.log"; exit 1; }

pod() { ip netns exec $POD "$@"; }

say "1. allowed lookup from the pod: api.github.com"
run pod dig +noall +answer +comments @169.254.20.10 api.github.com A | grep -E 'status|IN'
echo "the answer was written into the rule's kernel set before the reply:"
ip netns exec $NODE nft list ruleset | grep -A3 'set fq_.*_v4' | grep -E 'set fq_|elements' || true
run pod curl -sS --max-time 3 http://api.github.com/

say "2. blocked lookup from the pod: pool.minepool.com"
run pod dig +noall +comments @169.254.20.10 pool.minepool.com A | grep -E 'status|EDE' || true
sleep 0.5
echo "audit line:"
grep '"dns.lookup.blocked"' "$work/audit.jsonl" | tail -1
echo "its trace, fetched back from Jaeger (http://127.0.0.1:16686/api/traces?service=egressd):"
for _ in $(seq 50); do
  out=$(ip netns exec $NODE curl -fs 'http://127.0.0.1:16686/api/traces?service=egressd&operation=dns.lookup.blocked&limit=1' || true)
  if echo "$out" | grep -q 'dns.lookup.blocked'; then
    echo "$out" | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]:
    for s in t["spans"]:
        print("span", s["operationName"], "trace", t["traceID"])
        for tag in s["tags"]:
            if tag["key"].startswith(("egressd.", "dns.", "client.", "k8s.")):
                print("   ", tag["key"], "=", tag["value"])'
    break
  fi
  sleep 0.2
done

say "3. blocked connection from the pod: 192.0.2.20:80 (no lookup allowed it)"
if pod curl -sS --max-time 2 http://192.0.2.20/ ; then
  echo "UNEXPECTED: the connection went through" >&2; exit 1
else
  echo "dropped by nftables (table inet egressd)"
fi
ip netns exec $NODE nft list table inet egressd | grep -E 'counter packets [1-9]' | head -3 || true
sleep 0.5
echo "reported through nflog and explained by the policy engine:"
grep '"packet.denied"' "$work/audit.jsonl" | head -1

say "done: everything is removed on exit"

#!/usr/bin/env bash
# Installs what the tests need on a Debian machine: kernel CLI tools for assertions
# and debugging, DNS clients and servers, load tools; then builds the heavy real
# components (Jaeger) once per machine into ${EGRESSD_CACHE:-$HOME/.cache/egressd}, so
# that the first build does not count against test timeouts. Idempotent. Needs root
# to install packages (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> Debian package
declare -A pkgs=(
  [nft]=nftables
  [ip]=iproute2
  [conntrack]=conntrack
  [iperf3]=iperf3
  [dig]=dnsutils
  [dnsperf]=dnsperf
  [curl]=curl
  [dnsmasq]=dnsmasq-base
  [kubectl]=kubernetes-client
  [etcd]=etcd-server
  [dns2tcpd]=dns2tcp
  [iodined]=iodine
  [ifconfig]=net-tools # iodine and iodined configure their tun device with it
  [runc]=runc           # test/cluster: the OCI runtime under containerd
)
missing=()
for tool in "${!pkgs[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${pkgs[$tool]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing ${missing[*]} and not root; install them or run as root" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "install-test-deps: Jaeger and CoreDNS (cached after the first build)"
go run ./test/jaeger/cmd/jaeger-build >/dev/null
go run ./test/coredns/cmd/coredns-build >/dev/null

echo "install-test-deps: kube-apiserver (cached after the first build, ~5+ minutes)"
go run ./test/kubeapi/cmd/kubeapi-build >/dev/null

# test/cluster: kube-apiserver, -controller-manager, -scheduler, kubelet, kube-proxy
# and kubectl in one go build, containerd + shim, CNI plugins (cached after the first
# build, 15-30 minutes on 2 cores; instant when cached).
echo "install-test-deps: node components for test/cluster (cached after the first build)"
go run ./test/cluster/cmd/cluster-build >/dev/null

# helm renders the chart in deploy/ (not packaged by Debian 12): built once from
# its Go module into the cache and linked onto PATH.
if ! command -v helm >/dev/null 2>&1; then
  helm_dir=${EGRESSD_CACHE:-$HOME/.cache/egressd}/helm-v3.19.0
  if [ ! -x "$helm_dir/helm" ]; then
    echo "install-test-deps: building helm v3.19.0 (once, a few minutes)"
    mkdir -p "$helm_dir"
    (cd "$(mktemp -d)" && GOFLAGS= GOBIN="$helm_dir" go install helm.sh/helm/v3/cmd/helm@v3.19.0)
  fi
  ln -sf "$helm_dir/helm" /usr/local/bin/helm
fi

#!/usr/bin/env bash
# Installs what the tests need on a Debian machine: kernel CLI tools for assertions
# and debugging, DNS clients and load tools. Idempotent; does nothing for tools
# already present. Needs root (CI runs as root).
set -euo pipefail

# tool -> Debian package
declare -A pkgs=(
  [nft]=nftables
  [ipset]=ipset
  [ip]=iproute2
  [conntrack]=conntrack
  [iperf3]=iperf3
  [dig]=dnsutils
  [curl]=curl
)
missing=()
for tool in "${!pkgs[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${pkgs[$tool]}")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: missing ${missing[*]} and not root; install them or run as root" >&2
  exit 1
fi
echo "install-test-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

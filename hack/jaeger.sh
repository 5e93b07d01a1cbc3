#!/usr/bin/env bash
# Prints the path of a Jaeger v2 binary (an OTLP trace backend: gRPC :4317,
# HTTP :4318, query API :16686), building it from the Go module once per machine
# and caching it under ${EGRESSD_CACHE:-$HOME/.cache/egressd}/jaeger-v1.76.0/.
set -euo pipefail
version=v1.76.0
cache=${EGRESSD_CACHE:-$HOME/.cache/egressd}/jaeger-$version
bin=$cache/jaeger
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$cache"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cd "$src"
cat > go.mod <<EOM
module egressd-tools/jaeger

go 1.26

require github.com/jaegertracing/jaeger $version

replace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0
EOM
cat > tools.go <<'EOM'
//go:build tools

package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
EOM
echo "building Jaeger $version (once per machine, a few minutes)..." >&2
export GONOSUMDB=github.com/open-telemetry,go.opentelemetry.io GOFLAGS=-mod=mod
go get "github.com/jaegertracing/jaeger/cmd/jaeger@$version" >&2
go build -o "$bin.tmp" github.com/jaegertracing/jaeger/cmd/jaeger >&2
mv "$bin.tmp" "$bin"
echo "$bin"

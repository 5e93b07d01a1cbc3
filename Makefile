# egressd — the front door. `make demo` and `make test` are the two commands a
# newcomer needs; see README.md.

GO       ?= go
PKGS     ?= ./...
BIN      ?= bin
export CI ?=

.PHONY: all build image test test-deps unit lint fmt vet generate bench fuzz demo clean scale cluster cluster-down cluster-build

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

## image: egressd's container image without Docker (hack/image): static
## binaries, an empty base, the same digest for the same commit. Writes
## $(BIN)/egressd-image.tar (an OCI image layout tar; `ctr -n k8s.io images
## import` takes it) and $(BIN)/egressd-image.modules.txt (`go version -m`).
## IMAGE=name:tag overrides the chart's image.repository:appVersion.
IMAGE ?=
image:
	$(GO) run ./hack/image -out $(BIN)/egressd-image.tar $(if $(IMAGE),-image $(IMAGE))

## test: install what the tests need, then run every test of the project.
test: test-deps vet
	$(GO) test -count=1 -timeout 45m $(PKGS)

test-deps:
	./hack/install-test-deps.sh

## unit: the fast tests only (no root, no kernel).
unit:
	$(GO) test -short -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -l -w $$(git ls-files '*.go')

lint: vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.6.1 $(PKGS)

## generate: deepcopy and the CRDs in deploy/crds (schemas, CEL rules, printer
## columns from the kubebuilder markers in policy/types.go) with controller-gen,
## and the upstream ClusterNetworkPolicy CRD (experimental channel) from the
## sigs.k8s.io/network-policy-api module go.mod requires.
generate:
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 object paths=./policy/
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.19.0 crd paths=./policy/ output:crd:dir=deploy/crds
	cp deploy/crds/egressd.io_*.yaml deploy/helm/egressd/crds/
	cp "$$($(GO) list -m -f '{{.Dir}}' sigs.k8s.io/network-policy-api)/config/crd/experimental/policy.networking.k8s.io_clusternetworkpolicies.yaml" deploy/crds/
	chmod 644 deploy/crds/policy.networking.k8s.io_clusternetworkpolicies.yaml
	cp deploy/crds/policy.networking.k8s.io_clusternetworkpolicies.yaml deploy/helm/egressd/files/

## bench: every benchmark; numbers go to docs/benchmarks.md.
bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## fuzz: a short run of every fuzz target (corpus under testdata/fuzz).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./policy/domain/
	$(GO) test -run '^$$' -fuzz FuzzMatch -fuzztime 30s ./policy/domain/
	$(GO) test -run '^$$' -fuzz FuzzDecodePolicy -fuzztime 30s ./policy/manifest/
	$(GO) test -run '^$$' -fuzz FuzzDecodeWorkloads -fuzztime 30s ./policy/manifest/
	$(GO) test -run '^$$' -fuzz FuzzLabelSelectors -fuzztime 30s ./policy/calico/

demo: build
	./hack/demo.sh

## cluster: a real single-node Kubernetes cluster on this machine (as root): kubelet,
## containerd, bridge CNI, kube-proxy (nftables), CoreDNS, with egressd installed from
## deploy/ using the image of `make image`. Writes $(BIN)/cluster/kubeconfig and prints
## how to use it; docs/kubernetes.md. The first run builds the components (15-30 min).
cluster: image cluster-build
	$(GO) run ./test/cluster/cmd/cluster up -dir $(BIN)/cluster -image $(BIN)/egressd-image.tar

## cluster-down: stops `make cluster` and leaves the host as it was.
cluster-down:
	$(GO) run ./test/cluster/cmd/cluster down -dir $(BIN)/cluster

cluster-build:
	$(GO) run ./test/cluster/cmd/cluster-build >/dev/null

clean:
	rm -rf $(BIN)

## scale: the scale harness (docs/scale.md): a real kube-apiserver with 5,000
## Nodes, 5,000 namespaces, 50,000 pods and 1,200 policies, one agent; prints
## the table of docs/scale.md. Size with SCALE_ARGS (e.g. -pods 150000).
SCALE_ARGS ?=
scale:
	$(GO) run ./test/scale/cmd/scale $(SCALE_ARGS)

// Package cluster brings up a real single-node Kubernetes cluster for tests and for
// `make cluster`: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
// containerd with runc, kubelet, the bridge CNI, kube-proxy in nftables mode and
// CoreDNS as a Deployment behind the kube-dns Service, the whole node inside one
// network namespace of its own. The components are built from their Go modules once
// per machine into ${EGRESSD_CACHE:-$HOME/.cache/egressd} (test/toolcache); prebuild
// them with `go run ./test/cluster/cmd/cluster-build` (make test-deps does).
package cluster

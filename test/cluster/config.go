package cluster

import (
	"fmt"
	"sort"
	"strings"
)

// The node's addresses. The node network namespace reaches the "outside world" (one
// external network namespace, the only upstream there is) over a veth: the node is
// NodeIP on it, the external namespace holds ExternalIPs and serves DNS on the first.
const (
	NodeName    = "egressd-node"
	NodeIP      = "192.0.2.1"
	PodCIDR     = "10.244.0.0/24"
	ClusterCIDR = "10.244.0.0/16"
	ServiceCIDR = "10.96.0.0/16"
	// APIServiceIP is the "kubernetes" Service's cluster IP.
	APIServiceIP = "10.96.0.1"
	// DNSServiceIP is the kube-dns Service's cluster IP (kubelet's clusterDNS).
	DNSServiceIP  = "10.96.0.10"
	ClusterDomain = "cluster.local"
	apiPort       = 6443
)

// ExternalHosts are the names the external DNS server (on ExternalDNS) answers, each
// with the address of the external namespace that serves HTTP on port 80 there; every
// other name is NXDOMAIN.
var ExternalHosts = map[string]string{
	"allowed.example.test": "192.0.2.10",
	"denied.example.test":  "192.0.2.11",
	"other.example.test":   "192.0.2.12",
}

// ExternalDNS is the upstream resolver of the cluster (CoreDNS forwards there).
const ExternalDNS = "192.0.2.10"

// Image names imported into the node's containerd (k8s.io namespace). Pods use them
// with imagePullPolicy Never or IfNotPresent: there is no registry.
const (
	PauseImage   = "localhost/egressd-test/pause:1"
	ProbeImage   = "localhost/egressd-test/probe:1"
	CoreDNSImage = "localhost/egressd-test/coredns:v1.13.1"
)

// sysctls are the host-wide values kubelet insists on; the anchor bind-mounts files
// holding them over /proc/sys so that kubelet (protectKernelDefaults) finds them and
// the host's stay untouched.
var sysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// anchorScript runs in the anchor's new mount namespace, already in the node's network
// namespace: private /run, /var as an overlay whose changes stay in the state dir,
// kubelet's sysctls; then it marks itself ready and sleeps until killed.
func anchorScript(l layout) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	b.WriteString("mount -t tmpfs -o mode=755 tmpfs /run\n")
	fmt.Fprintf(&b, "mount -t overlay overlay -o lowerdir=/var,upperdir=%s,workdir=%s /var\n", l.varUpper(), l.varWork())
	for _, k := range sortedKeys(sysctls) {
		fmt.Fprintf(&b, "mount --bind %s /proc/sys/%s\n", l.sysctlFile(k), k)
	}
	fmt.Fprintf(&b, "touch %s\n", l.anchorReady())
	b.WriteString("exec sleep infinity\n")
	return b.String()
}

func containerdConfig(l layout, b *Binaries) string {
	return fmt.Sprintf(`version = 4
root = %[1]q
state = %[2]q
imports = []

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = %[3]q
  [plugins.'io.containerd.server.v1.ttrpc']
    address = %[4]q
  [plugins.'io.containerd.internal.v1.opt']
    path = %[5]q
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
  [plugins.'io.containerd.cri.v1.images']
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = %[6]q
  [plugins.'io.containerd.cri.v1.runtime']
    restrict_oom_score_adj = true
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = [%[7]q]
      conf_dir = %[8]q
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = %[9]q
          SystemdCgroup = false
`, l.path("containerd/root"), l.path("containerd/state"), l.containerdSock(), l.containerdSock()+".ttrpc",
		l.path("containerd/opt"), PauseImage, b.CNIDir, l.path("cni/net.d"), b.Runc)
}

func cniConfig(l layout) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "egressd-test",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": %q
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "backend": "nftables"}
  ]
}
`, PodCIDR, l.path("cni/ipam"))
}

func kubeletConfig(l layout, cgroupRoot string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
oomScoreAdj: 0
protectKernelDefaults: true
failSwapOn: false
containerRuntimeEndpoint: unix://%[2]s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[3]s
authorization:
  mode: Webhook
clusterDNS: [%[4]s]
clusterDomain: %[5]s
resolvConf: %[6]s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
serializeImagePulls: false
staticPodPath: ""
nodeStatusUpdateFrequency: 4s
`, cgroupRoot, l.containerdSock(), l.path("pki/ca.crt"), DNSServiceIP, ClusterDomain, l.path("resolv.conf"))
}

func kubeProxyConfig(l layout) string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
clusterCIDR: %s
oomScoreAdj: 0
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, l.path("kube-proxy.kubeconfig"), NodeName, ClusterCIDR)
}

// ExternalZone is the zone the external DNS server is authoritative for: the names of
// ExternalHosts, NXDOMAIN for any other name in it.
const ExternalZone = "example.test"

// externalCorefile: the external DNS server answers ExternalZone from a zone file, and
// NXDOMAIN for every name outside it.
func externalCorefile(l layout) string {
	return fmt.Sprintf(`%[1]s:53 {
    bind %[2]s
    file %[3]s
}
.:53 {
    bind %[2]s
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`, ExternalZone, ExternalDNS, l.path("ext/zone"))
}

func externalZoneFile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ORIGIN %s.\n", ExternalZone)
	fmt.Fprintf(&b, "@ 3600 IN SOA ns.%[1]s. admin.%[1]s. 1 7200 3600 1209600 60\n", ExternalZone)
	fmt.Fprintf(&b, "@ 3600 IN NS ns.%s.\n", ExternalZone)
	fmt.Fprintf(&b, "ns 60 IN A %s\n", ExternalDNS)
	for _, n := range sortedKeys(ExternalHosts) {
		fmt.Fprintf(&b, "%s. 60 IN A %s\n", n, ExternalHosts[n])
	}
	return b.String()
}

// addonsManifest is the cluster DNS: CoreDNS as a Deployment behind the kube-dns
// Service, as kubeadm installs it.
func addonsManifest() string {
	return fmt.Sprintf(`apiVersion: v1
kind: ServiceAccount
metadata:
  name: coredns
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:coredns
subjects:
- kind: ServiceAccount
  name: coredns
  namespace: kube-system
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: coredns
  namespace: kube-system
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes %[1]s in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        forward . /etc/resolv.conf
        cache 30
        loop
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: kube-dns
  template:
    metadata:
      labels:
        k8s-app: kube-dns
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: %[2]s
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          periodSeconds: 10
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap:
          name: coredns
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels:
    k8s-app: kube-dns
spec:
  clusterIP: %[3]s
  selector:
    k8s-app: kube-dns
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
`, ClusterDomain, CoreDNSImage, DNSServiceIP)
}

# The real node of the local cluster, sourced by cluster.sh (not run on its own): a container runtime
# (containerd + runc), the kubelet, kube-proxy, CNI plugins, a local OCI registry, CoreDNS as a pod and
# a load-balancer stand-in, all built from Go modules (versions in versions.env).
#
# Layout on the machine, and why:
# - The node has its own address, NODE_IP, a /32 on the loopback interface: the API server binds to it
#   (pods reach it through the `kubernetes` Service), the kubelet serves on it, NodePorts answer on it.
# - containerd and the kubelet share one private mount namespace (held by a `sleep` started with
#   `unshare -m`): the kubelet's volume mounts must be visible to containerd, none of them leak to the
#   host, and files bind-mounted over six /proc/sys entries absorb the kubelet's writes to global
#   sysctls (kernel.panic, vm.overcommit_memory, ...), so the machine keeps its own values.
# - The node is tainted (kubundle.dev/real-node:NoSchedule) and labelled (kubundle.dev/real-node=true):
#   pods land on it only when they ask. A namespace asks for all its pods with two annotations (see
#   `cluster.sh real-namespace`), so AppBundles need no scheduling fields; kwok nodes keep the rest.
# - One real node per machine: iptables rules, the kubelet's few fixed paths and the service CIDR are
#   machine-wide. A second cluster (the tests start one) runs without a real node.

NODE_NAME=kubundle-node
NODE_IP=10.255.255.1
# LoadBalancer addresses the stand-in hands out (one /32 each on the loopback interface).
LB_POOL_PREFIX=10.255.254
# The local Gateway's (and the Ingress controller's) address: Traefik listens on it, ports 80 and 443.
GATEWAY_IP=10.255.253.1
GATEWAY_NAMESPACE=gateway-system
GATEWAY_NAME=local
POD_CIDR=10.88.0.0/24
CLUSTER_DNS_IP=10.96.0.10
CNI_BRIDGE=kubundle-cni0
# The name images are pulled by on the node; containerd maps it to the local registry's port.
REGISTRY_HOST=registry.kubundle.local
NODE_TAINT_KEY=kubundle.dev/real-node
NODE_MACHINE_LOCK=/run/kubundle-real-node.owner
# The /proc/sys entries the kubelet rewrites when protectKernelDefaults is false.
NODE_SYSCTLS=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys
  kernel/keys/root_maxbytes)
# Paths outside the cluster's state that the node's components write to (fixed in their code); `down`
# removes each one that did not exist before `up`.
NODE_FIXED_PATHS=(/var/lib/kubelet /var/lib/cni /run/containerd /var/log/containers /var/log/pods /run/netns)

node_dir() { echo "$state/node"; }
# Unix sockets have a 108-byte path limit: the runtime's sockets live in a short directory under /run.
node_run_dir() { echo "/run/kubundle-$(echo "$state" | sha256sum | cut -c1-8)"; }

# real_node_wanted: decide (once, at `up`) whether this cluster gets a real node. KUBUNDLE_REAL_NODE=0
# goes without; 1 requires it; auto (the default) takes it where the machine allows.
real_node_wanted() {
  local want=${KUBUNDLE_REAL_NODE:-auto} why=""
  [ "$want" = 0 ] && return 1
  if [ "$(id -u)" != 0 ]; then why="it needs root"
  elif [ ! -d /sys/fs/cgroup/memory ] && [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then why="no cgroup hierarchy"
  elif ! command -v iptables >/dev/null || ! command -v conntrack >/dev/null; then
    why="iptables and conntrack are missing (apt-get install -y iptables conntrack)"
  elif [ ! -f /usr/include/seccomp.h ]; then why="runc needs libseccomp-dev (apt-get install -y libseccomp-dev)"
  elif ! command -v gcc >/dev/null; then why="gcc is missing (it builds the pause program)"
  elif node_machine_owner_alive; then why="the real node of $(cat "$NODE_MACHINE_LOCK") already runs on this machine"
  fi
  if [ -n "$why" ]; then
    [ "$want" = 1 ] && die "KUBUNDLE_REAL_NODE=1 but no real node is possible: $why"
    log "no real node: $why (only kwok nodes; KUBUNDLE_REAL_NODE=0 says so without this message)"
    return 1
  fi
  return 0
}

# The machine-wide lock names the state directory of the cluster whose real node runs.
node_machine_owner_alive() {
  local owner
  [ -f "$NODE_MACHINE_LOCK" ] || return 1
  owner=$(cat "$NODE_MACHINE_LOCK")
  [ "$owner" != "$state" ] || return 1
  local pid
  pid=$(cut -d' ' -f1 "$owner/pids/containerd" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -d "/proc/$pid" ]
}

# ---------------------------------------------------------------- building

build_node() {
  command -v go >/dev/null || die "go is not installed; it builds the node's components"
  [ -f /usr/include/seccomp.h ] || die "runc needs libseccomp-dev: apt-get install -y libseccomp-dev"
  mkdir -p "$cache"
  exec 9>"$cache/.build.lock"
  flock 9
  build_component kubernetes-node "$KUBERNETES_VERSION" "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  BUILD_CGO=1 BUILD_TAGS=seccomp build_component runc "$RUNC_VERSION" \
    "-X main.version=${RUNC_VERSION#v}" github.com/opencontainers/runc
  BUILD_TAGS="no_btrfs no_devmapper no_zfs" build_component containerd "$CONTAINERD_VERSION" \
    "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
  build_component cni-plugins "$CNI_PLUGINS_VERSION" "" \
    github.com/containernetworking/plugins/plugins/main/bridge \
    github.com/containernetworking/plugins/plugins/main/loopback \
    github.com/containernetworking/plugins/plugins/ipam/host-local \
    github.com/containernetworking/plugins/plugins/meta/portmap
  build_pause
  build_component coredns "$COREDNS_VERSION" "" github.com/coredns/coredns
  build_component ggcr "$GGCR_VERSION" "" github.com/google/go-containerregistry/cmd/crane
  build_component distribution "$DISTRIBUTION_VERSION" \
    "-X github.com/distribution/distribution/v3/version.version=$DISTRIBUTION_VERSION" \
    github.com/distribution/distribution/v3/cmd/registry
  build_component traefik "$TRAEFIK_VERSION" "-X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
    github.com/traefik/traefik/v3/cmd/traefik
  build_component metrics-server "$METRICS_SERVER_VERSION" \
    "-X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
    sigs.k8s.io/metrics-server/cmd/metrics-server
  # Without the builtinassets tag: the web UI's compiled assets are not in the module (they are built
  # with npm); the HTTP API, which is what the tests use, does not need them.
  build_component prometheus "$PROMETHEUS_VERSION" \
    "-X github.com/prometheus/common/version.Version=${PROMETHEUS_VERSION#v0.} -X github.com/prometheus/common/version.Branch=HEAD" \
    github.com/prometheus/prometheus/cmd/prometheus github.com/prometheus/prometheus/cmd/promtool
  flock -u 9
}

# runc and CoreDNS are module roots: go names their binaries after the module's last element.
after_build_coredns() { [ -x "$1/coredns" ]; }

# The pod sandbox's pause program is C in the Kubernetes module (build/pause/linux/pause.c): built
# statically, from the kubelet's module version, cached beside it.
build_pause() {
  local dir src
  dir=$(node_bin pause)
  [ -f "$dir/.complete" ] && return 0
  src=$(cd "$here/tools/kubernetes-node" && GOTOOLCHAIN=local go list -m -f '{{.Dir}}' k8s.io/kubernetes) \
    || die "cannot find the k8s.io/kubernetes module source"
  rm -rf "$dir" && mkdir -p "$dir"
  gcc -Os -static -Wall -DVERSION="$KUBERNETES_VERSION" -o "$dir/pause" "$src/build/pause/linux/pause.c" \
    && strip "$dir/pause" || die "building pause failed"
  touch "$dir/.complete"
}

node_bin() { # node_bin COMPONENT: the cache directory of a node component's binaries
  case $1 in
    kubernetes-node) bin_dir kubernetes-node "$KUBERNETES_VERSION" ;;
    pause) echo "$(bin_dir kubernetes-node "$KUBERNETES_VERSION")-pause" ;;
    runc) bin_dir runc "$RUNC_VERSION" ;;
    containerd) bin_dir containerd "$CONTAINERD_VERSION" ;;
    cni-plugins) bin_dir cni-plugins "$CNI_PLUGINS_VERSION" ;;
    coredns) bin_dir coredns "$COREDNS_VERSION" ;;
    ggcr) bin_dir ggcr "$GGCR_VERSION" ;;
    distribution) bin_dir distribution "$DISTRIBUTION_VERSION" ;;
    traefik) bin_dir traefik "$TRAEFIK_VERSION" ;;
    metrics-server) bin_dir metrics-server "$METRICS_SERVER_VERSION" ;;
    prometheus) bin_dir prometheus "$PROMETHEUS_VERSION" ;;
  esac
}

# ---------------------------------------------------------------- images

# image_push REF ROOTDIR CRANE_MUTATE_ARGS...: one layer from ROOTDIR, pushed to the local registry as
# REF (a path under the registry, e.g. pause:3.10), with its config set by `crane mutate`.
image_push() {
  local ref=$1 root=$2
  shift 2
  local crane tar
  crane=$(node_bin ggcr)/crane
  tar=$(mktemp --suffix=.tar.gz)
  tar --sort=name --mtime=@0 --numeric-owner -C "$root" -czf "$tar" .
  local out=$state/logs/images.log
  { "$crane" append --insecure -f "$tar" -t "127.0.0.1:$REGISTRY_PORT/$ref" \
    && "$crane" mutate --insecure --set-platform linux/amd64 "$@" -t "127.0.0.1:$REGISTRY_PORT/$ref" \
      "127.0.0.1:$REGISTRY_PORT/$ref"; } >>"$out" 2>&1 \
    || { rm -f "$tar"; tail -n 5 "$out" >&2; die "pushing the image $ref failed (log: $out)"; }
  rm -f "$tar"
}

# The node's own images: the pod sandbox (pause) and cluster DNS.
node_images() {
  local tmp
  tmp=$(mktemp -d)
  mkdir -p "$tmp/pause" "$tmp/coredns"
  cp "$(node_bin pause)/pause" "$tmp/pause/pause"
  image_push pause:3.10 "$tmp/pause" --entrypoint /pause --user 65535:65535
  cp "$(node_bin coredns)/coredns" "$tmp/coredns/coredns"
  image_push "coredns:${COREDNS_VERSION#v}" "$tmp/coredns" --entrypoint /coredns --user 65532:65532
  rm -rf "$tmp"
}

# ---------------------------------------------------------------- certificates and configuration

node_pki() {
  local pki=$state/pki client_ext="extendedKeyUsage=clientAuth"
  pki_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client_ext"
  pki_cert kube-proxy "/CN=system:kube-proxy" "$client_ext"
  pki_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client_ext"
  pki_cert kubelet-serving "/CN=$NODE_NAME" "$(printf '%s\n' "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME" \
    "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment")"
  chmod 600 "$pki"/*.key
  write_kubeconfig "$state/kubeconfigs/kubelet.kubeconfig" kubelet
  write_kubeconfig "$state/kubeconfigs/kube-proxy.kubeconfig" kube-proxy
}

node_config() {
  local n run pki=$state/pki
  n=$(node_dir)
  run=$(node_run_dir)
  mkdir -p "$n/containerd" "$n/cni/net.d" "$n/cni/networks" "$n/kubelet" "$n/pod-logs" "$n/sysctl" \
    "$n/certs.d/$REGISTRY_HOST" "$run"
  local runc_dir cni_dir
  runc_dir=$(node_bin runc)
  cni_dir=$(node_bin cni-plugins)
  cat >"$n/containerd/config.toml" <<EOF
version = 3
root = "$n/containerd/root"
state = "$run/state"

[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[metrics]
  address = ""

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$REGISTRY_HOST/pause:3.10"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$n/certs.d"

[plugins.'io.containerd.cri.v1.runtime']
  # The VM lacks CAP_SYS_RESOURCE: runc may not lower a process's oom_score_adj below its own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$runc_dir/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$cni_dir"]
    conf_dir = "$n/cni/net.d"
EOF
  # The registry alias: images named $REGISTRY_HOST/... come from the local registry, over plain HTTP
  # on loopback (it is the stand-in for Artifact Registry, which the node would reach over TLS).
  cat >"$n/certs.d/$REGISTRY_HOST/hosts.toml" <<EOF
server = "http://127.0.0.1:$REGISTRY_PORT"
[host."http://127.0.0.1:$REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$n/cni/net.d/10-kubundle.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kubundle",
  "plugins": [
    {
      "type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
               "dataDir": "$n/cni/networks"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # Pods resolve through CoreDNS; CoreDNS itself (dnsPolicy Default) gets this file: no upstream,
  # since this machine reaches no public DNS.
  : >"$n/resolv.conf"
  cat >"$n/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$run/containerd.sock
# cgroup v1 is deprecated in the kubelet; this machine has it, so say so instead of failing.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /kubundle
failSwapOn: false
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: cluster.local
resolvConf: $n/resolv.conf
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
podLogsDir: $n/pod-logs
maxPods: 110
serializeImagePulls: false
# A developer's disk is often fuller than a node's: evict only when it is really short.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
protectKernelDefaults: false
shutdownGracePeriod: 0s
EOF
  cat >"$n/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kubeconfigs/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
clusterCIDR: $POD_CIDR
nodePortAddresses: [$NODE_IP/32]
iptables: {localhostNodePorts: false}
# The VM may not change conntrack's global limits: leave them as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  cat >"$n/registry.yml" <<EOF
version: 0.1
log: {level: warn, formatter: text}
storage:
  filesystem: {rootdirectory: $n/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  debug: {addr: ""}
EOF
}

# ---------------------------------------------------------------- up

# node_record_fixed_paths: remember which machine-wide paths existed before the node started.
node_record_fixed_paths() {
  local p
  : >"$(node_dir)/fixed-paths-created"
  for p in "${NODE_FIXED_PATHS[@]}"; do
    [ -e "$p" ] || echo "$p" >>"$(node_dir)/fixed-paths-created"
  done
  cat /proc/sys/net/ipv4/ip_forward >"$(node_dir)/ip_forward.before"
}

node_up_network() {
  ip addr add "$NODE_IP/32" dev lo 2>/dev/null || ip addr show dev lo | grep -q " $NODE_IP/32 " \
    || die "cannot add $NODE_IP to the loopback interface"
}

node_start() {
  local n run
  n=$(node_dir)
  run=$(node_run_dir)
  echo "$state" >"$NODE_MACHINE_LOCK"

  start registry serve "$n/registry.yml"
  wait_for 30 "the registry" curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/"
  node_images

  # The mount namespace holder, then the bind mounts that absorb the kubelet's sysctl writes.
  START_PREFIX="unshare -m --propagation private" start nodens infinity
  local holder s
  holder=$(pid_of nodens)
  wait_for 10 "the node's mount namespace" test "$(readlink "/proc/$holder/ns/mnt")" != "$(readlink /proc/self/ns/mnt)"
  for s in "${NODE_SYSCTLS[@]}"; do
    cat "/proc/sys/$s" >"$n/sysctl/${s//\//.}"
    nsenter -t "$holder" -m -- mount --bind "$n/sysctl/${s//\//.}" "/proc/sys/$s"
  done
  # The kubelet's cgroup root must exist in every hierarchy it uses.
  local h
  for h in /sys/fs/cgroup/*/; do
    case $h in */unified/) continue ;; esac
    mkdir -p "$h/kubundle"
  done

  # The socket can exist before containerd serves on it (a leftover one, or one not yet listening):
  # the kubelet, dialing it then, exits on "connection refused". So a leftover socket is removed,
  # and the kubelet starts once containerd answers on it.
  rm -f "$run/containerd.sock" "$run/containerd.sock.ttrpc"
  PATH="$(node_bin containerd):$(node_bin runc):$PATH" START_PREFIX="nsenter -t $holder -m --" \
    start containerd --config "$n/containerd/config.toml"
  wait_for 30 "containerd to answer" \
    nsenter -t "$holder" -m -- "$(node_bin containerd)/ctr" --address "$run/containerd.sock" version
  START_PREFIX="nsenter -t $holder -m --" start kubelet --config="$n/kubelet/config.yaml" \
    --kubeconfig="$state/kubeconfigs/kubelet.kubeconfig" --root-dir="$n/kubelet/root" \
    --cert-dir="$n/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --node-labels="$NODE_TAINT_KEY=true,type=real" --v=1
  start kube-proxy --config="$n/kube-proxy.yaml"
  wait_for 60 "the real node $NODE_NAME to be Ready" node_ready
  start loadbalancer "$here/loadbalancer.sh" "$state" "$LB_POOL_PREFIX" "$(k8s_bin)/kubectl"
  coredns_manifests | kubectl apply -f - >/dev/null
  gateway_start
  metrics_server_start
  prometheus_start
}

# The Gateway API and Ingress controller: Traefik as a host process (it dials the pods' IPs on the
# node's bridge), with its own ServiceAccount's token and least privilege, serving the GatewayClass
# traefik, the Gateway $GATEWAY_NAMESPACE/$GATEWAY_NAME (address $GATEWAY_IP, listener http on
# port 80 for routes of every namespace) and the IngressClass traefik (not the default class:
# Ingresses without a class are left to the tests that play a controller). Its request metrics
# (traefik_service_requests_total and the rest, one `service` label per Service and port:
# NAMESPACE-NAME-http-PORT@kubernetesgateway) are on http://127.0.0.1:$TRAEFIK_PING_PORT/metrics,
# and the local Prometheus always scrapes them (monitoring.sh).
gateway_start() {
  local n=$state/node/traefik api="https://$APISERVER_HOST:$APISERVER_PORT"
  mkdir -p "$n"
  ip addr add "$GATEWAY_IP/32" dev lo 2>/dev/null || ip addr show dev lo | grep -q " $GATEWAY_IP/32 " \
    || die "cannot add $GATEWAY_IP to the loopback interface"
  local gateway=() ingress=()
  if [ "${KUBUNDLE_GATEWAY_API:-1}" != 0 ]; then
    gateway=(--providers.kubernetesgateway=true --providers.kubernetesgateway.endpoint="$api"
      --providers.kubernetesgateway.token="$n/token" --providers.kubernetesgateway.certauthfilepath="$state/pki/ca.crt"
      --providers.kubernetesgateway.statusaddress.ip="$GATEWAY_IP")
  fi
  ingress=(--providers.kubernetesingress=true --providers.kubernetesingress.endpoint="$api"
    --providers.kubernetesingress.token="$n/token" --providers.kubernetesingress.certauthfilepath="$state/pki/ca.crt"
    --providers.kubernetesingress.ingressclass=traefik --providers.kubernetesingress.ingressendpoint.ip="$GATEWAY_IP")
  { gateway_manifests; if [ ${#gateway[@]} -gt 0 ]; then gateway_api_manifests; fi; } \
    | kubectl apply --server-side --force-conflicts -f - >/dev/null
  wait_for 30 "the gateway controller's token" gateway_token "$n/token"
  # websecure terminates TLS for every router on it (as Traefik's own Helm chart sets it up): an
  # Ingress's spec.tls then serves HTTPS on 443 with its secret's certificate, HTTP stays on 80.
  start traefik --global.checknewversion=false --global.sendanonymoususage=false --log.level=INFO \
    --entrypoints.web.address="$GATEWAY_IP:80" \
    --entrypoints.websecure.address="$GATEWAY_IP:443" --entrypoints.websecure.http.tls=true \
    --entrypoints.traefik.address="127.0.0.1:$TRAEFIK_PING_PORT" --ping=true --ping.entrypoint=traefik \
    --metrics.prometheus=true --metrics.prometheus.entrypoint=traefik \
    "${gateway[@]}" "${ingress[@]}"
  if [ ${#gateway[@]} -eq 0 ]; then
    wait_for 60 "the ingress controller" curl -sf "http://127.0.0.1:$TRAEFIK_PING_PORT/ping"
    return 0
  fi
  wait_for 60 "the Gateway $GATEWAY_NAMESPACE/$GATEWAY_NAME to be programmed" gateway_ready
}

gateway_token() { # gateway_token FILE: the ServiceAccount's token, once the token controller wrote it
  local token
  token=$(kubectl -n "$GATEWAY_NAMESPACE" get secret traefik-token -o jsonpath='{.data.token}' 2>/dev/null) || return 1
  [ -n "$token" ] || return 1
  base64 -d <<<"$token" >"$1.tmp" && chmod 600 "$1.tmp" && mv "$1.tmp" "$1"
}

gateway_ready() {
  curl -sf "http://127.0.0.1:$TRAEFIK_PING_PORT/ping" >/dev/null || return 1
  [ "$(kubectl -n "$GATEWAY_NAMESPACE" get gateway "$GATEWAY_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Programmed")].status}' 2>/dev/null)" = True ]
}

gateway_manifests() {
  cat <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $GATEWAY_NAMESPACE}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: traefik, namespace: $GATEWAY_NAMESPACE}
---
apiVersion: v1
kind: Secret
type: kubernetes.io/service-account-token
metadata:
  name: traefik-token
  namespace: $GATEWAY_NAMESPACE
  annotations: {kubernetes.io/service-account.name: traefik}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "kubundle-local:traefik"}
rules:
- apiGroups: [""]
  resources: [namespaces, nodes]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [services, secrets, configmaps]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [update]
- apiGroups: [gateway.networking.k8s.io]
  resources: [gatewayclasses, gateways, httproutes, grpcroutes, referencegrants, backendtlspolicies]
  verbs: [get, list, watch]
- apiGroups: [gateway.networking.k8s.io]
  resources: [gatewayclasses/status, gateways/status, httproutes/status, grpcroutes/status, backendtlspolicies/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubundle-local:traefik"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubundle-local:traefik"}
subjects: [{kind: ServiceAccount, name: traefik, namespace: $GATEWAY_NAMESPACE}]
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: traefik}
spec: {controller: traefik.io/ingress-controller}
EOF
}

gateway_api_manifests() {
  cat <<EOF
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: traefik}
spec: {controllerName: traefik.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: $GATEWAY_NAME, namespace: $GATEWAY_NAMESPACE}
spec:
  gatewayClassName: traefik
  listeners:
  - name: http
    protocol: HTTP
    port: 80
    allowedRoutes: {namespaces: {from: All}}
EOF
}

node_ready() {
  [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

coredns_ready() {
  [ "$(kubectl -n kube-system get deployment coredns -o jsonpath='{.status.availableReplicas}')" = 1 ]
}

# Cluster DNS, as kubeadm installs it (fewer plugins: there is no upstream to forward to).
coredns_manifests() {
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [services, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:1053 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 30
        loop
        reload
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      priorityClassName: system-cluster-critical
      nodeSelector: {$NODE_TAINT_KEY: "true"}
      tolerations: [{key: $NODE_TAINT_KEY, operator: Exists, effect: NoSchedule}]
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: coredns
        image: $REGISTRY_HOST/coredns:${COREDNS_VERSION#v}
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 1053, protocol: UDP}
        - {name: dns-tcp, containerPort: 1053, protocol: TCP}
        resources:
          requests: {cpu: 50m, memory: 40Mi}
          limits: {memory: 128Mi}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        livenessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 10}
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  clusterIP: $CLUSTER_DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 1053, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 1053, protocol: TCP}
EOF
}

# ---------------------------------------------------------------- down

# node_down: stop the node's processes and undo everything it did to the machine. Safe to run on a
# half-started node and twice.
node_down() {
  local n run
  n=$(node_dir)
  run=$(node_run_dir)
  stop_one prometheus
  stop_one metrics-server
  stop_one traefik
  stop_one loadbalancer
  stop_one kubelet
  # The containers' processes, then the shims that watched them (containerd does not stop them).
  node_kill_cgroup_tree
  node_kill_by_exe "$(node_bin containerd)/containerd-shim-runc-v2"
  stop_one containerd
  stop_one kube-proxy
  # Leaving the mount namespace empty releases every mount in it (rootfs overlays, volumes, sysctls).
  stop_one nodens
  stop_one registry
  node_remove_cgroups
  node_clean_iptables
  ip link del "$CNI_BRIDGE" 2>/dev/null || true
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  ip addr del "$GATEWAY_IP/32" dev lo 2>/dev/null || true
  local a
  for a in $(ip -4 -o addr show dev lo | awk '{print $4}' | grep "^$LB_POOL_PREFIX\." || true); do
    ip addr del "$a" dev lo 2>/dev/null || true
  done
  if [ -f "$n/ip_forward.before" ]; then cat "$n/ip_forward.before" >/proc/sys/net/ipv4/ip_forward; fi
  if [ -f "$n/fixed-paths-created" ]; then
    local p
    while read -r p; do [ -n "$p" ] && rm -rf "$p"; done <"$n/fixed-paths-created"
  fi
  rm -rf "$run"
  [ "$(cat "$NODE_MACHINE_LOCK" 2>/dev/null)" = "$state" ] && rm -f "$NODE_MACHINE_LOCK"
  return 0
}

node_kill_cgroup_tree() {
  local round pids
  for round in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(cat /sys/fs/cgroup/pids/kubundle/cgroup.procs $(find /sys/fs/cgroup/pids/kubundle -mindepth 1 \
      -name cgroup.procs 2>/dev/null) 2>/dev/null | sort -u || true)
    [ -z "$pids" ] && return 0
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.3
  done
  log "warning: processes left in the node's cgroups: $pids"
}

node_kill_by_exe() {
  local exe=$1 p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/exe" 2>/dev/null)" = "$exe" ] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  return 0
}

node_remove_cgroups() {
  local h
  for h in /sys/fs/cgroup/*/kubundle; do
    [ -d "$h" ] || continue
    find "$h" -depth -mindepth 0 -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# Rules that kube-proxy (KUBE-*) and the CNI plugins (CNI-*) added, in every table, both families:
# every other rule is restored as it was.
node_clean_iptables() {
  local save restore rules
  for save in iptables-save ip6tables-save; do
    restore=${save%-save}-restore
    command -v "$save" >/dev/null || continue
    rules=$("$save" 2>/dev/null) || continue
    if grep -qE '(KUBE|CNI)-' <<<"$rules"; then
      grep -vE '(^:(KUBE|CNI)-)|(-j (KUBE|CNI)-)|(^-A (KUBE|CNI)-)' <<<"$rules" | "$restore" \
        || log "warning: could not remove the node's $save rules"
    fi
  done
}

node_status_line() {
  kubectl get node "$NODE_NAME" -o wide 2>/dev/null | tail -n 1 || true
}

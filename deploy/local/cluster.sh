#!/usr/bin/env bash
# A local Kubernetes control plane made of real components, run as plain processes on 127.0.0.1:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok for fake nodes whose pods
# become Running and Ready; beside them, where the machine allows, one real node that runs containers
# (containerd, runc, kubelet, kube-proxy, CNI, CoreDNS, a local OCI registry: see node.sh). Every binary is built from its Go module through the Go module proxy
# (versions in deploy/local/versions.env, wrapper modules in deploy/local/tools/) and cached outside
# the repository, so only the first `up` on a machine (or after a version change) builds anything.
#
# Usage: deploy/local/cluster.sh <command>
#   up               build what is missing, start the cluster (or reuse the running one), wait until usable
#   env              print shell lines to eval: KUBECONFIG and a PATH with kubectl and helm
#   status           show each component's process and health, and the nodes
#   logs [component] list the log files, or print one component's log (etcd, kube-apiserver, ...)
#   down             stop the processes this script started and remove the cluster state
#   restart COMPONENT [--down SECONDS]
#                    stop one component (SIGTERM), keep all state, wait SECONDS (default 0), start it
#                    again with the same flags and wait until it serves: fault injection for tests
#   build            only build (or find in the cache) the binaries, print their directories
#   build-node       build (or find in the cache) the real node's binaries (runc, containerd, CNI
#                    plugins, kubelet, kube-proxy, pause, CoreDNS, crane, registry), print their
#                    directories. Needs libseccomp-dev (runc's seccomp support) and gcc.
#   registry         print the local registry's address (127.0.0.1:PORT) and the name the node pulls by
#   image-push REF ROOTDIR [CRANE_MUTATE_FLAGS...]
#                    push ROOTDIR as a one-layer linux/amd64 image REF (NAME:TAG) to the local
#                    registry, its config set by `crane mutate` flags (--entrypoint, --user, ...)
#   real-namespace NAME
#                    create (or update) namespace NAME so that its pods run on the real node and
#                    its LoadBalancer Services get an address from the load-balancer stand-in
#
# Environment:
#   KUBUNDLE_CLUSTER_DIR   cluster state (certificates, kubeconfig, data, logs, PIDs);
#                          default: <repo>/.cluster, so every checkout has its own cluster
#   KUBUNDLE_CACHE_DIR     built binaries; default: ${XDG_CACHE_HOME:-~/.cache}/kubundle
#   KUBUNDLE_NODES         number of kwok nodes (default 8)
#   KUBUNDLE_NODE_PODS     pods each node accepts (default 1500; 8 x 1500 = 12,000 pods)
#   KUBUNDLE_PROFILING     1: kube-apiserver serves /debug/pprof (for profiling the benchmark)
#   KUBUNDLE_GATEWAY_API   1 (default): install the Gateway API's standard CRDs; 0: leave them out
#   KUBUNDLE_REAL_NODE     auto (default): a real node where the machine allows it (root, cgroups,
#                          iptables, no other real node on the machine); 0: kwok nodes only;
#                          1: fail when a real node is not possible
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

state=${KUBUNDLE_CLUSTER_DIR:-$repo/.cluster}
cache=${KUBUNDLE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubundle}
nodes=${KUBUNDLE_NODES:-8}
node_pods=${KUBUNDLE_NODE_PODS:-1500}
# Components in start order; `down` stops them in reverse.
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# Bump when the way binaries are built changes, so cached builds are redone.
build_recipe=1

log() { printf '%s [cluster] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=node.sh
source "$here/node.sh"
# shellcheck source=monitoring.sh
source "$here/monitoring.sh"

# load_components: the control plane, and the real node's processes when this cluster has one.
load_components() {
  components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
  if [ -f "$state/node.env" ]; then
    components+=(registry nodens containerd kubelet kube-proxy loadbalancer traefik metrics-server prometheus)
  fi
  return 0
}

# ---------------------------------------------------------------- building

# bin_dir COMPONENT VERSION: the cache directory for one component's binaries. The key covers the
# version, the wrapper module's go.mod/go.sum, the Go version and the build recipe.
bin_dir() {
  local comp=$1 version=$2 key
  key=$( { cat "$here/tools/$comp/go.mod" "$here/tools/$comp/go.sum"; go env GOVERSION; echo "$build_recipe"; } \
    | sha256sum | cut -c1-12)
  echo "$cache/bin/$comp-$version-$key"
}

# build_component COMPONENT VERSION LDFLAGS PACKAGE...: go build the packages into the cache, once.
build_component() {
  local comp=$1 version=$2 ldflags=$3
  shift 3
  local dir tmp start
  dir=$(bin_dir "$comp" "$version")
  [ -f "$dir/.complete" ] && return 0
  mkdir -p "$cache/bin"
  tmp=$(mktemp -d "$cache/bin/.build-$comp.XXXXXX")
  start=$SECONDS
  log "building $comp $version (first time on this machine; cached in $dir)"
  # BUILD_CGO=1 and BUILD_TAGS for the one component that needs them (runc: libseccomp).
  if ! (cd "$here/tools/$comp" && CGO_ENABLED=${BUILD_CGO:-0} GOTOOLCHAIN=local GOFLAGS="${GOFLAGS:-} -mod=readonly" \
      go build -trimpath -tags "${BUILD_TAGS:-}" -ldflags "-s -w $ldflags" -o "$tmp/" "$@"); then
    rm -rf "$tmp"
    die "building $comp failed (see the go output above)"
  fi
  # A component's finishing step (after_build_<component> TMPDIR), if it has one, runs before the
  # build is published: a cache entry with .complete is always whole.
  if declare -F "after_build_$comp" >/dev/null && ! "after_build_$comp" "$tmp"; then
    rm -rf "$tmp"
    die "finishing the build of $comp failed"
  fi
  chmod 755 "$tmp"
  touch "$tmp/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "built $comp in $((SECONDS - start))s"
}

# The version stamp of Kubernetes binaries (what `kubectl version` and the node report).
k8s_ldflags() {
  local k8s_minor=${KUBERNETES_VERSION#v1.} flags="" pkg
  k8s_minor=${k8s_minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
    flags+=" -X $pkg.gitCommit=0000000000000000000000000000000000000000 -X $pkg.gitTreeState=clean"
    flags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

build_all() {
  command -v go >/dev/null || die "go is not installed; it builds the control plane's components"
  # Builds are serialised across concurrent callers (the demo and the tests may start together).
  mkdir -p "$cache"
  exec 9>"$cache/.build.lock"
  flock 9

  build_component kubernetes "$KUBERNETES_VERSION" "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl

  build_component etcd "$ETCD_VERSION" "-X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
    go.etcd.io/etcd/server/v3
  build_component kwok "$KWOK_VERSION" "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    sigs.k8s.io/kwok/cmd/kwok
  # Not part of the cluster: the chaos soak (tests/soak.rs) puts it between the operator and the
  # API server.
  build_component toxiproxy "$TOXIPROXY_VERSION" "-X github.com/Shopify/toxiproxy/v2.Version=${TOXIPROXY_VERSION#v}" \
    github.com/Shopify/toxiproxy/v2/cmd/server

  local helm_major=${HELM_VERSION%%.*}
  build_component helm "$HELM_VERSION" "-X helm.sh/helm/$helm_major/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/$helm_major/cmd/helm"

  flock -u 9
}

# The etcd main package is the module root go.etcd.io/etcd/server/v3, so go names the binary "server".
after_build_etcd() { mv "$1/server" "$1/etcd"; }
# Toxiproxy's server is cmd/server.
after_build_toxiproxy() { mv "$1/server" "$1/toxiproxy-server"; }

# kwok's behaviour is configured by Stage objects shipped in the same module: nodes become Ready and
# keep a heartbeat lease, scheduled pods become Running and Ready, deleted pods go away.
after_build_kwok() {
  local src
  src=$(cd "$here/tools/kwok" && GOTOOLCHAIN=local go list -m -f '{{.Dir}}' sigs.k8s.io/kwok) || return 1
  mkdir -p "$1/stages"
  cp "$src"/kustomize/stage/node/fast/node-initialize.yaml \
    "$src"/kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    "$src"/kustomize/stage/pod/fast/pod-ready.yaml \
    "$src"/kustomize/stage/pod/fast/pod-complete.yaml \
    "$src"/kustomize/stage/pod/fast/pod-delete.yaml "$1/stages/" || return 1
  chmod 644 "$1"/stages/*.yaml
}

k8s_bin() { bin_dir kubernetes "$KUBERNETES_VERSION"; }
binary_of() {
  case $1 in
    etcd) echo "$(bin_dir etcd "$ETCD_VERSION")/etcd" ;;
    kwok) echo "$(bin_dir kwok "$KWOK_VERSION")/kwok" ;;
    registry) echo "$(node_bin distribution)/registry" ;;
    containerd) echo "$(node_bin containerd)/containerd" ;;
    kubelet | kube-proxy) echo "$(node_bin kubernetes-node)/$1" ;;
    nodens) command -v sleep ;;
    loadbalancer) command -v bash ;;
    traefik) echo "$(node_bin traefik)/traefik" ;;
    metrics-server) echo "$(node_bin metrics-server)/metrics-server" ;;
    prometheus) echo "$(node_bin prometheus)/prometheus" ;;
    *) echo "$(k8s_bin)/$1" ;;
  esac
}
kubectl() { "$(k8s_bin)/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

# ---------------------------------------------------------------- processes

# Local ports of every TCP socket on this machine, in any state, from /proc (no extra tools needed).
used_ports() {
  local _sl local_addr _rest
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _sl local_addr _rest; do
    [[ $local_addr == *:* ]] && echo $((16#${local_addr##*:}))
  done | sort -un
}

# free_ports N: N distinct ports that no socket uses, chosen at random so that a second cluster
# (another checkout, a test's own cluster) or a stale one does not collide with this one.
# They come from below the kernel's ephemeral range (ip_local_port_range, 32768 by default) and below
# the NodePort range: a port handed out by the kernel for `bind(0)` or an outgoing connection between
# choosing and binding can then never take one of ours (that race once failed a CI run).
free_ports() {
  local want=$1 taken port out=() low=10000 high=30000 eph_low _eph_high
  read -r eph_low _eph_high </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_low=32768
  [ "$eph_low" -lt "$high" ] && high=$eph_low
  [ "$high" -gt $((low + 1000)) ] || die "ip_local_port_range starts at $eph_low: no room for the cluster's ports below it"
  taken=" $(used_ports | tr '\n' ' ') "
  while [ "${#out[@]}" -lt "$want" ]; do
    port=$((low + (RANDOM * 32768 + RANDOM) % (high - low)))
    [[ $taken == *" $port "* ]] && continue
    taken+="$port "
    out+=("$port")
  done
  echo "${out[@]}"
}

# start COMPONENT ARGS...: run the component in the background with its log and PID file.
# START_PREFIX: a launcher that execs the component (unshare, nsenter), split on spaces.
start() {
  local comp=$1
  shift
  local bin prefix=()
  bin=$(binary_of "$comp")
  [ -n "${START_PREFIX:-}" ] && read -r -a prefix <<<"$START_PREFIX"
  # fds 8 and 9 hold this script's locks: a daemon must not inherit them (it would hold them forever).
  nohup "${prefix[@]}" "$bin" "$@" >>"$state/logs/$comp.log" 2>&1 </dev/null 8>&- 9>&- &
  local pid=$!
  echo "$pid $bin" >"$state/pids/$comp"
  # The flags, for `restart` (one shell-quoted word each), and the launcher.
  mkdir -p "$state/args"
  printf '%q\n' "$@" >"$state/args/$comp"
  echo "${START_PREFIX:-}" >"$state/args/$comp.prefix"
  if [ "${#prefix[@]}" -gt 0 ]; then
    # The launcher execs the component: until it has, the process is not yet "running" it.
    local i
    for i in $(seq 50); do
      [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$bin" ] && break
      sleep 0.1
    done
  fi
}

# running COMPONENT: its recorded process is alive and still runs the recorded binary (a PID can be
# reused by an unrelated process after a reboot; that one must never be signalled).
running() {
  local file=$state/pids/$1 pid bin exe
  [ -f "$file" ] || return 1
  read -r pid bin <"$file"
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ "${exe% (deleted)}" = "$bin" ]
}

pid_of() { cut -d' ' -f1 "$state/pids/$1"; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds; on timeout, fail and point at logs.
wait_for() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "timed out after ${timeout}s waiting for $what; logs: $state/logs/"
    fi
    local comp
    for comp in "${components[@]}"; do
      if [ -f "$state/pids/$comp" ] && ! running "$comp"; then
        tail -n 30 "$state/logs/$comp.log" >&2 || true
        die "$comp exited while waiting for $what; log: $state/logs/$comp.log"
      fi
    done
    sleep 0.5
  done
}

# ---------------------------------------------------------------- certificates and kubeconfigs

pki_cert() { # pki_cert NAME SUBJECT EXTENSIONS: an EC P-256 key and a certificate signed by the CA
  local name=$1 subject=$2 ext=$3 pki=$state/pki
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 365 -out "$pki/$name.crt" -extfile <(printf '%s\n' "$ext") 2>/dev/null
  rm -f "$pki/$name.csr"
}

make_pki() {
  local pki=$state/pki
  mkdir -p "$pki"
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 365 -subj "/CN=kubundle-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  pki_cert apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
    "subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
    "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment")"
  local client_ext="extendedKeyUsage=clientAuth"
  # The admin is in system:masters; the controller manager and the scheduler use the identities
  # that the built-in RBAC roles are bound to, as in a kubeadm cluster.
  pki_cert admin "/O=system:masters/CN=kubundle-admin" "$client_ext"
  pki_cert controller-manager "/CN=system:kube-controller-manager" "$client_ext"
  pki_cert scheduler "/CN=system:kube-scheduler" "$client_ext"
  pki_cert kwok "/O=system:masters/CN=kwok" "$client_ext"
  # Service-account token signing key pair.
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

write_kubeconfig() { # write_kubeconfig FILE USER
  local file=$1 user=$2 pki=$state/pki
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kubundle-local
  cluster:
    server: https://$APISERVER_HOST:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: kubundle-local
  context: {cluster: kubundle-local, user: $user}
current-context: kubundle-local
EOF
  chmod 600 "$file"
}

# ---------------------------------------------------------------- commands

# The Gateway API's standard CRDs (HTTPRoute, Gateway, GatewayClass, ReferenceGrant, GRPCRoute),
# from its Go module at GATEWAY_API_VERSION: the module proxy is the download site here.
install_gateway_api() {
  [ "${KUBUNDLE_GATEWAY_API:-1}" = 0 ] && return 0
  local dir f
  dir=$(cd "$cache" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/config/crd/standard" ] || die "cannot download sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION from the Go module proxy"
  for f in gatewayclasses gateways httproutes referencegrants grpcroutes backendtlspolicies; do
    kubectl apply --server-side -f "$dir/config/crd/standard/gateway.networking.k8s.io_$f.yaml" >/dev/null
  done
  wait_for 60 "the Gateway API CRDs" kubectl wait --for=condition=Established crd/httproutes.gateway.networking.k8s.io --timeout=5s
}

cluster_healthy() {
  local comp
  load_components
  for comp in "${components[@]}"; do running "$comp" || return 1; done
  kubectl get --raw /readyz >/dev/null 2>&1
}

# stop_one COMPONENT: SIGTERM, then SIGKILL after 15 s; forget its PID.
stop_one() {
  local comp=$1 pid
  [ -f "$state/pids/$comp" ] || return 0
  if running "$comp"; then
    pid=$(pid_of "$comp")
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while running "$comp" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if running "$comp"; then
      log "$comp (pid $pid) ignored SIGTERM for 15s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      while running "$comp"; do sleep 0.1; done
    fi
  fi
  rm -f "$state/pids/$comp"
}

stop_processes() {
  local i
  for ((i = ${#components[@]} - 1; i >= 0; i--)); do
    stop_one "${components[$i]}"
  done
}

# restart COMPONENT [--down SECONDS]
cmd_restart() {
  local comp=${1:-} down=0
  [ -n "$comp" ] || die "usage: $0 restart COMPONENT [--down SECONDS]; components: ${components[*]}"
  shift
  if [ "${1:-}" = --down ]; then down=${2:?--down needs a number of seconds}; fi
  load_components
  [ "$comp" != nodens ] || die "nodens holds the node's mount namespace; restart containerd or the kubelet instead"
  [[ " ${components[*]} " == *" $comp "* ]] || die "unknown component '$comp'; components: ${components[*]}"
  [ -f "$state/args/$comp" ] || die "no recorded flags for $comp in $state (is the cluster up?)"
  exec 8>"$state.lock"
  flock 8
  # shellcheck source=/dev/null
  source "$state/ports.env"
  local args=() word
  while IFS= read -r word; do eval "args+=($word)"; done <"$state/args/$comp"
  local t0=$SECONDS
  log "stopping $comp"
  stop_one "$comp"
  [ "$down" -gt 0 ] && { log "$comp down for ${down}s"; sleep "$down"; }
  log "starting $comp with its recorded flags"
  START_PREFIX=$(cat "$state/args/$comp.prefix" 2>/dev/null || true)
  [ "$comp" = containerd ] && PATH="$(node_bin containerd):$(node_bin runc):$PATH"
  START_PREFIX=$START_PREFIX start "$comp" "${args[@]}"
  case $comp in
    etcd) wait_for 60 "etcd" curl -sf "http://127.0.0.1:$ETCD_METRICS_PORT/health" ;;
    kube-apiserver) wait_for 120 "kube-apiserver /readyz" kubectl get --raw /readyz ;;
    *) sleep 1; running "$comp" || die "$comp exited after restart; log: $state/logs/$comp.log" ;;
  esac
  log "$comp restarted ($((SECONDS - t0))s)"
}

cmd_down() {
  if [ ! -d "$state" ]; then
    log "no cluster state at $state; nothing to stop"
    return 0
  fi
  load_components
  [ -f "$state/node.env" ] && node_down
  stop_processes
  rm -rf "$state"
  log "stopped; removed $state"
}

node_manifests() {
  local i
  for ((i = 0; i < nodes; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    node.kubernetes.io/instance-type: kwok
    type: kwok
status:
  allocatable: {cpu: "1000", memory: 4Ti, pods: "$node_pods", ephemeral-storage: 10Ti}
  capacity: {cpu: "1000", memory: 4Ti, pods: "$node_pods", ephemeral-storage: 10Ti}
EOF
  done
}

nodes_ready() {
  local ready
  ready=$(kubectl get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' \
    | grep -c '^True$' || true)
  [ "$ready" -ge "$nodes" ]
}

cmd_up() {
  local t0=$SECONDS
  build_all
  local build_s=$((SECONDS - t0))
  mkdir -p "$(dirname "$state")"
  exec 8>"$state.lock"
  flock 8

  if [ -d "$state" ]; then
    if cluster_healthy; then
      log "cluster already running at $(grep server: "$state/kubeconfig" | awk '{print $2}') (reused) in $((SECONDS - t0))s"
      return 0
    fi
    log "found a stale or broken cluster in $state; stopping what is left of it and starting anew"
    load_components
    [ -f "$state/node.env" ] && node_down
    stop_processes
    rm -rf "$state"
  fi
  local real_node=0
  if real_node_wanted; then
    real_node=1
    local tb=$SECONDS
    build_node
    build_s=$((build_s + SECONDS - tb))
  fi
  mkdir -p "$state/logs" "$state/pids" "$state/kubeconfigs"
  local t_start=$SECONDS
  # With a real node, the API server listens on the node's address (pods reach it there through the
  # `kubernetes` Service); without one, on loopback only.
  APISERVER_HOST=127.0.0.1
  if [ "$real_node" = 1 ]; then
    APISERVER_HOST=$NODE_IP
    echo "NODE_IP=$NODE_IP" >"$state/node.env"
    mkdir -p "$(node_dir)"
    node_record_fixed_paths
    node_up_network
  fi
  load_components

  local ports
  read -r -a ports <<<"$(free_ports 16)"
  cat >"$state/ports.env" <<EOF
APISERVER_HOST=$APISERVER_HOST
REGISTRY_PORT=${ports[8]}
KUBELET_PORT=${ports[9]}
KUBELET_HEALTHZ_PORT=${ports[10]}
PROXY_HEALTHZ_PORT=${ports[11]}
PROXY_METRICS_PORT=${ports[12]}
TRAEFIK_PING_PORT=${ports[13]}
METRICS_SERVER_PORT=${ports[14]}
PROMETHEUS_PORT=${ports[15]}
ETCD_CLIENT_PORT=${ports[0]}
ETCD_PEER_PORT=${ports[1]}
ETCD_METRICS_PORT=${ports[2]}
APISERVER_PORT=${ports[3]}
CONTROLLER_MANAGER_PORT=${ports[4]}
SCHEDULER_PORT=${ports[5]}
KWOK_PORT=${ports[6]}
EOF
  # shellcheck source=/dev/null
  source "$state/ports.env"

  make_pki
  write_kubeconfig "$state/kubeconfig" admin
  write_kubeconfig "$state/kubeconfigs/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "$state/kubeconfigs/scheduler.kubeconfig" scheduler
  write_kubeconfig "$state/kubeconfigs/kwok.kubeconfig" kwok
  local pki=$state/pki
  local node_flags=(--endpoint-reconciler-type=none)
  if [ "$real_node" = 1 ]; then
    node_pki
    monitoring_pki
    node_config
    # shellcheck disable=SC2207
    node_flags=($(monitoring_apiserver_flags) --endpoint-reconciler-type=lease
      --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt"
      --kubelet-client-key="$pki/apiserver-kubelet-client.key"
      --kubelet-certificate-authority="$pki/ca.crt"
      --kubelet-preferred-address-types=InternalIP,Hostname)
  fi

  start etcd --name=kubundle --data-dir="$state/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="kubundle=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls="http://127.0.0.1:$ETCD_METRICS_PORT" \
    --unsafe-no-fsync --quota-backend-bytes=8589934592 --log-level=warn
  wait_for 60 "etcd" curl -sf "http://127.0.0.1:$ETCD_METRICS_PORT/health"

  # The "kubernetes" Service's endpoints cannot hold a loopback address (Endpoints validation): without
  # a real node the endpoint reconciler is off, since no pod dials that Service.
  # PodNodeSelector and PodTolerationRestriction let a namespace send its pods to the real node
  # (`real-namespace`); they do nothing in namespaces without their annotations.
  # The audit log records the writes of ServiceAccounts in namespace kubundle-audited only (tests
  # run operator replicas under those identities to see who wrote what, and when: a leader that
  # lost its Lease must write nothing); nothing else is logged, so it costs the rest nothing.
  # It rotates at 100 MB and keeps ten old files: the hour-long soak writes more than 100 MB, and
  # its checks read every file (tests/support/audit.rs).
  cat >"$state/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts:kubundle-audited"]
    verbs: [create, update, patch, delete, deletecollection]
  - level: None
POLICY
  start kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --audit-policy-file="$state/audit-policy.yaml" --audit-log-path="$state/logs/audit.log" \
    --audit-log-format=json --audit-log-maxsize=100 --audit-log-maxbackup=10 \
    --bind-address="$APISERVER_HOST" --advertise-address="$APISERVER_HOST" --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --service-node-port-range=30000-32767 \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-admission-plugins=PodNodeSelector,PodTolerationRestriction "${node_flags[@]}" \
    --profiling="$([ "${KUBUNDLE_PROFILING:-0}" = 1 ] && echo true || echo false)"
  wait_for 120 "kube-apiserver /readyz" kubectl get --raw /readyz

  # QPS: the defaults (20 for the controller manager, 50 for the scheduler) would make these
  # components, not the operator under test, the bottleneck when thousands of pods start at once.
  # Node grace period 2 m (default 50 s): kwok marks a pod Ready once, so when the node lifecycle
  # controller marks pods NotReady after missed heartbeats (the fault tests stop the API server for
  # 60 s, and kwok cannot renew its leases meanwhile) they would stay NotReady for good, where a
  # real kubelet would report them Ready again.
  # Autoscalers: synced every 5 s (default 15 s) and scaled down after 30 s without a higher
  # recommendation (default 5 min), so a test sees the scale-down a load's end allows; production
  # clusters keep the defaults.
  start kube-controller-manager --kubeconfig="$state/kubeconfigs/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$state/kubeconfigs/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$state/kubeconfigs/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$CONTROLLER_MANAGER_PORT" --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
    --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
    --kube-api-qps=200 --kube-api-burst=400 --profiling=false --node-monitor-grace-period=2m \
    --horizontal-pod-autoscaler-sync-period=5s --horizontal-pod-autoscaler-downscale-stabilization=30s
  start kube-scheduler --kubeconfig="$state/kubeconfigs/scheduler.kubeconfig" \
    --authentication-kubeconfig="$state/kubeconfigs/scheduler.kubeconfig" \
    --authorization-kubeconfig="$state/kubeconfigs/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --leader-elect=false \
    --kube-api-qps=200 --kube-api-burst=400 --profiling=false
  local stages=() f
  for f in "$(bin_dir kwok "$KWOK_VERSION")"/stages/*.yaml; do stages+=(--config="$f"); done
  start kwok --kubeconfig="$state/kubeconfigs/kwok.kubeconfig" "${stages[@]}" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.1/16 --node-ip=127.0.0.1 --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:$KWOK_PORT"

  node_manifests | kubectl apply -f - >/dev/null
  wait_for 120 "$nodes kwok nodes to be Ready" nodes_ready
  wait_for 120 "the default ServiceAccount in namespace default" kubectl get serviceaccount default -n default
  install_gateway_api
  install_monitoring_crds

  local real=""
  if [ "$real_node" = 1 ]; then
    local tn=$SECONDS
    node_start
    wait_for 120 "CoreDNS on the real node" coredns_ready
    real=" + real node $NODE_NAME ($NODE_IP, Ready with CoreDNS in $((SECONDS - tn))s; registry 127.0.0.1:$REGISTRY_PORT)"
  fi
  log "cluster up at https://$APISERVER_HOST:$APISERVER_PORT: $nodes nodes x $node_pods pods$real, Kubernetes $KUBERNETES_VERSION"
  log "started in $((SECONDS - t_start))s (build/cache check ${build_s}s, total $((SECONDS - t0))s)"
  log "use it with: eval \"\$($0 env)\""
}

cmd_env() {
  [ -f "$state/kubeconfig" ] || die "no cluster at $state; run: $0 up"
  echo "export KUBECONFIG='$state/kubeconfig'"
  local extra=""
  # With the real node: promtool (and prometheus), and where the local Prometheus answers.
  if [ -f "$state/node.env" ]; then
    extra="$(node_bin prometheus):"
    [ -f "$(prometheus_dir)/env" ] && echo "export $(cat "$(prometheus_dir)/env")"
  fi
  echo "export PATH='$(k8s_bin):$(bin_dir helm "$HELM_VERSION"):$(bin_dir toxiproxy "$TOXIPROXY_VERSION"):$extra'\"\$PATH\""
}

cmd_status() {
  [ -d "$state" ] || { echo "no cluster (state dir $state does not exist)"; return 1; }
  # shellcheck source=/dev/null
  source "$state/ports.env"
  load_components
  local comp ok=0 rss total=0
  printf '%-25s %-8s %-9s %s\n' COMPONENT PID STATE RSS
  for comp in "${components[@]}"; do
    if running "$comp"; then
      rss=$(awk '/VmRSS/ {print $2}' "/proc/$(pid_of "$comp")/status")
      total=$((total + rss))
      printf '%-25s %-8s %-9s %d MiB\n' "$comp" "$(pid_of "$comp")" running $((rss / 1024))
    else
      printf '%-25s %-8s %-9s\n' "$comp" - stopped
      ok=1
    fi
  done
  if [ -f "$state/node.env" ]; then
    local shims=0 p
    rss=0
    for p in /proc/[0-9]*; do
      if [ "$(readlink "$p/exe" 2>/dev/null)" = "$(node_bin containerd)/containerd-shim-runc-v2" ]; then
        shims=$((shims + 1))
        rss=$((rss + $(awk '/VmRSS/ {print $2}' "$p/status")))
      fi
    done
    total=$((total + rss))
    printf '%-25s %-8s %-9s %d MiB\n' "pod shims ($shims)" - running $((rss / 1024))
  fi
  printf '%-25s %-8s %-9s %d MiB\n' total "" "" $((total / 1024))
  echo "apiserver: https://${APISERVER_HOST:-127.0.0.1}:$APISERVER_PORT  readyz: $(kubectl get --raw /readyz 2>&1 | head -1)"
  kubectl get nodes 2>&1 | head -n $((nodes + 2)) || true
  return "$ok"
}

cmd_logs() {
  [ -d "$state/logs" ] || die "no cluster at $state"
  if [ $# -eq 0 ]; then
    local f
    for f in "$state"/logs/*.log; do printf '%8s  %s\n' "$(du -h "$f" | cut -f1)" "$f"; done
    echo "print one with: $0 logs <component>   (${components[*]})"
    return 0
  fi
  [ -f "$state/logs/$1.log" ] || die "no log for '$1'; components: ${components[*]}"
  cat "$state/logs/$1.log"
}

# real-namespace NAME: pods of the namespace run on the real node; its LoadBalancer Services get
# addresses from the stand-in.
cmd_real_namespace() {
  local ns=${1:?usage: $0 real-namespace NAME}
  [ -f "$state/node.env" ] || die "this cluster has no real node (see KUBUNDLE_REAL_NODE)"
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl label namespace "$ns" --overwrite "$NODE_TAINT_KEY=true" >/dev/null
  kubectl annotate namespace "$ns" --overwrite \
    "scheduler.alpha.kubernetes.io/node-selector=$NODE_TAINT_KEY=true" \
    "scheduler.alpha.kubernetes.io/defaultTolerations=[{\"key\":\"$NODE_TAINT_KEY\",\"operator\":\"Exists\",\"effect\":\"NoSchedule\"}]" >/dev/null
  log "namespace $ns: pods run on the real node $NODE_NAME"
}

need_node() {
  [ -f "$state/node.env" ] || die "this cluster has no real node, so no registry (see KUBUNDLE_REAL_NODE)"
  # shellcheck source=/dev/null
  source "$state/ports.env"
}

case ${1:-} in
  up) cmd_up ;;
  registry) need_node; echo "127.0.0.1:$REGISTRY_PORT $REGISTRY_HOST" ;;
  image-push) shift; need_node; image_push "$@" ;;
  real-namespace) shift; cmd_real_namespace "$@" ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  logs) shift; cmd_logs "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  build-node)
    build_node
    for comp in kubernetes-node runc containerd cni-plugins coredns ggcr distribution traefik metrics-server prometheus; do
      echo "$comp: $(node_bin "$comp")"
    done
    ;;
  build)
    build_all
    echo "kubernetes: $(k8s_bin)"
    echo "etcd: $(bin_dir etcd "$ETCD_VERSION")"
    echo "kwok: $(bin_dir kwok "$KWOK_VERSION")"
    echo "toxiproxy: $(bin_dir toxiproxy "$TOXIPROXY_VERSION")"
    echo "helm: $(bin_dir helm "$HELM_VERSION")"
    ;;
  *)
    sed -n '/^# Usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    [ -n "${1:-}" ] && exit 2
    exit 0
    ;;
esac

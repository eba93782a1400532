#!/usr/bin/env bash
# The demo: kubundle doing its job on a local cluster.
#   deploy/local/demo.sh        bring the cluster up, install the CRD, start the operator, apply the
#                               guestbook (three AppBundles), wait until all three are Ready, show them
#   deploy/local/demo.sh down   stop the operator and the cluster
# Running it again reuses the running cluster and operator.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cluster=deploy/local/cluster.sh
state=${KUBUNDLE_CLUSTER_DIR:-$PWD/.cluster}
pidfile=$state/kubundle.pid
target_dir=${CARGO_TARGET_DIR:-target}

operator_running() {
  [ -f "$pidfile" ] || return 1
  local pid exe
  pid=$(cat "$pidfile")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == */kubundle ]]
}

if [ "${1:-}" = down ]; then
  if operator_running; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 50); do operator_running || break; sleep 0.2; done
    echo "operator stopped"
  fi
  exec $cluster down
fi
[ $# -eq 0 ] || { echo "usage: $0 [down]" >&2; exit 2; }

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "local control plane"
$cluster up
eval "$($cluster env)"

say "build kubundle, install the AppBundle CRD"
cargo build --locked --quiet --bin kubundle
kubectl apply --server-side -f crds/ >/dev/null
# (kubectl wait fails instead of waiting while a new CRD has no status conditions yet: retry.)
for _ in $(seq 60); do
  kubectl wait --for=condition=Established crd/appbundles.kubundle.dev --timeout=10s >/dev/null 2>&1 && break
  sleep 1
done
kubectl wait --for=condition=Established crd/appbundles.kubundle.dev --timeout=10s >/dev/null

if operator_running; then
  say "kubundle already running (pid $(cat "$pidfile"))"
else
  say "start kubundle (logs: $state/logs/kubundle.log)"
  nohup "$target_dir/debug/kubundle" --listen-address 127.0.0.1:0 --log-format json \
    >"$state/logs/kubundle.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
fi

say "apply the guestbook: three AppBundles (deploy/examples/guestbook.yaml)"
kubectl create namespace guestbook --dry-run=client -o yaml | kubectl apply -f - >/dev/null
start=$(date +%s%3N)
kubectl apply -n guestbook -f deploy/examples/guestbook.yaml

say "the frontend is a LoadBalancer: play the cloud controller and give it an address"
until kubectl get service frontend -n guestbook >/dev/null 2>&1; do sleep 0.2; done
kubectl get appbundle frontend -n guestbook
kubectl patch service frontend -n guestbook --subresource=status --type=merge \
  -p '{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.10"}]}}}' >/dev/null

say "wait until all three are Ready"
kubectl wait -n guestbook --for=condition=Ready appbundle --all --timeout=120s
elapsed=$(($(date +%s%3N) - start))
printf 'all three Ready %d.%03d s after kubectl apply\n' $((elapsed / 1000)) $((elapsed % 1000))
address=$(grep -o '"address":"[^"]*"' "$state/logs/kubundle.log" | head -1 | cut -d'"' -f4)
echo "kubundle metrics: http://$address/metrics"

say "kubectl get appbundles,deployments,services,pods -n guestbook"
kubectl get appbundles,deployments,services,pods -n guestbook

say "the tutorial's labels reach the pods: kubectl get pods -n guestbook -l app=redis -L role,tier"
kubectl get pods -n guestbook -l app=redis -L role,tier

cat <<EOF2

Try it:
  eval "\$($cluster env)"
  kubectl scale appbundle frontend -n guestbook --replicas=5
  kubectl describe appbundle frontend -n guestbook      # conditions and Events
  kubectl delete service redis-leader -n guestbook       # kubundle recreates it
  kubectl delete appbundle frontend -n guestbook --cascade=orphan && kubectl apply -n guestbook -f deploy/examples/guestbook.yaml
                                                         # the orphans are adopted: no pod restarts
  $cluster restart kube-apiserver --down 30              # an outage: /readyz says so, kubundle catches up
Stop everything:
  $0 down
EOF2

#!/usr/bin/env bash
# The demo: kubundle doing its job on a local cluster, the way a GKE user runs it.
#   deploy/local/demo.sh        bring the cluster up with its real node, build the images without
#                               Docker and push them and the Helm chart to the local registry,
#                               `helm install` kubundle from the OCI chart (2 replicas, leader
#                               election, restricted Pod Security), apply the guestbook (three
#                               AppBundles), wait until all three are Ready, then add an entry
#                               through the frontend's LoadBalancer address with curl and read it back
#   deploy/local/demo.sh down   bring the cluster down (the node, the operator and the guestbook with it)
# Running it again reuses the running cluster and upgrades the release.
# It first installs the system packages the real node needs (deploy/local/packages.sh, as .ci/run
# does). Where the machine still cannot have a real node (not root, no cgroups), the demo says so and
# runs kubundle as a process beside kwok's fake nodes instead: the same AppBundles get Ready, but
# nothing answers curl.
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
ms_since() { local e=$(($(date +%s%3N) - $1)); printf '%d.%03d s' $((e / 1000)) $((e % 1000)); }

say "system packages (the real node needs iptables, conntrack, libseccomp, gcc)"
# As root on a fresh machine they are installed; elsewhere the demo says what is missing and goes
# on: without them the cluster has no real node, and the demo falls back to kwok's fake nodes.
deploy/local/packages.sh || say "some packages could not be installed (above); the real node may not start"

say "local cluster: control plane, kwok nodes and a real node"
$cluster up
eval "$($cluster env)"

if [ ! -f "$state/node.env" ]; then
  # ------------------------------------------------------------ no real node on this machine
  say "no real node here: kubundle runs as a process, the guestbook's pods on kwok's fake nodes"
  cargo build --locked --quiet --bin kubundle
  kubectl apply --server-side -f crds/ >/dev/null
  for _ in $(seq 60); do
    kubectl wait --for=condition=Established crd/appbundles.kubundle.dev --timeout=10s >/dev/null 2>&1 && break
    sleep 1
  done
  if ! operator_running; then
    nohup "$target_dir/debug/kubundle" --listen-address 127.0.0.1:0 --log-format json \
      >"$state/logs/kubundle.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  kubectl create namespace guestbook --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  start=$(date +%s%3N)
  kubectl apply -n guestbook -f deploy/examples/guestbook.yaml
  until kubectl get service frontend -n guestbook >/dev/null 2>&1; do sleep 0.2; done
  # Play the cloud controller: give the LoadBalancer an address.
  kubectl patch service frontend -n guestbook --subresource=status --type=merge \
    -p '{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.10"}]}}}' >/dev/null
  kubectl wait -n guestbook --for=condition=Ready appbundle --all --timeout=120s
  echo "all three Ready $(ms_since "$start") after kubectl apply"
  kubectl get appbundles,deployments,services -n guestbook
  echo
  echo "Stop everything: $0 down"
  exit 0
fi

say "build the images without Docker, push them and the chart to the local registry"
eval "$(deploy/local/images.sh kubundle redis guestbook-frontend chart)"
echo "operator image: $KUBUNDLE_IMAGE_REPOSITORY:$KUBUNDLE_IMAGE_TAG"
echo "chart:          $KUBUNDLE_CHART"

say "helm install kubundle from the OCI chart (namespace kubundle-system, restricted Pod Security)"
$cluster real-namespace kubundle-system
# Helm installs the chart's CRD only when there is none, and never upgrades it: on a cluster that
# ran an older demo, apply the current one first (README: Upgrade).
kubectl apply --server-side --force-conflicts -f charts/kubundle/crds/ >/dev/null
kubectl label namespace kubundle-system --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
start=$(date +%s%3N)
helm upgrade --install kubundle "$KUBUNDLE_CHART" --plain-http -n kubundle-system \
  --set image.repository="$KUBUNDLE_IMAGE_REPOSITORY" --set image.tag="$KUBUNDLE_IMAGE_TAG" \
  --wait --timeout 3m >/dev/null
echo "both replicas Ready $(ms_since "$start") after helm install; the leader:" \
  "$(kubectl get lease kubundle -n kubundle-system -o jsonpath='{.spec.holderIdentity}')"
kubectl get pods -n kubundle-system -o wide

say "apply the guestbook: three AppBundles (deploy/local/guestbook.yaml)"
$cluster real-namespace guestbook
start=$(date +%s%3N)
kubectl apply -n guestbook -f deploy/local/guestbook.yaml

say "wait until all three are Ready"
kubectl wait -n guestbook --for=condition=Ready appbundle --all --timeout=180s
echo "all three Ready $(ms_since "$start") after kubectl apply"
kubectl get appbundles,pods,services -n guestbook

say "the guestbook answers: add an entry through the frontend's LoadBalancer address, read it back"
ip=$(kubectl get service frontend -n guestbook -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
entry="Hello from the kubundle demo at $(date +%H:%M:%S)"
for _ in $(seq 100); do
  curl -sf -m 2 -X POST --data "$entry" "http://$ip/entries" >/dev/null && break
  sleep 0.2
done
echo "\$ curl -X POST --data '$entry' http://$ip/entries"
answer=""
for _ in $(seq 100); do
  answer=$(curl -sf -m 2 "http://$ip/entries" || true)
  [[ $answer == *"$entry"* ]] && break
  sleep 0.2
done
echo "\$ curl http://$ip/entries"
echo "$answer"
[[ $answer == *"$entry"* ]] || { echo "the entry was not read back" >&2; exit 1; }
echo "(entry written to the Redis leader, read back from a follower: answering $(ms_since "$start") after kubectl apply)"

say "and through the Gateway: the frontend's HTTPRoute on the Gateway gateway-system/local (Traefik)"
gateway_url=$(kubectl get appbundle frontend -n guestbook -o jsonpath='{.status.address.external[-1:]}')
[ -n "$gateway_url" ] || { echo "the frontend has no URL through the Gateway in its status" >&2; exit 1; }
answer=""
for _ in $(seq 100); do
  answer=$(curl -sf -m 2 "${gateway_url%/}/entries" || true)
  [[ $answer == *"$entry"* ]] && break
  sleep 0.2
done
echo "\$ curl ${gateway_url%/}/entries"
echo "$answer"
[[ $answer == *"$entry"* ]] || { echo "the entry was not read back through the Gateway" >&2; exit 1; }

say "kubectl kubundle status: an AppBundle, its children and its pods (the kubectl plugin)"
plugin_dir=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubundle/cargo-target}/release
CARGO_TARGET_DIR=$(dirname "$plugin_dir") cargo build --locked --quiet --release --bin kubectl-kubundle
export PATH=$plugin_dir:$PATH
echo "\$ kubectl kubundle status frontend -n guestbook"
kubectl kubundle status frontend -n guestbook

cat <<EOF

Open the guestbook in a browser:
  on this machine:  http://$ip/ (the LoadBalancer) or $gateway_url (the Gateway)
  from elsewhere:   eval "\$($cluster env)"; kubectl port-forward -n guestbook service/frontend 8080:80
                    then http://localhost:8080/
Try it:
  eval "\$($cluster env)"; export PATH=$plugin_dir:\$PATH
  kubectl patch appbundle frontend -n guestbook --type=merge -p '{"spec":{"image":"registry.kubundle.local/guestbook-frontend:v2"}}'
                                                       # a rolling update, readiness-gated
  kubectl kubundle history frontend -n guestbook       # revision 1 (v1), revision 2 (v2) once Ready
  kubectl kubundle rollback frontend -n guestbook      # back to v1: recorded as revision 3
  kubectl patch appbundle frontend -n guestbook --type=merge -p '{"spec":{"image":"registry.kubundle.local/nope:1"}}'
  kubectl get appbundle frontend -n guestbook          # Ready=False ImagePullBackOff, Stalled
  kubectl top pods -n guestbook                        # the pods' CPU and memory (metrics-server)
  kubectl logs -n kubundle-system deployment/kubundle  # the operator's JSON logs
  kubectl exec -n guestbook deployment/redis-leader -- redis-cli lrange guestbook 0 -1
  kubectl delete pod -n kubundle-system \$(kubectl get lease kubundle -n kubundle-system -o jsonpath='{.spec.holderIdentity}')
                                                       # the other replica takes over
Stop everything:
  $0 down
EOF

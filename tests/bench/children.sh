#!/usr/bin/env bash
# API requests per AppBundle until Ready, by resource and verb, from the API server's
# apiserver_request_total: N plain AppBundles (Deployment + Service) against N with every optional
# child present (autoscaler, disruption budget, Ingress; the script plays the ingress controller),
# in the same run. All clients count (controllers, kubectl); kubundle's own writes are printed from
# its metrics. Issue #13 asks for this comparison; the full benchmark is tests/bench/run.sh.
#   N=100 tests/bench/children.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export KUBUNDLE_REAL_NODE=${KUBUNDLE_REAL_NODE:-0}
target_dir=${CARGO_TARGET_DIR:-target}
N=${N:-100}
cargo build --locked --quiet --bin kubundle
deploy/local/cluster.sh up >/dev/null 2>&1
eval "$(deploy/local/cluster.sh env)"
kubectl apply --server-side -f crds/ >/dev/null
sleep 2
"$target_dir/debug/kubundle" --listen-address 127.0.0.1:45003 --log-format json >"$(dirname "$KUBECONFIG")/logs/kubundle-children.log" 2>&1 &
op=$!
tmp=$(mktemp -d)
trap 'kill $op 2>/dev/null || true; rm -rf "$tmp"' EXIT
sleep 3
snapshot() { kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ {
  match($0, /resource="[^"]*"/); r=substr($0, RSTART+10, RLENGTH-11);
  match($0, /subresource="[^"]*"/); s=substr($0, RSTART+13, RLENGTH-14);
  match($0, /verb="[^"]*"/); v=substr($0, RSTART+6, RLENGTH-7);
  k=r (s==""?"":"/" s) " " v; c[k]+=$NF } END { for (k in c) print k, c[k] }' | sort; }
measure() {
  local variant=$1 extra=$2 ns=req-$1 i
  kubectl create namespace "$ns" >/dev/null
  snapshot > $tmp/req-$variant-before
  local t0=$SECONDS
  for i in $(seq 1 "$N"); do
    printf -- '---\napiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: app-%d}\nspec:\n  image: nginx:1.27\n  replicas: 2\n  ports: [{containerPort: 80}]\n  resources: {requests: {cpu: 10m}}\n%s' "$i" "$extra"
  done | kubectl apply -n "$ns" -f - >/dev/null
  if [ "$variant" = full ]; then
    # The ingress controller's part (played here): an address for every Ingress.
    for i in $(seq 1 "$N"); do
      until kubectl get ingress "app-$i" -n "$ns" >/dev/null 2>&1; do sleep 0.2; done
      kubectl patch ingress "app-$i" -n "$ns" --subresource=status --type=merge \
        -p '{"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.9"}]}}}' >/dev/null
    done
  fi
  kubectl wait -n "$ns" --for=condition=Ready appbundle --all --timeout=600s >/dev/null
  local took=$((SECONDS - t0))
  sleep 5
  snapshot > $tmp/req-$variant-after
  echo "== $variant: N=$N, all Ready in ${took}s"
  join -a2 -e0 -o 0,1.2,2.2 <(sed 's/ \([0-9.e+]*\)$/|\1/' $tmp/req-$variant-before | tr ' ' '_' | sed 's/|/ /' | sort) \
    <(sed 's/ \([0-9.e+]*\)$/|\1/' $tmp/req-$variant-after | tr ' ' '_' | sed 's/|/ /' | sort) \
    | awk -v n="$N" '{d=$3-$2; if (d>0) {printf "%-55s %8.2f\n", $1, d/n; t+=d}} END {printf "%-55s %8.2f\n", "TOTAL per AppBundle", t/n}'
  echo "kubundle's writes so far (cumulative over the variants):"
  curl -s 127.0.0.1:45003/metrics | grep '^kubundle_api_writes_total' | grep -v ' 0$'
  # Gone before the next variant starts, so that its deletion is not counted there.
  kubectl delete namespace "$ns" --timeout=300s >/dev/null
}
measure plain ""
measure full "  autoscaling: {minReplicas: 2, maxReplicas: 4}
  disruptionBudget: {maxUnavailable: 1}
  http: {hostnames: [a.example.com], ingress: {className: nginx}}
"

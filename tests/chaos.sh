#!/usr/bin/env bash
# The tests that break their cluster on purpose, on a local cluster of their own (kwok nodes only):
# tests/faults.rs (the API server and etcd stopped and restarted, the operator killed and frozen
# mid-rollout), then the chaos soak's short form (tests/soak/main.rs: 5 minutes, 100 AppBundles,
# faults of every class). The test command (tests/run.sh) runs this beside its real-node steps, so
# that their waits overlap; it can also be run alone: `tests/chaos.sh`.
# Its cluster's state is in KUBUNDLE_CLUSTER_DIR (default <repo>/.cluster-chaos, so that it never
# meets the test command's main cluster); it is brought down at the end, unless
# KUBUNDLE_KEEP_CLUSTER=1. Each test starts the operators it observes: none is started here.
# Expects the tests to be built (tests/run.sh builds them first); builds them when run alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cluster=deploy/local/cluster.sh
export KUBUNDLE_CLUSTER_DIR=${KUBUNDLE_CLUSTER_DIR:-$PWD/.cluster-chaos}
# Nothing of the main cluster's: its operator, its Prometheus.
unset KUBUNDLE_METRICS_URL PROMETHEUS_URL
start=$SECONDS
last_step=$SECONDS
step() {
  printf '\n==> [chaos] %s  [at %ds; previous step %ds]\n' "$*" "$((SECONDS - start))" "$((SECONDS - last_step))"
  last_step=$SECONDS
}

cleanup() { [ "${KUBUNDLE_KEEP_CLUSTER:-0}" = 1 ] || $cluster down; }
trap cleanup EXIT

step "build (nothing to do when tests/run.sh built already)"
cargo build --locked --bins --tests
step "a second local control plane, kwok nodes only ($KUBUNDLE_CLUSTER_DIR)"
KUBUNDLE_REAL_NODE=0 $cluster up
eval "$($cluster env)"
tests/install-crd.sh

step "cargo test --test faults (API server and etcd restarts, the operator killed mid-rollout)"
cargo test --locked --test faults -- --test-threads=1 --nocapture

step "cargo test --test soak (chaos soak: changes and faults of every class, then the invariants)"
kubectl delete appbundles --all --all-namespaces --wait=true >/dev/null
# The fault schedule's seed is fixed; the changes' seed is drawn and printed (a failed run prints
# KUBUNDLE_SOAK_SEED=F:C, which replays it: give it here, or to tests/soak.sh).
cargo test --locked --test soak -- --nocapture

step "faults and soak passed in $((SECONDS - start))s"

#!/usr/bin/env bash
# The fault suite alone, N times in a row (default 10): `tests/faults.sh [N]`. It is part of the
# test command once (tests/run.sh); this is its long form, to show that it passes every time, not
# once. Brings the local cluster up (and down at the end, unless KUBUNDLE_KEEP_CLUSTER=1), runs
# `cargo test --test faults` N times with nothing else on the cluster, and ends with the count of
# runs that passed and each run's one-line measurements. Logs: target/faults-repeat/run-K.log.
# Exits non-zero when any run failed. About 5 minutes a run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-10}
cluster=deploy/local/cluster.sh
target_dir=${CARGO_TARGET_DIR:-target}
logs="$target_dir/faults-repeat"
mkdir -p "$logs"
cargo build --locked --bins --tests
cleanup() { [ "${KUBUNDLE_KEEP_CLUSTER:-0}" = 1 ] || $cluster down; }
trap cleanup EXIT
$cluster up
eval "$($cluster env)"
tests/install-crd.sh
passed=0
for k in $(seq "$runs"); do
  kubectl delete appbundles --all --all-namespaces --wait=true >/dev/null
  began=$SECONDS
  if cargo test --locked --test faults -- --test-threads=1 --nocapture >"$logs/run-$k.log" 2>&1; then
    passed=$((passed + 1)); verdict=passed
  else
    verdict=FAILED
  fi
  echo "run $k of $runs: $verdict in $((SECONDS - began)) s ($logs/run-$k.log)"
  grep -E '^(test faults::|test result)' "$logs/run-$k.log" | sed 's/^/    /'
done
echo "fault suite: $passed of $runs runs passed"
[ "$passed" = "$runs" ]

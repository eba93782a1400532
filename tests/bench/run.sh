#!/usr/bin/env bash
# The benchmark command: builds release binaries, brings the local cluster up, runs kubundle-bench
# (floor and kubundle at each size), writes tests/bench/results/{results.json,bench.png} and
# rewrites the generated tables in BENCHMARKS.md.
#   tests/bench/run.sh                                   # N = 100, 1000, 5000, once
#   tests/bench/run.sh --sizes 1000,5000 --repeats 2     # any kubundle-bench flags
# Takes minutes (progress is printed); the AppBundle CRD is installed if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --locked --release --bin kubundle
cargo build --locked --release --features bench --bin kubundle-bench
# The benchmark measures the control plane and kubundle on kwok's nodes: a real node's kube-proxy
# would program rules for every benchmark Service and take CPU from both. A cluster started here has
# none; a running one is reused as it is (with a warning when it has a real node).
KUBUNDLE_REAL_NODE=${KUBUNDLE_REAL_NODE:-0} deploy/local/cluster.sh up
if [ -f "${KUBUNDLE_CLUSTER_DIR:-.cluster}/node.env" ]; then
  echo "warning: the running cluster has a real node, whose kube-proxy takes CPU from the measurement;" \
    "for clean figures run deploy/local/cluster.sh down first" >&2
fi
eval "$(deploy/local/cluster.sh env)"
tests/install-crd.sh
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
"$target_dir/release/kubundle-bench" --operator "$target_dir/release/kubundle" --out tests/bench/results "$@"

#!/usr/bin/env bash
# The test command: everything, on a real local control plane.
#   1. static checks: rustfmt, clippy (warnings are errors), generated CRD not drifted
#   2. brings the local cluster up (deploy/local/cluster.sh; builds the components on first use)
#   3. cargo test: unit tests and the end-to-end tests in tests/ against that cluster
#   4. brings the cluster down, whether the tests passed or not
# Set KUBUNDLE_KEEP_CLUSTER=1 to leave the cluster running afterwards (to poke at it).
# Extra arguments go to `cargo test` (e.g. `tests/run.sh --test cluster`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cluster=deploy/local/cluster.sh
start=$SECONDS

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (all targets, warnings denied)"
cargo clippy --locked --all-targets -- -D warnings

step "generated files are up to date (crds/ from src/api)"
cargo run --locked --quiet --bin crdgen -- --check

step "local control plane up"
if [ "${KUBUNDLE_KEEP_CLUSTER:-0}" != 1 ]; then
  trap '$cluster down' EXIT
fi
$cluster up
eval "$($cluster env)"

step "cargo test (unit and end-to-end)"
cargo test --locked --all-targets "$@"

step "all tests passed in $((SECONDS - start))s"

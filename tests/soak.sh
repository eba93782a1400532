#!/usr/bin/env bash
# The chaos soak's long form: `tests/soak.sh` runs tests/soak/main.rs for an hour with 1,000
# AppBundles (the test command runs it for 5 minutes with 100). Any KUBUNDLE_SOAK_* setting can be
# given (see tests/soak/main.rs), e.g. KUBUNDLE_SOAK_SEED=F:C to replay a failed run's seeds.
# Brings the local cluster up with kwok nodes only (down at the end, unless KUBUNDLE_KEEP_CLUSTER=1)
# and writes the test's report to target/soak/soak-DATE.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cluster=deploy/local/cluster.sh
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir/soak"
log="$target_dir/soak/soak-$(date -u +%Y%m%dT%H%M%SZ).log"
export KUBUNDLE_SOAK_SECONDS=${KUBUNDLE_SOAK_SECONDS:-3600}
export KUBUNDLE_SOAK_BUNDLES=${KUBUNDLE_SOAK_BUNDLES:-1000}
# 120 faults, one every 30 s or so: the quiet stretch between two averages 16 s.
export KUBUNDLE_SOAK_FAULTS=${KUBUNDLE_SOAK_FAULTS:-120}
cargo build --locked --bins --tests
cleanup() { [ "${KUBUNDLE_KEEP_CLUSTER:-0}" = 1 ] || $cluster down; }
trap cleanup EXIT
KUBUNDLE_REAL_NODE=${KUBUNDLE_REAL_NODE:-0} $cluster up
eval "$($cluster env)"
tests/install-crd.sh
echo "soak: ${KUBUNDLE_SOAK_SECONDS}s, ${KUBUNDLE_SOAK_BUNDLES} AppBundles; report in $log"
cargo test --locked --test soak -- --nocapture 2>&1 | tee "$log" | grep --line-buffered '^soak:\|panicked\|test result'

#!/usr/bin/env bash
# Applies the AppBundle CRD (crds/) to the cluster KUBECONFIG names and waits until the API server
# serves it (Established). Shared by the test command, its chaos lane, the long forms and the
# benchmark.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kubectl apply --server-side -f crds/ >/dev/null
# (kubectl wait fails instead of waiting while a new CRD has no status conditions yet: retry.)
for _ in $(seq 60); do
  kubectl wait --for=condition=Established crd/appbundles.kubundle.dev --timeout=10s >/dev/null 2>&1 && exit 0
  sleep 1
done
kubectl wait --for=condition=Established crd/appbundles.kubundle.dev --timeout=10s >/dev/null

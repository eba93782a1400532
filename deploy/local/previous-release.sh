#!/usr/bin/env bash
# Builds the previous release of kubundle (the operator's image, its chart, its CRD) from this
# repository's history and pushes them to the local cluster's registry beside the current ones, for
# tests/upgrade.rs: install that release, then upgrade to this checkout as a user would.
#
# The release is pinned by commit below (a tag may not travel with a clone; the commit does). Its
# source is `git archive`d into the cache and its binary built once per machine with this
# checkout's Cargo target directory (dependencies that did not change are reused), so a warm run
# only pushes. The images are built with this checkout's recipe (images.sh, KUBUNDLE_SOURCE).
#
# Usage: deploy/local/previous-release.sh
# Prints shell lines to eval: KUBUNDLE_PREVIOUS_IMAGE_REPOSITORY, KUBUNDLE_PREVIOUS_IMAGE_TAG,
# KUBUNDLE_PREVIOUS_CHART_VERSION (the chart is at the current one's address, KUBUNDLE_CHART) and
# KUBUNDLE_PREVIOUS_CRDS (the release's crds/ directory). Logs go to stderr.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubundle/cargo-target}
cache=${KUBUNDLE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubundle}

# The previous release: CHANGELOG.md says what changed since.
version=0.1.0
commit=895566ff6c13733d6d0b35da88d181fb0b0da5da

log() { printf '%s [previous-release] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

git -C "$repo" cat-file -e "$commit^{commit}" 2>/dev/null \
  || die "commit $commit (kubundle $version) is not in $repo: a shallow clone? fetch the history (git fetch --unshallow)"
if tagged=$(git -C "$repo" rev-parse -q --verify "refs/tags/v$version^{commit}" 2>/dev/null); then
  [ "$tagged" = "$commit" ] || die "tag v$version is $tagged, but this script pins $version to $commit: which is the release?"
fi
src_version=$(git -C "$repo" show "$commit:Cargo.toml" | sed -n 's/^version = "\(.*\)"/\1/p' | head -1)
[ "$src_version" = "$version" ] || die "commit $commit is kubundle $src_version, not $version"

dir=$cache/releases/$version-${commit:0:12}
if [ ! -f "$dir/src/Cargo.toml" ]; then
  log "extracting kubundle $version ($commit) into $dir/src"
  rm -rf "$dir/src.tmp"
  mkdir -p "$dir/src.tmp"
  git -C "$repo" archive "$commit" | tar -x -C "$dir/src.tmp"
  mv "$dir/src.tmp" "$dir/src"
fi
if [ ! -x "$dir/kubundle" ]; then
  log "building kubundle $version (cargo build --release --locked --bin kubundle, once per machine)"
  (cd "$dir/src" && cargo build --release --locked --bin kubundle --quiet)
  install -m 755 "$CARGO_TARGET_DIR/release/kubundle" "$dir/kubundle.tmp"
  mv "$dir/kubundle.tmp" "$dir/kubundle"
  # Leave target/release/kubundle as this checkout's binary again (cargo relinks a fresh build).
  (cd "$repo" && cargo build --release --locked --bin kubundle --quiet)
fi
"$dir/kubundle" --version 2>/dev/null | grep -q "$version" \
  || die "$dir/kubundle does not say it is $version: remove $dir and run again"

out=$(KUBUNDLE_SOURCE=$dir/src KUBUNDLE_BINARY=$dir/kubundle "$here/images.sh" kubundle chart)
eval "$out"
log "kubundle $version: image $KUBUNDLE_IMAGE_REPOSITORY:$KUBUNDLE_IMAGE_TAG, chart $KUBUNDLE_CHART --version $version"
echo "export KUBUNDLE_PREVIOUS_IMAGE_REPOSITORY=$KUBUNDLE_IMAGE_REPOSITORY KUBUNDLE_PREVIOUS_IMAGE_TAG=$KUBUNDLE_IMAGE_TAG KUBUNDLE_PREVIOUS_CHART_VERSION=$version KUBUNDLE_PREVIOUS_CRDS=$dir/src/crds"

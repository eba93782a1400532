#!/usr/bin/env bash
# Builds the project's images without Docker and pushes them, with the Helm chart, to the local
# cluster's registry (the stand-in for Artifact Registry; see cluster.sh and node.sh):
#   kubundle             the operator: the same image as deploy/Dockerfile's final stage (release
#                        binary at the Dockerfile's path, its USER, EXPOSE and ENTRYPOINT, on the
#                        content of distroless/cc-debian12: glibc, libgcc, CA certificates, passwd).
#                        The recipe reads those lines from the Dockerfile, and refuses a Dockerfile
#                        whose final stage it cannot reproduce, so the two cannot drift apart.
#   redis                Redis from Debian's packages (redis-tools) plus the libraries it links
#   guestbook-frontend   deploy/examples/guestbook-frontend, tags v1 and v2 (v2 differs only in its
#                        FRONTEND_VERSION, for rolling updates)
#   stress               Debian's stress (a load generator; the tests make a container exceed its
#                        memory limit with it)
#   chart                charts/kubundle, pushed as an OCI artifact (helm install oci://...)
#
# Usage: deploy/local/images.sh [NAME...]     (default: all)
# Prints shell lines to eval (the image references and the chart's address); logs go to stderr.
# KUBUNDLE_SOURCE=DIR builds the operator and the chart from another source tree (an earlier
# release's, see previous-release.sh) with this recipe, against this checkout's cluster;
# KUBUNDLE_BINARY=FILE puts that release binary in the operator's image instead of building one.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "${KUBUNDLE_SOURCE:-$here/../..}" && pwd)
cluster=$here/cluster.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubundle/cargo-target}
debs=${KUBUNDLE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kubundle}/debs

log() { printf '%s [images] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

read -r registry registry_host <<<"$("$cluster" registry)" || die "no local registry: is the cluster up with its real node?"
eval "$("$cluster" env)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# add_elf ROOT FILE DEST [LIBDIR]: FILE at ROOT/DEST with every shared library it loads (as ldd
# resolves them, LIBDIR first), at their paths in a merged-/usr Debian layout.
add_elf() {
  local root=$1 file=$2 dest=$3 libdir=${4:-} lib target
  install -D -m 755 "$file" "$root$dest"
  while read -r lib; do
    target=${lib#"$libdir"}
    case $target in /lib/* | /lib64/*) target=/usr$target ;; esac
    [ -e "$root$target" ] || install -D -m 755 "$(readlink -f "$lib")" "$root$target"
  done < <(LD_LIBRARY_PATH=${libdir:+$libdir/usr/lib/x86_64-linux-gnu} ldd "$file" \
    | awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]+ \(0x/ {print $1}')
  ln -sfn usr/lib "$root/lib"
  ln -sfn usr/lib64 "$root/lib64"
}

# base_files ROOT UID NAME: what distroless images carry besides libraries: users, groups, CA
# certificates, a writable /tmp and the user's home.
base_files() {
  local root=$1 uid=$2 name=$3
  mkdir -p "$root/etc" "$root/tmp" "$root/home/$name"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n%s:x:%s:%s:%s:/home/%s:/sbin/nologin\n' \
    "$name" "$uid" "$uid" "$name" "$name" >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n%s:x:%s:\n' "$name" "$uid" >"$root/etc/group"
  chmod 1777 "$root/tmp"
  chown "$uid:$uid" "$root/home/$name"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    install -D -m 644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  fi
}

# dockerfile_final LINE_KEYWORD: the argument of the final stage's instruction (after the last FROM).
dockerfile_final() {
  awk -v kw="$1" 'toupper($1) == "FROM" {stage = ""} {stage = stage "\n" $0} END {print stage}' \
    "$repo/deploy/Dockerfile" | awk -v kw="$1" 'toupper($1) == kw {sub("^[^ ]+ +", ""); print}'
}

image_kubundle() {
  local base copy src dest user expose entry version tag root=$work/kubundle
  base=$(dockerfile_final FROM)
  case $base in
    gcr.io/distroless/cc-debian12:nonroot*) ;;
    *) die "deploy/Dockerfile's final stage is FROM $base; this recipe reproduces distroless/cc-debian12:nonroot only: update both" ;;
  esac
  copy=$(dockerfile_final COPY)
  read -r _ src dest <<<"$copy"
  [[ $src == */target/release/kubundle ]] || die "deploy/Dockerfile copies '$src', not the release binary kubundle"
  user=$(dockerfile_final USER)
  expose=$(dockerfile_final EXPOSE)
  entry=$(dockerfile_final ENTRYPOINT | tr -d '[]" ' )
  [ -n "$dest" ] && [ -n "$user" ] && [ -n "$entry" ] || die "cannot read COPY, USER and ENTRYPOINT from deploy/Dockerfile"
  local binary=${KUBUNDLE_BINARY:-}
  if [ -z "$binary" ]; then
    log "building the operator (cargo build --release --locked --bin kubundle)"
    (cd "$repo" && cargo build --release --locked --bin kubundle --quiet)
    binary=$CARGO_TARGET_DIR/release/kubundle
  fi
  add_elf "$root" "$binary" "$dest"
  base_files "$root" "${user%%:*}" nonroot
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
  # A tag per content: the node pulls a changed operator instead of reusing a cached image.
  tag="$version-dev.$(tar --sort=name --mtime=@0 --numeric-owner -C "$root" -c . | sha256sum | cut -c1-12)"
  "$cluster" image-push "kubundle:$tag" "$root" --entrypoint "$entry" --user "$user" \
    ${expose:+--exposed-ports "$expose/tcp"} --workdir /home/nonroot
  log "pushed $registry_host/kubundle:$tag"
  echo "export KUBUNDLE_IMAGE_REPOSITORY=$registry_host/kubundle KUBUNDLE_IMAGE_TAG=$tag"
}

# debian_packages STAGE PACKAGE...: the packages' files under STAGE (downloaded once into the cache;
# the libraries they need that this machine has come from the machine, see add_elf).
debian_packages() {
  local stage=$1 pkg missing=()
  shift
  mkdir -p "$debs" "$stage"
  for pkg in "$@"; do ls "$debs/${pkg}"_*.deb >/dev/null 2>&1 || missing+=("$pkg"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    log "downloading from Debian: ${missing[*]}"
    (cd "$debs" && apt-get download "${missing[@]}" >&2 2>/dev/null) \
      || { apt-get update -qq >&2 && (cd "$debs" && apt-get download "${missing[@]}" >&2); } \
      || die "apt-get download ${missing[*]} failed"
  fi
  for pkg in "$@"; do dpkg-deb -x "$(ls "$debs/${pkg}"_*.deb | head -1)" "$stage"; done
}

image_stress() {
  local root=$work/stress stage=$work/stress-debs
  debian_packages "$stage" stress
  add_elf "$root" "$stage/usr/bin/stress" /usr/bin/stress "$stage"
  base_files "$root" 65532 nonroot
  "$cluster" image-push "stress:1.0" "$root" --entrypoint /usr/bin/stress --user 65532:65532
  log "pushed $registry_host/stress:1.0"
  echo "export STRESS_IMAGE=$registry_host/stress:1.0"
}

image_redis() {
  local root=$work/redis stage=$work/redis-debs version
  debian_packages "$stage" redis-tools libjemalloc2 liblzf1 libatomic1
  add_elf "$root" "$stage/usr/bin/redis-check-rdb" /usr/bin/redis-check-rdb "$stage"
  add_elf "$root" "$stage/usr/bin/redis-cli" /usr/bin/redis-cli "$stage"
  # Debian's redis-server is this binary under another name (it picks its role from argv[0]).
  ln -s redis-check-rdb "$root/usr/bin/redis-server"
  base_files "$root" 999 redis
  mkdir -p "$root/data" && chown 999:999 "$root/data"
  # Tagged MAJOR.MINOR (7.0 in Debian 12): Debian's security updates keep that, so manifests can name it.
  version=$(dpkg-deb -f "$(ls "$debs"/redis-tools_*.deb | head -1)" Version | sed -E 's/^[0-9]+://; s/^([0-9]+\.[0-9]+).*/\1/')
  "$cluster" image-push "redis:$version" "$root" --entrypoint /usr/bin/redis-server --user 999:999 \
    --workdir /data --exposed-ports 6379/tcp
  log "pushed $registry_host/redis:$version"
  echo "export REDIS_IMAGE=$registry_host/redis:$version"
}

image_guestbook_frontend() {
  local root=$work/frontend crate=$repo/deploy/examples/guestbook-frontend v
  log "building the guestbook frontend (cargo build --release --locked)"
  (cd "$crate" && cargo build --release --locked --quiet)
  add_elf "$root" "$CARGO_TARGET_DIR/release/guestbook-frontend" /usr/local/bin/guestbook-frontend
  base_files "$root" 65532 nonroot
  for v in v1 v2; do
    "$cluster" image-push "guestbook-frontend:$v" "$root" --entrypoint /usr/local/bin/guestbook-frontend \
      --user 65532:65532 --exposed-ports 8080/tcp -e "FRONTEND_VERSION=$v"
  done
  log "pushed $registry_host/guestbook-frontend:v1 and :v2"
  echo "export FRONTEND_IMAGE=$registry_host/guestbook-frontend"
}

push_chart() {
  helm package "$repo/charts/kubundle" -d "$work" >/dev/null
  helm push "$work"/kubundle-*.tgz "oci://$registry/charts" --plain-http >&2 2>"$work/helm.log" \
    || { cat "$work/helm.log" >&2; die "helm push failed"; }
  log "pushed the chart to oci://$registry/charts/kubundle"
  echo "export KUBUNDLE_CHART=oci://$registry/charts/kubundle"
}

names=("$@")
[ "${#names[@]}" -gt 0 ] || names=(kubundle redis guestbook-frontend stress chart)
for name in "${names[@]}"; do
  case $name in
    kubundle) image_kubundle ;;
    redis) image_redis ;;
    guestbook-frontend) image_guestbook_frontend ;;
    stress) image_stress ;;
    chart) push_chart ;;
    *) die "unknown image '$name' (kubundle, redis, guestbook-frontend, stress, chart)" ;;
  esac
done

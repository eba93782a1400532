#!/usr/bin/env bash
# The system packages the local cluster needs, installed with apt when missing. One list for
# `.ci/run` and the demo, so the two cannot drift.
#   openssl (cluster certificates), curl (health checks), util-linux (flock), procps (ps, for
#   diagnostics); for the real node: iptables and conntrack (kube-proxy), libseccomp-dev (runc's
#   seccomp), gcc and libc6-dev (the static pause program), ca-certificates (the operator image
#   carries them).
# Exit status 0 when nothing is missing afterwards; 1, naming what is missing, when it cannot
# install (not root, no apt-get) or apt fails.
set -euo pipefail

missing=()
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v flock >/dev/null || missing+=(util-linux)
command -v ps >/dev/null || missing+=(procps)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack)
[ -f /usr/include/seccomp.h ] || missing+=(libseccomp-dev)
command -v gcc >/dev/null || missing+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)

[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them as root; this machine: $( [ "$(id -u)" = 0 ] && echo 'no apt-get' || echo 'not root'))" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# The local cluster's load-balancer stand-in (started by cluster.sh with the real node), playing what a
# cloud's service controller does: every LoadBalancer Service in a namespace that runs on the real
# node (label kubundle.dev/real-node=true, see `cluster.sh real-namespace`) gets an address from a
# local pool in status.loadBalancer.ingress. The address is a /32 on the loopback interface, and
# kube-proxy's rules for LoadBalancer ingress addresses route it to the Service's pods, so
# `curl http://EXTERNAL-IP:PORT` works as on GKE. Services elsewhere (the kwok nodes' tests play the
# cloud themselves) are left alone. Addresses are given back when the Service goes or changes type.
#
# Connections tracked while kube-proxy does not route an address are forgotten when it starts to.
# Until then (no rules yet, or a Service without ready pods, which kube-proxy REJECTs on the input
# path) a connection from this machine to the address is refused, and conntrack, which tracked it
# on the way out, keeps that untranslated entry for up to 2 minutes: a client that later reuses the
# source port is refused again by the stale entry although the pods are ready (a rolling update
# of the guestbook saw it, the port reused 19 s after the address was first refused). A cloud load
# balancer leaves no such state on the client's machine, so the stand-in forgets it. An address
# given back forgets its connections too (translated to pods of a Service that is gone).
#
set -uo pipefail
state=$1 prefix=$2 kubectl_bin=$3
export KUBECONFIG=$state/kubeconfig
leases=$state/loadbalancer
mkdir -p "$leases"

log() { printf '%s [loadbalancer] %s\n' "$(date +%H:%M:%S)" "$*"; }
k() { "$kubectl_bin" "$@"; }

address_taken() { ip -4 -o addr show dev lo | grep -q " $1/32 "; }

allocate() {
  local i
  for i in $(seq 1 254); do
    if ! address_taken "$prefix.$i" && ! grep -qx "$prefix.$i" "$leases"/* 2>/dev/null; then
      echo "$prefix.$i"
      return 0
    fi
  done
  return 1
}

release() { # release KEY
  local key=$1 ip
  [ -f "$leases/$key" ] || return 0
  ip=$(cat "$leases/$key")
  ip addr del "$ip/32" dev lo 2>/dev/null || true
  rm -f "$leases/$key"
  conntrack -D -d "$ip" >/dev/null 2>&1
  log "released $ip from ${key/_//}"
}

# settle: every 0.5 s, for each address given, whether kube-proxy routes it; when it starts to,
# the connections tracked without translation (their reply would come from the address itself)
# are forgotten, and once more a second later (a connection that passed the rules just before
# they were written is tracked moments later). Runs in the background beside the watch.
settle() {
  local rules key ip
  declare -A routed=()
  while true; do
    rules=$(iptables -w -t nat -S KUBE-SERVICES 2>/dev/null)
    for key in "$leases"/*; do
      [ -f "$key" ] || continue
      ip=$(cat "$key" 2>/dev/null) || continue
      if grep -q -- "-d $ip/32 " <<<"$rules"; then
        case ${routed[$ip]:-no} in
          no) forget_untranslated "$ip"; routed[$ip]=$SECONDS ;;
          done) ;;
          *) if [ $((SECONDS - routed[$ip])) -ge 1 ]; then
               forget_untranslated "$ip"; routed[$ip]=done
               log "kube-proxy routes $ip; connections tracked before forgotten"
             fi ;;
        esac
      else
        routed[$ip]=no
      fi
    done
    sleep 0.5
  done
}

forget_untranslated() { conntrack -D -d "$1" --reply-src "$1" >/dev/null 2>&1 || true; }

serve() { # serve NAMESPACE NAME CURRENT_INGRESS_IP
  local ns=$1 name=$2 current=$3 key="$1_$2" ip
  [ "$(k get namespace "$ns" -o jsonpath='{.metadata.labels.kubundle\.dev/real-node}' 2>/dev/null)" = true ] || return 0
  if [ -f "$leases/$key" ]; then
    ip=$(cat "$leases/$key")
  else
    ip=$(allocate) || { log "pool $prefix.0/24 is exhausted; $ns/$name gets no address"; return 0; }
    echo "$ip" >"$leases/$key"
    conntrack -D -d "$ip" >/dev/null 2>&1
  fi
  address_taken "$ip" || ip addr add "$ip/32" dev lo
  [ "$current" = "$ip" ] && return 0
  if k patch service "$name" -n "$ns" --subresource=status --type=merge \
    -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$ip\",\"ipMode\":\"VIP\"}]}}}" >/dev/null; then
    log "gave $ip to $ns/$name"
  fi
}

# Stopped (cluster.sh down or restart sends SIGTERM): the watch goes too. It runs in a process
# substitution, a child of this shell that SIGTERM to the shell alone would leave behind, watching
# an API server that is gone.
trap 'pkill -TERM -P $$ 2>/dev/null; exit 0' TERM INT

template='{.type}{" "}{.object.metadata.namespace}{" "}{.object.metadata.name}{" "}{.object.spec.type}{" "}{.object.status.loadBalancer.ingress[0].ip}{"\n"}'
log "serving LoadBalancer Services from $prefix.0/24"
settle &
while true; do
  # A watch ends when the API server restarts or times it out: list and watch again.
  while read -r event ns name type ip; do
    if [ "$event" = DELETED ] || [ "$type" != LoadBalancer ]; then
      release "${ns}_${name}"
    else
      serve "$ns" "$name" "${ip:-}"
    fi
  done < <(k get services --all-namespaces --watch --output-watch-events -o jsonpath="$template" 2>/dev/null)
  sleep 1
done

# The local cluster's metrics, sourced by cluster.sh (not run on its own), started with the real node:
# - metrics-server, the resource metrics pipeline: it scrapes the real node's kubelet
#   (/metrics/resource) and serves metrics.k8s.io through the API server's aggregation layer, so
#   HorizontalPodAutoscalers (and `kubectl top`) see the pods' real CPU and memory use;
# - Prometheus, which the tests point at what the chart's ServiceMonitor selects and at the rules of
#   its PrometheusRule (tests/support/prometheus.rs plays the Prometheus Operator's part), with the
#   Prometheus Operator's ServiceMonitor and PrometheusRule CRDs installed so the API server
#   validates the chart's monitoring objects.
# Both run as host processes, like Traefik, each with its own client certificate and least privilege.

METRICS_SERVER_NAME=metrics-server

# monitoring_pki: the front-proxy CA (the API server proves to aggregated API servers which user a
# request is for with a client certificate signed by it, as kubeadm sets it up), metrics-server's
# serving and client certificates, Prometheus's client certificate.
monitoring_pki() {
  local pki=$state/pki
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt" -days 365 -subj "/CN=kubundle-local-front-proxy-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$pki/front-proxy-client.key" -out "$pki/front-proxy-client.csr" -subj "/CN=front-proxy-client" 2>/dev/null
  openssl x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" -CAkey "$pki/front-proxy-ca.key" \
    -CAcreateserial -days 365 -out "$pki/front-proxy-client.crt" -extfile <(echo "extendedKeyUsage=clientAuth") 2>/dev/null
  rm -f "$pki/front-proxy-client.csr"
  pki_cert metrics-server-serving "/CN=$METRICS_SERVER_NAME.kube-system.svc" "$(printf '%s\n' \
    "subjectAltName=IP:$NODE_IP,DNS:$METRICS_SERVER_NAME.kube-system.svc" \
    "extendedKeyUsage=serverAuth" "keyUsage=critical,digitalSignature,keyEncipherment")"
  pki_cert metrics-server "/CN=system:kubundle-local:metrics-server" "extendedKeyUsage=clientAuth"
  pki_cert prometheus "/CN=system:kubundle-local:prometheus" "extendedKeyUsage=clientAuth"
  chmod 600 "$pki"/*.key
  write_kubeconfig "$state/kubeconfigs/metrics-server.kubeconfig" metrics-server
  write_kubeconfig "$state/kubeconfigs/prometheus.kubeconfig" prometheus
}

# The API server's flags for the aggregation layer (front proxy, routing to the endpoint's address:
# metrics-server is a host process behind a Service without selector).
monitoring_apiserver_flags() {
  local pki=$state/pki
  echo --requestheader-client-ca-file="$pki/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$pki/front-proxy-client.crt" --proxy-client-key-file="$pki/front-proxy-client.key" \
    --enable-aggregator-routing=true
}

metrics_server_start() {
  local pki=$state/pki kc=$state/kubeconfigs/metrics-server.kubeconfig
  metrics_server_manifests | kubectl apply --server-side --force-conflicts -f - >/dev/null
  # Only the real node has a kubelet; kwok's nodes serve no resource metrics.
  start metrics-server --secure-port="$METRICS_SERVER_PORT" --bind-address="$NODE_IP" \
    --tls-cert-file="$pki/metrics-server-serving.crt" --tls-private-key-file="$pki/metrics-server-serving.key" \
    --kubeconfig="$kc" --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port \
    --node-selector="$NODE_TAINT_KEY=true" --metric-resolution=10s --kubelet-request-timeout=5s
  wait_for 90 "the metrics API (v1beta1.metrics.k8s.io Available)" metrics_api_available
}

metrics_api_available() {
  [ "$(kubectl get apiservice v1beta1.metrics.k8s.io \
    -o jsonpath='{.status.conditions[?(@.type=="Available")].status}' 2>/dev/null)" = True ]
}

metrics_server_manifests() {
  local ca
  ca=$(base64 -w0 <"$state/pki/ca.crt")
  cat <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "kubundle-local:metrics-server"}
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubundle-local:metrics-server"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubundle-local:metrics-server"}
subjects: [{kind: User, name: "system:kubundle-local:metrics-server", apiGroup: rbac.authorization.k8s.io}]
---
# Delegated authentication and authorization of the requests the API server forwards.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubundle-local:metrics-server:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{kind: User, name: "system:kubundle-local:metrics-server", apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "kubundle-local:metrics-server:auth-reader", namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects: [{kind: User, name: "system:kubundle-local:metrics-server", apiGroup: rbac.authorization.k8s.io}]
---
# Who may read the metrics API (the HPA controller is bound by the built-in roles).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: "kubundle-local:metrics-reader"
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: v1
kind: Service
metadata: {name: $METRICS_SERVER_NAME, namespace: kube-system}
spec:
  ports: [{name: https, port: 443, targetPort: $METRICS_SERVER_PORT, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: $METRICS_SERVER_NAME-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: $METRICS_SERVER_NAME, endpointslice.kubernetes.io/managed-by: kubundle-local}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: https, port: $METRICS_SERVER_PORT, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: $METRICS_SERVER_NAME, namespace: kube-system, port: 443}
  caBundle: $ca
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
}

# ---------------------------------------------------------------- Prometheus

# The Prometheus Operator's ServiceMonitor and PrometheusRule CRDs, from its Go module (the module
# proxy is the download site here).
install_monitoring_crds() {
  local dir f
  dir=$(cd "$cache" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir/example/prometheus-operator-crd" ] \
    || die "cannot download github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION from the Go module proxy"
  for f in servicemonitors prometheusrules; do
    kubectl apply --server-side -f "$dir/example/prometheus-operator-crd/monitoring.coreos.com_$f.yaml" >/dev/null
  done
  wait_for 60 "the ServiceMonitor CRD" kubectl wait --for=condition=Established crd/servicemonitors.monitoring.coreos.com --timeout=5s
}

# prometheus_dir: its configuration (prometheus.yml, rules/), written by whoever points it at
# targets (the tests), and its data.
prometheus_dir() { echo "$state/prometheus"; }

prometheus_start() {
  local p
  p=$(prometheus_dir)
  mkdir -p "$p/rules" "$p/data"
  prometheus_manifests | kubectl apply --server-side --force-conflicts -f - >/dev/null
  # Scraped whatever else is configured: the Gateway's own request metrics (Traefik's), which a
  # canary's analysis queries. Kept by whoever rewrites prometheus.yml (tests/support/prometheus.rs).
  echo "[{\"job_name\": \"traefik\", \"static_configs\": [{\"targets\": [\"127.0.0.1:$TRAEFIK_PING_PORT\"]}]}]" \
    >"$p/always.json"
  # Until something else is configured: fast evaluation so that alerts can be seen in tests.
  cat >"$p/prometheus.yml" <<EOF
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: ["$p/rules/*.yaml"]
scrape_configs: $(cat "$p/always.json")
EOF
  echo "PROMETHEUS_URL=http://127.0.0.1:$PROMETHEUS_PORT" >"$p/env"
  start prometheus --config.file="$p/prometheus.yml" --storage.tsdb.path="$p/data" \
    --storage.tsdb.retention.time=6h --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
    --web.listen-address="$NODE_IP:$PROMETHEUS_PORT" \
    --web.enable-lifecycle --log.level=warn
  wait_for 60 "Prometheus" curl -sf "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"
}

prometheus_manifests() {
  cat <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "kubundle-local:prometheus"}
rules:
- apiGroups: [""]
  resources: [services, endpoints, pods, namespaces]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "kubundle-local:prometheus"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "kubundle-local:prometheus"}
subjects: [{kind: User, name: "system:kubundle-local:prometheus", apiGroup: rbac.authorization.k8s.io}]
---
# Where pods reach it, as they would reach an in-cluster Prometheus: a canary's analysis queries
# http://prometheus.monitoring.svc:9090 (the host process behind a Service without selector).
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Service
metadata: {name: prometheus, namespace: monitoring}
spec:
  ports: [{name: http, port: 9090, targetPort: $PROMETHEUS_PORT, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: prometheus-host
  namespace: monitoring
  labels: {kubernetes.io/service-name: prometheus}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: http, port: $PROMETHEUS_PORT, protocol: TCP}]
EOF
}

//! Hostile AppBundles: specs the schema cannot refuse (the rule depends on other objects, or only
//! the API server's validation of the Deployment or Service knows it). Each must end Stalled with
//! the API server's words (or, where it can fix itself, Ready=False saying why its pods cannot be
//! created), and none may hold up the others: tests/real_world.rs applies them beside one good
//! AppBundle, the chaos soak beside all of its own.

use kubundle::api::AppBundle;

use super::condition_of;

/// (spec lines, words of the API server's message).
pub const CASES: &[(&str, &str)] = &[
    (
        "  resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}\n",
        "must be less than or equal to cpu limit",
    ),
    (
        "  resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}\n",
        "must be less than or equal to memory limit",
    ),
    (
        "  readinessProbe: {httpGet: {port: 0}}\n",
        "must be between 1 and 65535",
    ),
    (
        "  readinessProbe: {tcpSocket: {port: 0}}\n",
        "must be between 1 and 65535",
    ),
    (
        "  readinessProbe: {httpGet: {port: NOPE}}\n",
        "readinessProbe.httpGet.port",
    ),
    (
        "  readinessProbe: {httpGet: {port: 80}, tcpSocket: {port: 80}}\n",
        "may not specify more than 1 handler type",
    ),
    (
        "  readinessProbe: {httpGet: {port: 80}, periodSeconds: -1}\n",
        "periodSeconds",
    ),
    (
        "  livenessProbe: {httpGet: {port: 80}, successThreshold: 2}\n",
        "must be 1",
    ),
    (
        "  startupProbe: {httpGet: {port: 80}, successThreshold: 3}\n",
        "must be 1",
    ),
    (
        "  podTemplate: {serviceAccountName: Bad_Name}\n",
        "serviceAccountName",
    ),
    (
        "  podTemplate: {nodeSelector: {'bad key!': x}}\n",
        "nodeSelector",
    ),
    (
        "  podTemplate: {tolerations: [{key: a, operator: Sometimes}]}\n",
        "operator",
    ),
    (
        "  podTemplate: {affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: []}}}}\n",
        "nodeSelectorTerms",
    ),
    (
        "  podTemplate: {affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [{labelSelector: {}, topologyKey: ''}]}}}\n",
        "topologyKey",
    ),
    (
        "  podTemplate: {securityContext: {runAsUser: -1}}\n",
        "runAsUser",
    ),
    (
        "  podTemplate: {containerSecurityContext: {runAsGroup: -5}}\n",
        "runAsGroup",
    ),
    (
        "  podTemplate:\n    volumes: [{name: data, emptyDir: {}, hostPath: {path: /tmp}}]\n",
        "may not specify more than 1 volume type",
    ),
    (
        "  podTemplate:\n    volumes: [{name: data, emptyDir: {}}]\n    volumeMounts: [{name: data, mountPath: /d, subPath: /abs}]\n",
        "subPath",
    ),
    (
        "  podTemplate:\n    topologySpreadConstraints: [{maxSkew: 0, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}]\n",
        "maxSkew",
    ),
    (
        "  podTemplate:\n    topologySpreadConstraints: [{maxSkew: 1, topologyKey: zone, whenUnsatisfiable: Maybe}]\n",
        "whenUnsatisfiable",
    ),
    (
        "  podTemplate:\n    topologySpreadConstraints:\n    - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}\n    - {maxSkew: 2, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}\n",
        "duplicate entries",
    ),
    (
        "  env: [{name: A, value: x, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n",
        "may not be specified when `value` is not empty",
    ),
    (
        "  env: [{name: A, valueFrom: {fieldRef: {fieldPath: spec.nothing}}}]\n",
        "fieldPath",
    ),
    (
        "  envFrom: [{configMapRef: {name: 'Not_A_Name'}}]\n",
        "configMapRef",
    ),
    (
        "  podTemplate: {priorityClassName: no-such-priority}\n",
        "no-such-priority",
    ),
    (
        "  podTemplate: {terminationGracePeriodSeconds: 0, securityContext: {sysctls: [{name: 'not a sysctl', value: '1'}]}}\n",
        "sysctls",
    ),
    (
        "  service: {type: NodePort}\n  ports: [{containerPort: 80, nodePort: 80}]\n",
        "provided port is not in the valid range",
    ),
    (
        "  service: {type: LoadBalancer, loadBalancerSourceRanges: [not-a-cidr]}\n",
        "must be a valid CIDR",
    ),
    (
        "  service: {annotations: {'bad key!': x}}\n",
        "metadata.annotations",
    ),
    (
        "  podTemplate: {annotations: {'bad key!': x}}\n",
        "annotations",
    ),
    (
        "  podTemplate: {securityContext: {seccompProfile: {type: Localhost}}}\n",
        "localhostProfile",
    ),
];

/// Whether `b` has come to rest as a hostile AppBundle should: its status for its current
/// generation, Stalled (or, for what can fix itself, Ready=False because its pods cannot be
/// created), and not Ready.
pub fn at_rest(b: &AppBundle) -> bool {
    b.status.as_ref().and_then(|s| s.observed_generation) == b.metadata.generation
        && (condition_of(b, "Stalled").is_some_and(|c| c.0 == "True")
            || condition_of(b, "Ready").is_some_and(|c| c.1 == "PodCreationFailed"))
}

/// What is wrong with hostile AppBundle `b` (spec lines `extra`) against the server's `words`:
/// None when it is at rest, not Ready, and its condition carries the words.
pub fn wrong(b: &AppBundle, extra: &str, words: &str) -> Option<String> {
    let name = b.metadata.name.as_deref().unwrap_or_default();
    if !at_rest(b) {
        return Some(format!(
            "{name} ({}) not Stalled: {:?}",
            extra.trim(),
            b.status
        ));
    }
    let (_, reason, message) = condition_of(b, "Stalled")
        .filter(|c| c.0 == "True")
        .or_else(|| condition_of(b, "Ready"))?;
    if !message.contains(words) {
        return Some(format!(
            "{name} ({}): {reason} without the server's words {words:?}: {message}",
            extra.trim()
        ));
    }
    if condition_of(b, "Ready").is_some_and(|c| c.0 == "True") {
        return Some(format!("{name} ({}) is Ready", extra.trim()));
    }
    None
}

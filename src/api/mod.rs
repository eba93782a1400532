//! The `AppBundle` custom resource (kubundle.dev/v1alpha1): the public contract of kubundle.
//!
//! Every field's doc comment becomes its description in the CRD, and so the output of
//! `kubectl explain appbundle.spec`. Validation that can be decided from the object alone is in the
//! schema and in CEL rules (`x-kubernetes-validations`), so that `kubectl apply` refuses a bad
//! AppBundle with a message naming the field, before anything is created.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext, Probe,
    ResourceRequirements, SecurityContext, Toleration, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

mod conditions;
mod http;
pub mod rollout;
mod scaling;
pub use conditions::*;
pub use http::{GatewayRef, HttpSpec, IngressSpec};
pub use scaling::{AutoscalingSpec, DisruptionBudgetSpec};

/// The API group of kubundle's resources.
pub const GROUP: &str = "kubundle.dev";

/// The version of the AppBundle API this kubundle serves and writes.
pub const VERSION: &str = "v1alpha1";

/// The kind of the custom resource (the owner of every child).
pub const KIND: &str = "AppBundle";

/// The desired state of an AppBundle: the container to run, how many pods, and how they are
/// exposed. kubundle runs it as one Deployment and one Service of the AppBundle's name.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubundle.dev",
    version = "v1alpha1",
    kind = "AppBundle",
    plural = "appbundles",
    shortname = "ab",
    category = "all",
    namespaced,
    status = "AppBundleStatus",
    derive = "PartialEq",
    doc = "An AppBundle describes one application tier; kubundle runs it as one Deployment and one Service of the same name and keeps them as declared.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Replicas", type_ = "string", json_path = ".status.replicaSummary", description = "ready/desired pods"),
    printcolumn(name = "Type", type_ = "string", json_path = ".status.address.type", description = "how the Service exposes the pods"),
    printcolumn(name = "Address", type_ = "string", json_path = ".status.address.url"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image", priority = 1),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision", priority = 1, description = "the revision that runs"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", priority = 1),
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be at most 63 characters of lowercase letters, digits and '-', start with a letter and end with a letter or digit: it names the Service and is a label value"),
    validation = Rule::new("!has(self.spec.sidecars) || self.spec.sidecars.all(c, c.name != self.metadata.name)")
        .field_path(".spec.sidecars")
        .message("spec.sidecars[].name must differ from the AppBundle's name: the main container has that name"),
    validation = Rule::new("!has(self.spec.initContainers) || self.spec.initContainers.all(c, c.name != self.metadata.name)")
        .field_path(".spec.initContainers")
        .message("spec.initContainers[].name must differ from the AppBundle's name: the main container has that name"),
)]
#[x_kube(
    validation = Rule::new("(has(self.service) && has(self.service.type) && self.service.type == 'Headless') == (has(oldSelf.service) && has(oldSelf.service.type) && oldSelf.service.type == 'Headless')")
        .message("spec.service.type cannot change to or from Headless: a Service's cluster IP cannot be added or removed in place. Delete the AppBundle and create it again with the new type (its pods are re-created too), or create a second AppBundle under a new name"),
    validation = Rule::new("self.ports.size() > 0 || (has(self.service) && has(self.service.type) && self.service.type == 'Headless')")
        .message("spec.ports must list at least one port: the Service exposes them (only a Headless service may have none)"),
    validation = Rule::new("self.ports.all(p, !has(p.nodePort)) || (has(self.service) && has(self.service.type) && self.service.type in ['NodePort', 'LoadBalancer'])")
        .message("spec.ports[].nodePort is only allowed when spec.service.type is NodePort or LoadBalancer"),
    validation = Rule::new("!has(self.http) || self.ports.size() > 0")
        .message("spec.http routes to the Service's first port: spec.ports must list one"),
    validation = Rule::new("!has(self.rollout) || !has(self.rollout.canary) || (has(self.http) && has(self.http.gateway))")
        .field_path(".rollout.canary")
        .message("spec.rollout.canary needs spec.http.gateway: the canary's share of the requests is set by the weights of the HTTPRoute kubundle writes for the Gateway (a Service or an Ingress cannot split requests by weight)"),
    validation = Rule::new("!has(self.autoscaling) || !has(oldSelf.autoscaling) || !has(self.replicas) || (has(oldSelf.replicas) && self.replicas == oldSelf.replicas)")
        .message("spec.replicas cannot be set or changed while spec.autoscaling is set: the autoscaler sets the number of pods. Change spec.autoscaling.minReplicas or maxReplicas instead (kubectl scale cannot scale an autoscaled AppBundle), or remove spec.autoscaling (leaving spec.replicas out, or removing it, is fine)"),
    validation = Rule::new("!has(self.disruptionBudget) || !has(self.disruptionBudget.minAvailable) || (has(self.autoscaling) ? (has(self.autoscaling.minReplicas) ? self.autoscaling.minReplicas : 1) : (has(self.replicas) ? self.replicas : 1)) == 0 || (type(self.disruptionBudget.minAvailable) == int ? self.disruptionBudget.minAvailable < (has(self.autoscaling) ? (has(self.autoscaling.minReplicas) ? self.autoscaling.minReplicas : 1) : (has(self.replicas) ? self.replicas : 1)) : int(string(self.disruptionBudget.minAvailable).replace('%', '')) * (has(self.autoscaling) ? (has(self.autoscaling.minReplicas) ? self.autoscaling.minReplicas : 1) : (has(self.replicas) ? self.replicas : 1)) <= 100 * ((has(self.autoscaling) ? (has(self.autoscaling.minReplicas) ? self.autoscaling.minReplicas : 1) : (has(self.replicas) ? self.replicas : 1)) - 1))")
        .message("spec.disruptionBudget.minAvailable must leave at least one pod evictable at the fewest pods (spec.replicas, or spec.autoscaling.minReplicas; percentages round up): otherwise it blocks every eviction, and so every node drain and upgrade"),
    validation = Rule::new("!has(self.sidecars) || !has(self.initContainers) || self.sidecars.all(s, !self.initContainers.exists(i, i.name == s.name))")
        .field_path(".initContainers")
        .message("a name cannot be both in spec.sidecars and in spec.initContainers: every container of a pod needs its own name"),
)]
#[serde(rename_all = "camelCase")]
pub struct AppBundleSpec {
    /// Container image to run, e.g. `us-docker.pkg.dev/google-samples/containers/gke/gb-frontend:v5`.
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("!self.matches('^\\\\s') && !self.matches('\\\\s$')")
        .message("spec.image must not start or end with whitespace (pods with such an image cannot be created)"))]
    pub image: String,

    /// Number of pods. Not used while `autoscaling` is set. When not set, kubundle leaves the
    /// number to whoever has it: a new AppBundle starts with 1 pod, and one whose `replicas` (or
    /// `autoscaling`) was removed keeps the pods it runs. Also exposed through the scale
    /// subresource (`kubectl scale appbundle NAME --replicas=N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: Option<i32>,

    /// Seconds a rollout may make no progress before it counts as failed; the AppBundle then turns
    /// Stalled with reason ProgressDeadlineExceeded. Defaults to 600 (the Deployment default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<i32>,

    /// Entrypoint array, replacing the image's ENTRYPOINT. Not run in a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,

    /// Arguments to the entrypoint, replacing the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,

    /// Ports the container listens on. The Service exposes each of them.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = Rule::new("self.all(a, !has(a.name) || self.exists_one(b, has(b.name) && b.name == a.name))")
            .message("spec.ports[].name values must be unique"),
        validation = Rule::new("self.all(a, self.exists_one(b, b.containerPort == a.containerPort && (has(b.protocol) ? b.protocol : 'TCP') == (has(a.protocol) ? a.protocol : 'TCP')))")
            .message("spec.ports[].containerPort values must be unique per protocol"),
        validation = Rule::new("self.all(a, self.exists_one(b, (has(b.servicePort) ? b.servicePort : b.containerPort) == (has(a.servicePort) ? a.servicePort : a.containerPort) && (has(b.protocol) ? b.protocol : 'TCP') == (has(a.protocol) ? a.protocol : 'TCP')))")
            .message("spec.ports[].servicePort values (containerPort where servicePort is not set) must be unique per protocol"),
        validation = Rule::new("self.size() <= 1 || self.all(p, has(p.name))")
            .message("spec.ports[].name is required when there is more than one port (the Service needs to tell them apart)"),
    )]
    pub ports: Vec<PortSpec>,

    /// How the pods are exposed. Defaults to a ClusterIP Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// Environment variables of the container (core/v1 EnvVar: value, or valueFrom a ConfigMap or
    /// Secret key, a field or a resource). Names are unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Option<Vec<EnvVar>>,

    /// Sources of environment variables: every key of a ConfigMap or Secret (core/v1 EnvFromSource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,

    /// Compute resources of the container: requests and limits of cpu and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Image pull policy: Always, IfNotPresent or Never. Defaults as in Kubernetes (Always for
    /// `:latest` or untagged images, IfNotPresent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]), length(max = 12))]
    pub image_pull_policy: Option<String>,

    /// Readiness probe: a pod receives Service traffic only while it passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,

    /// Liveness probe: the container is restarted when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,

    /// Startup probe: the other probes wait until it succeeds once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,

    /// Settings of the pods beyond the container: labels, annotations, scheduling, identity,
    /// security and volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateSpec>,

    /// Scale the pods with their CPU and/or memory use: kubundle renders a HorizontalPodAutoscaler
    /// of the AppBundle's name for its Deployment. While set, `spec.replicas` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// Limit voluntary disruptions (node drains, upgrades): kubundle renders a PodDisruptionBudget
    /// of the AppBundle's name over its pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption_budget: Option<DisruptionBudgetSpec>,

    /// Expose the Service over HTTP: a Gateway API HTTPRoute attached to a Gateway, or an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSpec>,

    /// Containers that run beside the main container for the whole life of each pod (a log
    /// shipper, the Cloud SQL Auth Proxy), as native sidecars: they start, in order, before the
    /// init containers and the main container, are restarted when they exit, and stop after the
    /// main container. A pod is ready when its sidecars with a readiness probe are ready too.
    /// Names are unique; volumes come from spec.podTemplate.volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(c, !has(c.restartPolicy) || c.restartPolicy == 'Always')")
        .message("spec.sidecars[].restartPolicy can only be Always (kubundle sets it: that is what makes a sidecar); a container that runs once before the main container belongs in spec.initContainers"))]
    pub sidecars: Option<Vec<Container>>,

    /// Containers that run to completion, one after the other, before the main container starts
    /// (a database migration, a file download), after the sidecars have started. A pod whose init
    /// container fails is restarted until it succeeds. Names are unique; volumes come from
    /// spec.podTemplate.volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(c, !has(c.restartPolicy))")
        .message("spec.initContainers[].restartPolicy must not be set: a container that keeps running beside the main container belongs in spec.sidecars"),
        validation = Rule::new("self.all(c, !has(c.livenessProbe) && !has(c.readinessProbe) && !has(c.startupProbe))")
        .message("spec.initContainers[] cannot have probes: an init container runs to completion before the main container starts, so Kubernetes refuses liveness, readiness and startup probes on it; a container that needs them belongs in spec.sidecars"))]
    pub init_containers: Option<Vec<Container>>,

    /// Roll the pods when a ConfigMap they use changes (through env valueFrom, envFrom or a
    /// volume), and a Secret they use too when the operator may read Secrets (the chart's
    /// `configRollouts.secrets` value). kubundle records a digest of their contents on the pod
    /// template; a write that changes nothing rolls nothing. Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollout_on_config_change: bool,

    /// How many rolled-out specs to keep as revisions (ControllerRevisions of the AppBundle) for
    /// `kubectl kubundle history` and `rollback`. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub revision_history_limit: Option<i32>,

    /// How a new version of the pods reaches the users. Without it, a rolling update of the one
    /// Deployment (readiness-gated, no capacity lost). With `canary`, a second Deployment and
    /// Service (`NAME-canary`) run the new version beside the stable one and get a rising share
    /// of the HTTPRoute's requests, step by step, checked by an analysis; then the stable
    /// Deployment takes the new version (promotion), or the share goes back to 0 (abort).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<rollout::RolloutSpec>,
}

/// A port of the container, and how the Service exposes it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    /// Name of the port, used by both the container and the Service (e.g. `http`): at most 15
    /// lowercase letters, digits and '-', with at least one letter. Required when there are several ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && self.matches('[a-z]') && !self.contains('--')")
        .message("spec.ports[].name must be at most 15 lowercase letters, digits and '-', contain a letter, and not start or end with '-' or contain '--'"))]
    pub name: Option<String>,

    /// Port number the container listens on (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,

    /// Port number the Service listens on (1-65535). Defaults to containerPort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub service_port: Option<i32>,

    /// Protocol: TCP (default), UDP or SCTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["TCP", "UDP", "SCTP"]), length(max = 4))]
    pub protocol: Option<String>,

    /// Port on every node for NodePort and LoadBalancer services (usually 30000-32767). Chosen by
    /// the cluster when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,

    /// Application protocol of the port (e.g. `http`, `kubernetes.io/h2c`), for load balancers and
    /// meshes: a name, optionally with a domain prefix and '/'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(
            pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
        )
    )]
    pub app_protocol: Option<String>,
}

/// How the Service exposes the pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.externalTrafficPolicy) || (has(self.type) && self.type in ['NodePort', 'LoadBalancer'])")
        .message("spec.service.externalTrafficPolicy only applies to NodePort and LoadBalancer services: set spec.service.type, or remove it"),
    validation = Rule::new("!has(self.loadBalancerSourceRanges) || (has(self.type) && self.type == 'LoadBalancer')")
        .message("spec.service.loadBalancerSourceRanges only applies to LoadBalancer services: set spec.service.type: LoadBalancer, or remove it"),
)]
pub struct ServiceSpec {
    /// ClusterIP (default: a virtual IP inside the cluster), NodePort (also a port on every node),
    /// LoadBalancer (also an external load balancer, e.g. a Google Cloud load balancer on GKE) or
    /// Headless (no virtual IP: DNS returns the pods' addresses).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["ClusterIP", "NodePort", "LoadBalancer", "Headless"]), length(max = 12))]
    pub type_: Option<String>,

    /// Annotations of the Service, e.g. `cloud.google.com/load-balancer-type: Internal` on GKE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,

    /// Labels of the Service, in addition to the ones kubundle sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}))]
    #[x_kube(validation = Rule::new(r"self.all(k, k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))")
        .message("label keys must be a name of at most 63 letters, digits, '-', '_' or '.' (starting and ending with a letter or digit), optionally with a DNS subdomain prefix and '/'"))]
    pub labels: Option<BTreeMap<String, String>>,

    /// For LoadBalancer services: client CIDRs allowed to reach the load balancer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_source_ranges: Option<Vec<String>>,

    /// Cluster (default) or Local: whether external traffic may be routed to pods on other nodes.
    /// Local preserves the client's source IP. For NodePort and LoadBalancer services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Cluster", "Local"]), length(max = 7))]
    pub external_traffic_policy: Option<String>,
}

/// Settings of the pods beyond the container.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))")
        .message("spec.podTemplate.volumeMounts[].name must name a volume declared in spec.podTemplate.volumes"),
)]
pub struct PodTemplateSpec {
    /// Labels of the pods, in addition to the ones kubundle sets (which take precedence). They are
    /// not part of any selector, so changing them is always safe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 63, "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"}))]
    #[x_kube(validation = Rule::new(r"self.all(k, k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))")
        .message("label keys must be a name of at most 63 letters, digits, '-', '_' or '.' (starting and ending with a letter or digit), optionally with a DNS subdomain prefix and '/'"))]
    pub labels: Option<BTreeMap<String, String>>,

    /// Annotations of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,

    /// ServiceAccount the pods run as (e.g. one bound to a Google service account with Workload Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,

    /// Node labels a node must have to run the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,

    /// Tolerations of node taints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,

    /// Node and pod affinity and anti-affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the pods are spread across zones, nodes or other topology domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,

    /// Secrets holding credentials to pull the image from a private registry. Names are unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,

    /// Pod-level security settings (runAsNonRoot, fsGroup, seccompProfile, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,

    /// Container-level security settings (allowPrivilegeEscalation, capabilities,
    /// readOnlyRootFilesystem, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_security_context: Option<SecurityContext>,

    /// Volumes the pods can mount. Names are unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub volumes: Option<Vec<Volume>>,

    /// Where the container mounts the volumes (each one declared in `volumes`). Mount paths are unique.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["mountPath"]))]
    pub volume_mounts: Option<Vec<VolumeMount>>,

    /// Name of a PriorityClass for the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,

    /// Seconds a pod is given to stop gracefully. Defaults to 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
}

/// The observed state of an AppBundle. Written by kubundle only.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppBundleStatus {
    /// The metadata.generation this status describes. Conditions are current only when it equals
    /// metadata.generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready: the newest spec is fully rolled out and the Service has its address.
    /// Reconciling: a change is being rolled out. Stalled: progress stopped on an error that needs a
    /// person (a name conflict, a failed rollout, a refused write).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Desired number of pods (the scale subresource reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// Pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,

    /// Pods that run the newest pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,

    /// Pods that have been ready for at least minReadySeconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,

    /// Ready and desired pods as `ready/desired`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_summary: Option<String>,

    /// Label selector of the pods, in string form (the scale subresource and HPAs read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The image that is fully rolled out (every pod runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Where the Service can be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<AppBundleAddress>,

    /// The autoscaler's view, while spec.autoscaling is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,

    /// The number of the revision that runs: the spec last fully rolled out, numbered from 1 in
    /// rollout order (`kubectl kubundle history` lists them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,

    /// The name of the ControllerRevision recording that spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,

    /// The canary release, while one runs and after it ends (with `spec.rollout.canary`): its
    /// phase and step, the weights, the revisions, each check's last value and verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<rollout::RolloutStatus>,
}

/// What the HorizontalPodAutoscaler of an AppBundle reports.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// Pods the autoscaler last saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,

    /// Pods the autoscaler wants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,

    /// The pods' average CPU use, in percent of their CPU request, as the autoscaler last measured
    /// it (absent until it has a measurement, or without a CPU target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_utilization: Option<i32>,

    /// The pods' average memory use, in percent of their memory request, as the autoscaler last
    /// measured it (absent until it has a measurement, or without a memory target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_utilization: Option<i32>,

    /// Why the autoscaler cannot scale, when it cannot (metrics missing, say): its own message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where the Service of an AppBundle can be reached.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppBundleAddress {
    /// The Service type (ClusterIP, NodePort, LoadBalancer or Headless).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,

    /// The Service's virtual IP inside the cluster (None for Headless).
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,

    /// URL of the first port inside the cluster, e.g. `http://frontend.guestbook.svc.cluster.local:80`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,

    /// External addresses (IPs or hostnames) of a LoadBalancer service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<String>,
}

mod crd;
pub use crd::crd;

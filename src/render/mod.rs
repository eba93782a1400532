//! Rendering: the pure part of kubundle. An `AppBundle` becomes the Deployment and the Service that
//! run it. No I/O here: what these functions return is exactly what kubundle applies (server-side
//! apply, field manager `kubundle`), so every field set here is a field kubundle owns, and every
//! field left out is one it leaves to others (defaults, an HPA, a cloud controller).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PodSpec, PodTemplateSpec, Service, ServicePort,
    ServiceSpec as CoreServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use crate::api::{AppBundle, PortSpec};

/// The field manager of every write kubundle makes.
pub const FIELD_MANAGER: &str = "kubundle";

/// Whether the object's controller (the owner reference with `controller: true`, as rendered for
/// every child) is the object of UID `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Label keys kubundle sets on its children (the Kubernetes recommended labels).
pub mod labels {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// The value of `app.kubernetes.io/managed-by`.
    pub const MANAGER: &str = "kubundle";
}

/// Why an AppBundle cannot be rendered. The schema rules out most bad input at admission; this is
/// what is left (an object that has not been stored yet has no UID, say).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("the AppBundle has no {0} (it must come from the API server)")]
    MissingMetadata(&'static str),
    #[error("the {0} cannot be encoded: {1}")]
    Encode(&'static str, String),
}

pub mod canary;
pub mod config;
mod http;
pub mod paths;
mod scaling;
mod set;
pub use http::{GKE_INGRESS_CLASSES, INGRESS_CLASS_ANNOTATION, http_route, ingress};
pub use scaling::{DEFAULT_CPU_TARGET, autoscaler, disruption_budget};
pub use set::{ChildKind, Rendered, children, children_with};

/// The children's selector: only labels that never change for a given AppBundle, because a
/// Deployment's selector is immutable and user label edits must not break it.
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), name.to_string()),
        (labels::INSTANCE.to_string(), name.to_string()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
    ])
}

/// The selector in its string form, as the scale subresource reports it.
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The Service type kubundle applies for `spec.service.type` (Headless is a ClusterIP Service
/// without a cluster IP).
pub fn service_type(bundle: &AppBundle) -> &str {
    bundle
        .spec
        .service
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("ClusterIP")
}

/// The name, namespace and controller owner reference every object kubundle makes for `bundle`
/// carries.
pub(crate) fn identity(
    bundle: &AppBundle,
) -> Result<(String, String, OwnerReference), RenderError> {
    let name = bundle
        .metadata
        .name
        .clone()
        .ok_or(RenderError::MissingMetadata("metadata.name"))?;
    let namespace = bundle
        .metadata
        .namespace
        .clone()
        .ok_or(RenderError::MissingMetadata("metadata.namespace"))?;
    let mut owner = bundle
        .controller_owner_ref(&())
        .ok_or(RenderError::MissingMetadata("metadata.uid"))?;
    // Foreground deletion of the AppBundle waits for its children, as with built-in controllers.
    owner.block_owner_deletion = Some(true);
    Ok((name, namespace, owner))
}

/// Label prefixes of the AppBundle's own labels that are about the AppBundle object itself (GitOps
/// tracking, kubectl bookkeeping) and are not passed on to its children: on a child they would make
/// the GitOps tool count the child as its own object.
const NOT_INHERITED: &[&str] = &[
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "kubectl.kubernetes.io/",
    "app.kubernetes.io/managed-by",
];

/// The AppBundle's `metadata.labels` that its children carry too (the tutorial's `app: redis`,
/// `tier: backend`), so that `kubectl get pods -l app=redis` finds the pods.
pub fn inherited_labels(bundle: &AppBundle) -> BTreeMap<String, String> {
    bundle
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_INHERITED.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Labels of a child object: the user's labels, then kubundle's (which win).
fn child_labels(
    name: &str,
    user: &[Option<&BTreeMap<String, String>>],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for map in user.iter().flatten() {
        out.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out.extend(selector_labels(name));
    out
}

fn protocol(port: &PortSpec) -> String {
    port.protocol.clone().unwrap_or_else(|| "TCP".to_string())
}

/// The Deployment of an AppBundle.
pub fn deployment(bundle: &AppBundle) -> Result<Deployment, RenderError> {
    let (name, namespace, owner) = identity(bundle)?;
    let spec = &bundle.spec;
    let pod = spec.pod_template.clone().unwrap_or_default();
    let inherited = inherited_labels(bundle);
    let user_labels = child_labels(&name, &[Some(&inherited), pod.labels.as_ref()]);

    let container = Container {
        name: name.clone(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.clone(),
        command: spec.command.clone(),
        args: spec.args.clone(),
        ports: (!spec.ports.is_empty()).then(|| {
            spec.ports
                .iter()
                .map(|p| ContainerPort {
                    name: p.name.clone(),
                    container_port: p.container_port,
                    protocol: Some(protocol(p)),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        env: spec.env.clone(),
        env_from: spec.env_from.clone(),
        resources: spec.resources.clone(),
        readiness_probe: spec.readiness_probe.clone(),
        liveness_probe: spec.liveness_probe.clone(),
        startup_probe: spec.startup_probe.clone(),
        security_context: pod.container_security_context.clone(),
        volume_mounts: pod.volume_mounts.clone(),
        ..Container::default()
    };

    Ok(Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(user_labels.clone()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            // With autoscaling, the HorizontalPodAutoscaler sets the replicas, and without
            // `spec.replicas` nobody asked for a number: kubundle leaves the field out (see
            // reconcile/children/handover.rs for how the field changes hands without a dip).
            replicas: spec.replicas.filter(|_| spec.autoscaling.is_none()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            progress_deadline_seconds: spec.progress_deadline_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(user_labels),
                    annotations: pod.annotations.clone(),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    init_containers: init_containers(spec, pod.container_security_context.as_ref()),
                    containers: vec![container],
                    service_account_name: pod.service_account_name,
                    node_selector: pod.node_selector,
                    tolerations: pod.tolerations,
                    affinity: pod.affinity,
                    topology_spread_constraints: pod.topology_spread_constraints,
                    image_pull_secrets: pod.image_pull_secrets,
                    security_context: pod.security_context,
                    volumes: pod.volumes,
                    priority_class_name: pod.priority_class_name,
                    termination_grace_period_seconds: pod.termination_grace_period_seconds,
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

/// The pod's init containers: the sidecars first (native sidecars: init containers that restart
/// always, started in order and kept running), then the init containers proper, which so can use
/// the sidecars (a migration through a database proxy). A container without a security context of
/// its own gets the main container's (`spec.podTemplate.containerSecurityContext`), so that one
/// setting makes every container of the pod fit a namespace's Pod Security Standard.
fn init_containers(
    spec: &crate::api::AppBundleSpec,
    security: Option<&k8s_openapi::api::core::v1::SecurityContext>,
) -> Option<Vec<Container>> {
    let sidecars = spec.sidecars.iter().flatten().map(|c| Container {
        restart_policy: Some("Always".to_string()),
        ..c.clone()
    });
    let init = spec.init_containers.iter().flatten().cloned();
    let all: Vec<Container> = sidecars
        .chain(init)
        .map(|mut c| {
            if c.security_context.is_none() {
                c.security_context = security.cloned();
            }
            c
        })
        .collect();
    (!all.is_empty()).then_some(all)
}

/// The Service of an AppBundle.
pub fn service(bundle: &AppBundle) -> Result<Service, RenderError> {
    let (name, namespace, owner) = identity(bundle)?;
    let spec = &bundle.spec;
    let svc = spec.service.clone().unwrap_or_default();
    let pod_labels = spec.pod_template.as_ref().and_then(|p| p.labels.as_ref());
    let type_ = service_type(bundle);
    let external = matches!(type_, "NodePort" | "LoadBalancer");

    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.service_port.unwrap_or(p.container_port),
            target_port: Some(IntOrString::Int(p.container_port)),
            protocol: Some(protocol(p)),
            node_port: if external { p.node_port } else { None },
            app_protocol: p.app_protocol.clone(),
        })
        .collect();

    Ok(Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace),
            labels: Some(child_labels(
                &name,
                &[
                    Some(&inherited_labels(bundle)),
                    pod_labels,
                    svc.labels.as_ref(),
                ],
            )),
            annotations: svc.annotations,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(CoreServiceSpec {
            type_: Some(
                if type_ == "Headless" {
                    "ClusterIP"
                } else {
                    type_
                }
                .to_string(),
            ),
            cluster_ip: (type_ == "Headless").then(|| "None".to_string()),
            selector: Some(selector_labels(&name)),
            ports: (!ports.is_empty()).then_some(ports),
            load_balancer_source_ranges: if type_ == "LoadBalancer" {
                svc.load_balancer_source_ranges
            } else {
                None
            },
            external_traffic_policy: if external {
                svc.external_traffic_policy
            } else {
                None
            },
            ..CoreServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests;

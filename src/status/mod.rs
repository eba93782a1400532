//! Status computation: pure. From the AppBundle and what was observed of its children, the status
//! kubundle writes back (DESIGN.md §3). kstatus (Flux, Helm 4) reads it as:
//! `observedGeneration` behind `generation`, or `Reconciling=True` -> InProgress;
//! `Stalled=True` -> Failed; `Ready=True` -> Current.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::DynamicObject;

use crate::api::{
    AppBundle, AppBundleAddress, AppBundleStatus, AutoscalingStatus, FALSE, READY, RECONCILING,
    STALLED, TRUE, UNKNOWN, condition, find_condition, reason, set_condition,
};
use crate::render::config::ConfigRef;
use crate::render::{selector_string, service_type};
use pods::PodProblem;

/// What the reconciler found out, apart from the children themselves.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocker {
    /// An object of the AppBundle's name exists and kubundle does not control it.
    NameConflict {
        kind: &'static str,
        name: String,
        message: String,
    },
    /// The API server refused kubundle's write. `retry`: the refusal may depend on something
    /// other than the AppBundle (RBAC, an admission policy, quota), so kubundle tries again now and
    /// then; otherwise only a change of the AppBundle can help.
    WriteRefused {
        kind: &'static str,
        message: String,
        retry: bool,
    },
    /// The spec cannot be turned into children.
    InvalidSpec { message: String },
    /// The spec asks for a kind of child the cluster does not serve.
    ApiMissing { message: String },
    /// An object of a child's name is being deleted: kubundle waits for it to go (it fixes
    /// itself, so this is not Stalled).
    Terminating { kind: &'static str, name: String },
}

/// One condition's (status, reason, message).
type Cond = (&'static str, &'static str, String);

/// The observed children; `None` where the object does not exist.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    pub deployment: Option<&'a Deployment>,
    pub service: Option<&'a Service>,
    /// The HorizontalPodAutoscaler, with `spec.autoscaling`.
    pub autoscaler: Option<&'a HorizontalPodAutoscaler>,
    /// The HTTPRoute, with `spec.http.gateway`.
    pub route: Option<&'a DynamicObject>,
    /// The Gateway it attaches to, when kubundle read it.
    pub gateway: Option<&'a route::GatewayLook>,
    /// The Ingress, with `spec.http.ingress`.
    pub ingress: Option<&'a Ingress>,
    /// Why the newest pods do not become ready, when the rollout stopped making progress and
    /// kubundle read them ([`pods`]).
    pub pods: Option<&'a PodProblem>,
    /// ConfigMaps and Secrets the pods use (not optionally) that do not exist ([`crate::reconcile::observe::config_tracker`]).
    pub missing_config: &'a [ConfigRef],
    /// Secrets the pods use that `spec.rolloutOnConfigChange` cannot follow (kubundle may not
    /// read Secrets): said in Ready's message, so that no one waits for a rollout that will not come.
    pub unfollowed_config: &'a [ConfigRef],
}

/// A summary of the rollout, used for the Ready/Reconciling conditions and their messages.
#[derive(Clone, Debug, PartialEq)]
enum Rollout {
    /// The Deployment controller has not seen the newest Deployment spec yet.
    NotObserved,
    /// The rollout passed its progress deadline.
    /// The Deployment's deadline message, and why it cannot create pods when it says so.
    DeadlineExceeded(String, Option<String>),
    /// Pods are being replaced or started.
    InProgress(String),
    /// The Deployment cannot create pods; `true` when that will not fix itself.
    PodCreationFailed(String, bool),
    /// Every pod runs the newest template, but old pods are still shutting down.
    Terminating(i32),
    /// Every desired pod runs the newest template and is available; no old pods are left.
    Complete,
}

/// Every pod the Deployment reports runs its newest template and is available, `desired` of each,
/// and no old pod is left (pods still terminating aside).
pub fn all_pods_current(s: &DeploymentStatus, desired: i32) -> bool {
    [
        s.updated_replicas,
        s.ready_replicas,
        s.available_replicas,
        s.replicas,
    ]
    .iter()
    .all(|n| n.unwrap_or(0) == desired)
}

fn rollout(desired: i32, d: &Deployment) -> Rollout {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = d.status.as_ref() else {
        return Rollout::NotObserved;
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::NotObserved;
    }
    // Pods the ReplicaSet could not create, in the API server's words.
    let creation_failure = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == TRUE)
        .map(|c| c.message.clone().unwrap_or_default());
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && c.status == FALSE
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        // The deadline ends a rollout whatever stopped it; when pods could not be created, the
        // API server's words for that stay in the message (a missing PriorityClass, a quota).
        return Rollout::DeadlineExceeded(c.message.clone().unwrap_or_default(), creation_failure);
    }
    let total = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    // Pods with a deletionTimestamp (reported by Kubernetes 1.33+; absent means none known).
    let terminating = status.terminating_replicas.unwrap_or(0);
    if let Some(message) = creation_failure {
        // An invalid pod or one refused by Pod Security stays refused until the spec or the
        // namespace changes; quota, a missing ServiceAccount and the like can fix themselves.
        let permanent = message.contains(" is invalid") || message.contains("violates PodSecurity");
        return Rollout::PodCreationFailed(message, permanent);
    }
    if all_pods_current(status, desired) {
        if terminating > 0 {
            Rollout::Terminating(terminating)
        } else {
            Rollout::Complete
        }
    } else {
        let old = (total - updated).max(0);
        let mut msg =
            format!("{updated} of {desired} pods updated, {ready} ready, {available} available");
        if old > 0 {
            msg.push_str(&format!(", {old} old pods left"));
        }
        Rollout::InProgress(msg)
    }
}

/// The autoscaler is scaling a tier that was Ready on its current spec: every pod runs the newest
/// template (no old pod is left), at least `minReplicas` are available, the Deployment
/// controller reports no failure, the pods show no problem and no configuration is missing;
/// only the number of pods is on its way to the autoscaler's. (A scale bumps the Deployment's
/// generation, so one the Deployment controller has not seen yet counts too: a new pod template
/// kubundle wrote shows as old pods the moment it has. A scale that cannot finish shows once the
/// pods or the progress deadline say why.)
fn autoscaler_scaling(
    bundle: &AppBundle,
    previous: &AppBundleStatus,
    d: &Deployment,
    observed: &Observed,
) -> bool {
    let Some(autoscaling) = &bundle.spec.autoscaling else {
        return false;
    };
    let was_ready = previous.observed_generation == bundle.metadata.generation
        && find_condition(&previous.conditions, READY).is_some_and(|c| c.status == TRUE);
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    let failing = status.conditions.iter().flatten().any(|c| {
        (c.type_ == "ReplicaFailure" && c.status == TRUE)
            || (c.type_ == "Progressing" && c.status == FALSE)
    });
    let total = status.replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    was_ready
        && !failing
        && updated == total
        && available >= autoscaling.min()
        && observed.pods.is_none()
        && observed.missing_config.is_empty()
        && !matches!(
            rollout(desired_replicas(bundle, Some(d)), d),
            Rollout::Complete
        )
}

/// External addresses of a Service (LoadBalancer ingress IPs or hostnames).
pub fn external_addresses(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn address(bundle: &AppBundle, svc: &Service, cluster_domain: &str) -> AppBundleAddress {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let namespace = svc.metadata.namespace.as_deref().unwrap_or_default();
    let cluster_ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .filter(|ip| ip != "None" && !ip.is_empty());
    let url = bundle.spec.ports.first().map(|p| {
        let port = p.service_port.unwrap_or(p.container_port);
        let hint = p
            .app_protocol
            .as_deref()
            .or(p.name.as_deref())
            .unwrap_or_default();
        let scheme = if hint.starts_with("https") {
            "https"
        } else if hint.starts_with("http") || matches!(port, 80 | 8080) {
            "http"
        } else {
            "tcp"
        };
        format!("{scheme}://{name}.{namespace}.svc.{cluster_domain}:{port}")
    });
    AppBundleAddress {
        type_: Some(service_type(bundle).to_string()),
        cluster_ip,
        url,
        external: external_addresses(svc),
    }
}

/// Adds `note` to Ready's message (something true beside Ready's own state).
pub fn note_on_ready(status: &mut AppBundleStatus, note: &str) {
    if let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == READY) {
        ready.message = if ready.message.is_empty() {
            note.to_string()
        } else {
            format!("{}; {note}", ready.message)
        };
    }
}

/// The pods a complete rollout has: `spec.replicas`; with autoscaling the Deployment's own count
/// (the autoscaler's choice), at least the autoscaler's minimum (a new Deployment starts with one
/// pod until the autoscaler brings it up); without either, the Deployment's own count (1 for a
/// new one).
pub fn desired_replicas(bundle: &AppBundle, deployment: Option<&Deployment>) -> i32 {
    let live = deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    match (&bundle.spec.autoscaling, bundle.spec.replicas) {
        (None, Some(replicas)) => replicas,
        (None, None) => live,
        (Some(a), _) => live.max(a.min()),
    }
}

/// What the autoscaler says: its current and desired pods, and why it cannot scale if it cannot.
fn autoscaling_status(hpa: &HorizontalPodAutoscaler) -> AutoscalingStatus {
    let status = hpa.status.clone().unwrap_or_default();
    let message = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "ScalingActive" || c.type_ == "AbleToScale") && c.status == FALSE)
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        });
    let utilization = |resource: &str| {
        status
            .current_metrics
            .iter()
            .flatten()
            .filter_map(|m| m.resource.as_ref())
            .find(|r| r.name == resource)
            .and_then(|r| r.current.average_utilization)
    };
    AutoscalingStatus {
        current_replicas: status.current_replicas,
        desired_replicas: Some(status.desired_replicas),
        cpu_utilization: utilization("cpu"),
        memory_utilization: utilization("memory"),
        message,
    }
}

/// Whether going from status `old` to `new` changes what a GitOps tool or `kubectl wait` decides:
/// Ready turning True or leaving True, Stalled turning on or off, another reason to be Stalled;
/// or records a new revision (written with the revision it names, so that it is recorded once).
/// Anything else is progress (a new observedGeneration, Reconciling's reason and message,
/// replica counts, Ready between Unknown and False), which kubundle writes at most every
/// [`PROGRESS_INTERVAL`]: while it waits, kstatus (Flux, Helm) and Argo CD already say "in
/// progress", from the observedGeneration that is behind (a new AppBundle's status defaults to
/// `observedGeneration: 0`) or from the Reconciling condition.
pub fn is_milestone(old: &AppBundleStatus, new: &AppBundleStatus) -> bool {
    let cond = |s: &AppBundleStatus, t: &str| {
        find_condition(&s.conditions, t).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let is_true = |s: &AppBundleStatus, t: &str| cond(s, t).is_some_and(|c| c.0 == TRUE);
    is_true(old, READY) != is_true(new, READY)
        || old.current_revision != new.current_revision
        || is_true(old, STALLED) != is_true(new, STALLED)
        || (is_true(new, STALLED) && cond(old, STALLED) != cond(new, STALLED))
        || canary_moved(old, new)
}

/// The canary's state changed (not only its message): its next move is decided from what is
/// written, so it is written at once.
fn canary_moved(old: &AppBundleStatus, new: &AppBundleStatus) -> bool {
    let state = |s: &AppBundleStatus| {
        s.rollout.clone().map(|mut r| {
            r.message.clear();
            r
        })
    };
    state(old) != state(new)
}

/// The shortest time between two status writes of one AppBundle that only show progress (see
/// [`is_milestone`]): a rollout's steps within it are written as one.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The status of `bundle` given what was observed. `bundle.status` supplies the previous
/// conditions (whose transition times are kept while their status stays) and the last fully
/// rolled-out image.
pub fn compute(
    bundle: &AppBundle,
    observed: &Observed,
    blocker: Option<&Blocker>,
    cluster_domain: &str,
    now: &Time,
) -> AppBundleStatus {
    let previous = bundle.status.clone().unwrap_or_default();
    let desired = desired_replicas(bundle, observed.deployment);
    let mut status = counts(bundle, &previous, observed, desired, cluster_domain);
    let verdict = match blocker {
        Some(blocker) => Verdict::blocked(blocker),
        None => {
            // An autoscaler's scale of a tier Ready on this spec is no rollout: Ready stays, no
            // Event, and the counts are written once, when the scale is done.
            if let Some(d) = observed.deployment
                && autoscaler_scaling(bundle, &previous, d, observed)
            {
                return as_before_the_scale(status, previous);
            }
            let verdict = Verdict::of_children(bundle, observed, desired, &mut status);
            verdict.with_config(observed)
        }
    };
    verdict.set_on(&mut status, bundle.metadata.generation, now);
    status
}

/// The status's counts, selector, address and autoscaling, and what it keeps from `previous`
/// (the conditions, the last rolled-out image, the revision).
fn counts(
    bundle: &AppBundle,
    previous: &AppBundleStatus,
    observed: &Observed,
    desired: i32,
    cluster_domain: &str,
) -> AppBundleStatus {
    let name = bundle.metadata.name.clone().unwrap_or_default();
    let mut status = AppBundleStatus {
        observed_generation: bundle.metadata.generation,
        conditions: previous.conditions.clone(),
        selector: Some(selector_string(&name)),
        image: previous.image.clone(),
        revision: previous.revision,
        current_revision: previous.current_revision.clone(),
        ..AppBundleStatus::default()
    };
    if let Some(d) = observed.deployment {
        let s = d.status.clone().unwrap_or_default();
        status.replicas = Some(s.replicas.unwrap_or(0));
        status.ready_replicas = Some(s.ready_replicas.unwrap_or(0));
        status.updated_replicas = Some(s.updated_replicas.unwrap_or(0));
        status.available_replicas = Some(s.available_replicas.unwrap_or(0));
    }
    status.replica_summary = Some(format!("{}/{desired}", status.ready_replicas.unwrap_or(0)));
    if let Some(svc) = observed.service {
        status.address = Some(address(bundle, svc, cluster_domain));
    }
    if bundle.spec.autoscaling.is_some() {
        status.autoscaling = Some(
            observed
                .autoscaler
                .map(autoscaling_status)
                .unwrap_or_default(),
        );
    }
    status
}

/// While the autoscaler scales: the conditions and counts as they were.
fn as_before_the_scale(mut status: AppBundleStatus, previous: AppBundleStatus) -> AppBundleStatus {
    status.conditions = previous.conditions;
    status.replicas = previous.replicas;
    status.ready_replicas = previous.ready_replicas;
    status.updated_replicas = previous.updated_replicas;
    status.available_replicas = previous.available_replicas;
    status.replica_summary = previous.replica_summary;
    status.autoscaling = previous.autoscaling;
    status
}

/// Ready, Reconciling and Stalled as one verdict, each as (status, reason, message).
#[derive(Debug, PartialEq)]
struct Verdict {
    ready: Cond,
    reconciling: Cond,
    stalled: Cond,
}

/// Reconciling's message while Stalled says why.
const SEE_STALLED: &str = "stalled; see the Stalled condition";

impl Verdict {
    /// On the way to Ready: Ready `ready` (False, or Unknown before anything is known),
    /// Reconciling True for `why`, not Stalled.
    fn waiting(ready: (&'static str, &'static str), why: &'static str, msg: String) -> Self {
        Verdict {
            ready: (ready.0, ready.1, msg.clone()),
            reconciling: (TRUE, why, msg),
            stalled: (FALSE, reason::DONE, String::new()),
        }
    }

    /// Not Ready for `why`, which fixes itself: Reconciling True, not Stalled.
    fn progressing(why: &'static str, msg: String) -> Self {
        Verdict::waiting((FALSE, why), why, msg)
    }

    /// Not Ready for `why`, which will not fix itself: Stalled (kstatus: Failed).
    fn stalled(why: &'static str, msg: String) -> Self {
        Verdict {
            ready: (FALSE, why, msg.clone()),
            reconciling: (FALSE, why, SEE_STALLED.into()),
            stalled: (TRUE, why, msg),
        }
    }

    /// Ready, with `msg`.
    fn ready(msg: String) -> Self {
        Verdict {
            ready: (TRUE, reason::AVAILABLE, msg),
            reconciling: (FALSE, reason::DONE, String::new()),
            stalled: (FALSE, reason::DONE, String::new()),
        }
    }

    /// What stops the children from being written. A child of the AppBundle's name still
    /// terminating fixes itself; everything else waits for a new spec (or for RBAC, quota or
    /// an admission policy to change).
    fn blocked(blocker: &Blocker) -> Self {
        let (why, msg) = match blocker {
            Blocker::NameConflict { message, .. } => (reason::NAME_CONFLICT, message.clone()),
            Blocker::WriteRefused { kind, message, .. } => (
                reason::WRITE_REFUSED,
                format!("the API server refused to apply the {kind}: {message}"),
            ),
            Blocker::InvalidSpec { message } => (reason::INVALID_SPEC, message.clone()),
            Blocker::ApiMissing { message } => (reason::API_MISSING, message.clone()),
            Blocker::Terminating { kind, name } => {
                return Verdict::progressing(
                    reason::CHILD_TERMINATING,
                    format!(
                        "waiting for the {kind} {name} to finish terminating before re-creating it"
                    ),
                );
            }
        };
        Verdict::stalled(why, msg)
    }

    /// From the children: created yet, and how far their rollout is. A complete rollout records
    /// the image in `status` and adds the route's URL to its address.
    fn of_children(
        bundle: &AppBundle,
        observed: &Observed,
        desired: i32,
        status: &mut AppBundleStatus,
    ) -> Self {
        let (Some(d), Some(svc)) = (observed.deployment, observed.service) else {
            let msg = "creating the Deployment and the Service".to_string();
            return Verdict::waiting((UNKNOWN, reason::PENDING), reason::PENDING, msg);
        };
        match rollout(desired, d) {
            Rollout::NotObserved
                if d.status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .is_none() =>
            {
                let msg = "waiting for the Deployment controller".to_string();
                Verdict::waiting((UNKNOWN, reason::PENDING), reason::DEPLOYMENT_PENDING, msg)
            }
            Rollout::NotObserved => Verdict::progressing(
                reason::DEPLOYMENT_PENDING,
                "the Deployment controller has not seen the newest spec yet".into(),
            ),
            Rollout::DeadlineExceeded(msg, creation) => {
                let mut msg = format!("the rollout made no progress within its deadline: {msg}");
                if let Some(why) = creation {
                    msg.push_str(&format!(
                        "; the Deployment cannot create pods: {}",
                        crate::render::paths::in_bundle_terms(&why, &bundle.spec)
                    ));
                }
                if let Some(p) = observed.pods {
                    msg.push_str(&format!("; {} ({})", p.message, p.reason));
                }
                Verdict::stalled(reason::PROGRESS_DEADLINE_EXCEEDED, msg)
            }
            // The pods say why the rollout does not progress: the kubelet's or the scheduler's
            // reason, Stalled when it will not fix itself (kstatus: Failed).
            Rollout::InProgress(msg) => match observed.pods {
                Some(p) if p.permanent => {
                    Verdict::stalled(p.reason, format!("{msg}: {}", p.message))
                }
                Some(p) => Verdict::progressing(p.reason, format!("{msg}: {}", p.message)),
                None => Verdict::progressing(reason::ROLLING_OUT, msg),
            },
            Rollout::PodCreationFailed(msg, permanent) => {
                let msg = format!(
                    "the Deployment cannot create pods: {}",
                    crate::render::paths::in_bundle_terms(&msg, &bundle.spec)
                );
                if permanent {
                    Verdict::stalled(reason::POD_CREATION_FAILED, msg)
                } else {
                    Verdict::progressing(reason::POD_CREATION_FAILED, msg)
                }
            }
            Rollout::Terminating(n) => Verdict::progressing(
                reason::PODS_TERMINATING,
                format!(
                    "{desired} of {desired} pods run {}; waiting for {n} old pods to terminate",
                    bundle.spec.image
                ),
            ),
            Rollout::Complete => Verdict::complete(bundle, observed, desired, svc, status),
        }
    }

    /// Every pod runs the newest spec: Ready once the way in is there too (the load balancer's
    /// address, the route or the Ingress).
    fn complete(
        bundle: &AppBundle,
        observed: &Observed,
        desired: i32,
        svc: &Service,
        status: &mut AppBundleStatus,
    ) -> Self {
        status.image = Some(bundle.spec.image.clone());
        let routing = route::readiness(bundle, observed.route, observed.gateway, observed.ingress);
        if let (Some(Ok(Some(url))), Some(address)) = (&routing, status.address.as_mut()) {
            address.external.push(url.clone());
        }
        if service_type(bundle) == "LoadBalancer" && external_addresses(svc).is_empty() {
            return Verdict::progressing(
                reason::WAITING_FOR_ADDRESS,
                "all pods are available; waiting for the load balancer to get an external address"
                    .into(),
            );
        }
        if let Some(Err((why, msg))) = routing {
            return Verdict::progressing(why, msg);
        }
        Verdict::ready(format!(
            "{desired} of {desired} pods run {} and are available",
            bundle.spec.image
        ))
    }

    /// The configuration the pods use. A missing ConfigMap or Secret explains pods that do not
    /// start better than anything the pods say (CreateContainerConfigError names one at a time),
    /// and before they say it. Pods that already run keep what they read, but the next pod (a
    /// restart, a scale-up, a node drain) cannot start: the tier is not Ready. It fixes itself
    /// once the object is created (a GitOps tool may apply it later), so it is not Stalled.
    /// Secrets kubundle cannot follow are said in Ready's message.
    fn with_config(mut self, observed: &Observed) -> Self {
        let missing = observed.missing_config;
        if !missing.is_empty() && observed.deployment.is_some() && self.stalled.0 != TRUE {
            let msg = missing_message(missing);
            self.ready = (FALSE, reason::CONFIG_MISSING, msg.clone());
            self.reconciling = (TRUE, reason::CONFIG_MISSING, msg);
        }
        if !observed.unfollowed_config.is_empty() {
            let names = observed
                .unfollowed_config
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let note = format!(
                "changes of Secret {names} roll nothing: kubundle may not read Secrets (chart value configRollouts.secrets)"
            );
            self.ready.2 = if self.ready.2.is_empty() {
                note
            } else {
                format!("{}; {note}", self.ready.2)
            };
        }
        self
    }

    /// Sets the three conditions on `status` (a condition's transition time stays while its
    /// status does).
    fn set_on(self, status: &mut AppBundleStatus, generation: Option<i64>, now: &Time) {
        for (type_, (value, why, msg)) in [
            (READY, self.ready),
            (RECONCILING, self.reconciling),
            (STALLED, self.stalled),
        ] {
            set_condition(
                &mut status.conditions,
                condition(type_, value, why, msg, generation, now),
            );
        }
    }
}

/// What the status says of missing configuration objects.
fn missing_message(missing: &[ConfigRef]) -> String {
    let list = missing
        .iter()
        .map(|r| format!("{} {} (used by {})", r.kind.name(), r.name, r.field))
        .collect::<Vec<_>>()
        .join(", ");
    let (verb, it) = if missing.len() == 1 {
        ("does", "it")
    } else {
        ("do", "them")
    };
    format!(
        "{list} {verb} not exist in the namespace: the pods cannot start without {it}; create {it}, or mark the reference optional"
    )
}

mod canary;
pub mod pods;
pub mod route;
pub use canary::with_canary;

#[cfg(test)]
mod tests;

//! The observe step: what the status is computed from, beyond the children themselves. The
//! rollout's progress; when it stopped making progress, why its newest pods do not become ready
//! (read only then, so healthy rollouts and steady state cost no pod reads); the Gateway an
//! HTTPRoute attaches to.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use super::read::Children;
use super::run::{Run, Step};
use crate::api::AppBundle;
use crate::reconcile::children::Child;
use crate::reconcile::context::Context;
use crate::reconcile::observe::children_cache::compare_versions;
use crate::reconcile::observe::config_tracker::Resolved;
use crate::render::{self, ChildKind};
use crate::status::pods::{self, PodProblem, Progress};
use crate::status::route::GatewayLook;
use crate::status::{self, Observed};

/// The children, parsed, and what was read besides them.
pub(super) struct Seen<'a> {
    deployment: Option<Deployment>,
    service: Option<Service>,
    autoscaler: Option<HorizontalPodAutoscaler>,
    ingress: Option<Ingress>,
    route: Option<&'a DynamicObject>,
    gateway: Option<GatewayLook>,
    problem: Option<PodProblem>,
    /// The rollout's progress.
    pub progress: Progress,
}

impl Seen<'_> {
    /// What the status is computed from, with the configuration the pods use.
    pub fn observed<'s>(&'s self, config: &'s Resolved) -> Observed<'s> {
        Observed {
            deployment: self.deployment.as_ref(),
            service: self.service.as_ref(),
            autoscaler: self.autoscaler.as_ref(),
            route: self.route,
            gateway: self.gateway.as_ref(),
            ingress: self.ingress.as_ref(),
            pods: self.problem.as_ref(),
            missing_config: &config.missing,
            unfollowed_config: &config.unfollowed,
        }
    }
}

/// `gateway`: the Gateway as the canary step read it, if it did (it is not read twice).
pub(super) async fn observe<'a>(
    run: &Run<'_>,
    bundle: &AppBundle,
    children: &'a Children,
    gateway: Option<GatewayLook>,
) -> Step<Seen<'a>> {
    let (ctx, ns, name) = (run.ctx, &run.ns, &children.name);
    let deployment: Option<Deployment> = children
        .live(ChildKind::Deployment)
        .and_then(Child::live_as);
    let progress = pods::progress(
        deployment.as_ref(),
        status::desired_replicas(bundle, deployment.as_ref()),
        &run.now,
    );
    let unblocked = children.blocker.is_none();
    // A rollout that seems stuck may be a cache that missed the Deployment's changes (observe/relist.rs).
    if matches!(progress, Progress::Stuck)
        && unblocked
        && deployment_cache_behind(ctx, ns, name).await
    {
        return Ok(ControlFlow::Break(Action::requeue(Duration::from_millis(
            100,
        ))));
    }
    let problem = match progress {
        Progress::Stuck if unblocked => read_pod_problem(ctx, ns, name).await,
        _ => None,
    };
    let route = children.live(ChildKind::HttpRoute).and_then(Child::live);
    let gateway = match (route, gateway) {
        (Some(_), Some(look)) => Some(look),
        (Some(_), None) => read_gateway(ctx, bundle).await,
        (None, _) => None,
    };
    Ok(ControlFlow::Continue(Seen {
        deployment,
        service: children.live(ChildKind::Service).and_then(Child::live_as),
        autoscaler: children
            .live(ChildKind::HorizontalPodAutoscaler)
            .and_then(Child::live_as),
        ingress: children.live(ChildKind::Ingress).and_then(Child::live_as),
        route,
        gateway,
        problem,
        progress,
    }))
}

/// Reads the Deployment `name` from the API server; true when the cache is behind it (a version
/// the API server had at an earlier look never arrived, see [`crate::reconcile::relist`]): then
/// the fresh object is cached and the Deployments' watch lists again. A failed read says nothing.
async fn deployment_cache_behind(ctx: &Context, ns: &str, name: &str) -> bool {
    let kind = ChildKind::Deployment;
    let Some(cached) = ctx.cache.get(kind, ns, name) else {
        return false;
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &kind.api_resource());
    let fresh = match api.get(name).await {
        Ok(fresh) => fresh,
        Err(e) => {
            debug!(error = %e, "cannot read the Deployment to check the cache");
            return false;
        }
    };
    let theirs = fresh.resource_version().unwrap_or_default();
    let behind = ctx.relists.behind(
        &format!("{ns}/{name}"),
        &cached.resource_version,
        &theirs,
        Instant::now(),
        compare_versions,
    );
    if behind {
        warn!(
            cached = %cached.resource_version,
            api_server = %theirs,
            "kubundle's cached Deployment was behind the API server (its watch missed events): using the fresh one and listing Deployments again"
        );
        ctx.metrics
            .cache_stale
            .with_label_values(&[kind.plural()])
            .inc();
        ctx.cache.record(kind, &fresh);
        ctx.relists.request(kind.plural());
    }
    behind
}

/// The Gateway the HTTPRoute attaches to (for the URL's host, scheme and port, and to say when
/// it does not exist). A read kubundle may not make says nothing.
pub(super) async fn read_gateway(ctx: &Context, bundle: &AppBundle) -> Option<GatewayLook> {
    let gateway = bundle.spec.http.as_ref()?.gateway.as_ref()?;
    let ns = gateway
        .namespace
        .clone()
        .or_else(|| bundle.namespace())
        .unwrap_or_default();
    let resource = kube::api::ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        plural: "gateways".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &resource);
    match api.get_opt(&gateway.name).await {
        Ok(Some(found)) => Some(GatewayLook::Found(Box::new(found))),
        Ok(None) => Some(GatewayLook::Missing),
        Err(e) => {
            debug!(error = %e, "cannot read the Gateway");
            None
        }
    }
}

/// The problem of the AppBundle's newest pods, if any. A failed read (kubundle may lack the
/// permission to list pods) only loses the diagnosis: the status still says the rollout is stuck.
async fn read_pod_problem(ctx: &Context, ns: &str, name: &str) -> Option<PodProblem> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let params = ListParams::default().labels(&render::selector_string(name));
    match api.list(&params).await {
        Ok(list) => pods::diagnose(&list.items),
        Err(e) => {
            debug!(error = %e, "cannot read the pods to say why the rollout is stuck");
            None
        }
    }
}

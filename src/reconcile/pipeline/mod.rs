//! One reconcile of one AppBundle, as a list of steps, each in the file of its job:
//!
//! guard -> parse -> [`configure`] -> render -> [`read`] -> [`write`] -> [`observe`] -> status
//! ([`crate::status`]) -> [`record`] -> [`notes`] -> [`announce`] -> the status write
//! ([`crate::reconcile::report`]) -> [`schedule`].
//!
//! A step either hands its result to the next or ends the reconcile with an [`Action`]
//! (`ControlFlow::Break`): a namespace being deleted, an AppBundle deleted meanwhile, a spec that
//! cannot get as far as its children.

mod announce;
mod configure;
mod notes;
mod observe;
mod read;
mod record;
mod schedule;
mod write;

use std::ops::ControlFlow;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::debug;

use super::report::write_status;
use super::{CachedBundle, Context};
use crate::api::AppBundle;
use crate::error::Result;
use crate::render::{self, ChildKind};
use crate::status::{self, Blocker, Observed};

/// The result of a step: go on with it, or end the reconcile with this action.
type Step<T> = Result<ControlFlow<Action, T>>;

/// Hands a step's result on, or returns its action from the reconcile.
macro_rules! next {
    ($step:expr) => {
        match $step? {
            ControlFlow::Continue(value) => value,
            ControlFlow::Break(action) => return Ok(action),
        }
    };
}

/// What every step of one reconcile knows: the controller's context, the AppBundle's namespace
/// and reference (for Events), the API its status is written through, and the moment the
/// reconcile began (for the conditions' transition times and the rollout's progress).
struct Run<'a> {
    ctx: &'a Context,
    ns: String,
    reference: ObjectReference,
    status_api: Api<CachedBundle>,
    now: Time,
}

pub async fn reconcile_one(obj: &CachedBundle, ctx: &Context) -> Result<Action> {
    // The cache may not have kubundle's own last status write yet: then that is the AppBundle.
    let newest = ctx.own_writes.newest(obj);
    let obj: &CachedBundle = &newest;
    if being_deleted(ctx, obj) {
        return Ok(Action::await_change());
    }
    let run = Run::new(ctx, obj);
    let bundle = next!(run.parse(obj).await);
    let config = next!(configure::configure(ctx, &run.ns, &bundle).await);
    let rendered = next!(run.render(&bundle, config.digest.as_deref()).await);
    let mut children =
        read::children(ctx, &run.ns, &bundle, rendered, config.digest.is_some()).await?;
    let written = next!(write::as_a_unit(&run, &bundle, &mut children).await);
    let seen = next!(observe::observe(&run, &bundle, &children).await);
    let mut status = status::compute(
        &bundle,
        &seen.observed(&config.resolved),
        children.blocker.as_ref(),
        &ctx.settings.cluster_domain,
        &run.now,
    );
    let blocker = children.blocker.as_ref();
    let history_retry = record::history(&run, &bundle, blocker, &written, &mut status).await;
    let class_recheck = notes::on_ready(&run, &bundle, &children.name, &written, &mut status).await;
    let made_of = made_of(&children);
    let drain_recheck = written.drain_recheck;
    announce::changes(&run, &bundle, &config, &children, written.changes, &status);
    let held_back = write_status(
        &ctx.reporter(),
        &run.status_api,
        &bundle,
        &status,
        &run.reference,
        &made_of,
    )
    .await?;
    Ok(schedule::next_look(&[
        schedule::after_blocker_or_progress(children.blocker.as_ref(), &seen.progress),
        held_back,
        history_retry,
        class_recheck,
        drain_recheck,
        config.settle_again,
    ]))
}

/// kubundle has not written this AppBundle's status yet (it is the CRD's default,
/// observedGeneration 0): its children, if any exist, were made in this very rollout.
fn never_reported(bundle: &AppBundle) -> bool {
    bundle
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0)
        == 0
}

/// The children, as the status's message names them ("Deployment web, Service web").
fn made_of(children: &read::Children) -> String {
    children
        .set
        .iter()
        .map(|c| format!("{} {}", c.kind.name(), children.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Being deleted (any propagation policy): the garbage collector takes the children away, and
/// kubundle must not put them back. Nothing to write, not even status.
fn being_deleted(ctx: &Context, obj: &CachedBundle) -> bool {
    if obj.metadata.deletion_timestamp.is_none() {
        return false;
    }
    ctx.config
        .forget(&obj.namespace().unwrap_or_default(), &obj.name_any());
    debug!("being deleted; nothing to do");
    true
}

impl<'a> Run<'a> {
    fn new(ctx: &'a Context, obj: &CachedBundle) -> Self {
        let ns = obj.namespace().unwrap_or_default();
        Run {
            ctx,
            reference: obj.object_ref(&()),
            // Status writes answer with the object, read as the cache reads it: even an AppBundle
            // whose spec this version cannot read gets its status written.
            status_api: Api::namespaced(ctx.client.clone(), &ns),
            ns,
            now: Time(k8s_openapi::jiff::Timestamp::now()),
        }
    }

    /// The AppBundle, parsed; a stored spec that does not fit this version's types (the schema
    /// let it through) is reported as an invalid spec.
    async fn parse(&self, obj: &CachedBundle) -> Step<AppBundle> {
        match obj.bundle() {
            Ok(bundle) => Ok(ControlFlow::Continue(bundle)),
            Err(e) => {
                let message =
                    format!("the AppBundle cannot be read by this version of kubundle: {e}");
                let mut stub = AppBundle::new(
                    &obj.name_any(),
                    serde_json::from_value(serde_json::json!({"image": "-"})).unwrap(),
                );
                stub.metadata = obj.metadata.clone();
                stub.status = obj.status.clone();
                self.blocked(&stub, Blocker::InvalidSpec { message }).await
            }
        }
    }

    /// The children the spec asks for, rendered with the configuration digest `digest`; a spec
    /// that cannot be rendered, or that asks for an API this cluster does not serve, is reported.
    async fn render(
        &self,
        bundle: &AppBundle,
        digest: Option<&str>,
    ) -> Step<Vec<render::Rendered>> {
        let rendered = match render::children(bundle, digest) {
            Ok(rendered) => rendered,
            Err(e) => {
                let message = e.to_string();
                return self.blocked(bundle, Blocker::InvalidSpec { message }).await;
            }
        };
        if !self.ctx.settings.gateway_api && rendered.iter().any(|r| r.kind == ChildKind::HttpRoute)
        {
            let blocker = Blocker::ApiMissing {
                message: "spec.http.gateway asks for an HTTPRoute, but this cluster does not serve the Gateway API \
                          (gateway.networking.k8s.io/v1 HTTPRoute) to kubundle: install the Gateway API CRDs (on GKE, \
                          enable the Gateway API on the cluster) and restart kubundle, or use spec.http.ingress"
                    .into(),
            };
            return self.blocked(bundle, blocker).await;
        }
        Ok(ControlFlow::Continue(rendered))
    }

    /// Reports an AppBundle that cannot get as far as its children (its spec cannot be read or
    /// rendered); only a new spec can change that.
    async fn blocked<T>(&self, bundle: &AppBundle, blocker: Blocker) -> Step<T> {
        let status = status::compute(
            bundle,
            &Observed::default(),
            Some(&blocker),
            &self.ctx.settings.cluster_domain,
            &self.now,
        );
        let held_back = write_status(
            &self.ctx.reporter(),
            &self.status_api,
            bundle,
            &status,
            &self.reference,
            "",
        )
        .await?;
        Ok(ControlFlow::Break(match held_back {
            Some(wait) => Action::requeue(wait),
            None => Action::await_change(),
        }))
    }
}

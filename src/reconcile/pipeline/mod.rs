//! One reconcile of one AppBundle, as a list of steps, each in the file of its job:
//!
//! guard -> parse -> [`configure`] -> [`canary`] -> render -> [`read`] -> [`write`] ->
//! [`observe`] -> status ([`crate::status`]) -> [`record`] -> [`notes`] -> [`announce`] -> the
//! status write ([`crate::reconcile::report`]) -> [`schedule`].
//!
//! A step either hands its result to the next or ends the reconcile with an [`Action`]
//! (`ControlFlow::Break`): a namespace being deleted, an AppBundle deleted meanwhile, a spec that
//! cannot get as far as its children.

mod announce;
mod canary;
mod configure;
mod notes;
mod observe;
mod read;
mod record;
mod run;
mod schedule;
mod spec;
mod write;

use std::ops::ControlFlow;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::debug;

use crate::error::Result;
use crate::reconcile::context::Context;
use crate::reconcile::observe::cached_bundle::CachedBundle;
use crate::reconcile::report::write_status;
use crate::status;
use run::Run;

/// Hands a step's result on, or returns its action from the reconcile.
macro_rules! next {
    ($step:expr) => {
        match $step? {
            ControlFlow::Continue(value) => value,
            ControlFlow::Break(action) => return Ok(action),
        }
    };
}

pub async fn reconcile_one(obj: &CachedBundle, ctx: &Context) -> Result<Action> {
    // The cache may not have kubundle's own last status write yet: then that is the AppBundle.
    let newest = ctx.own_writes.newest(obj);
    let obj: &CachedBundle = &newest;
    if being_deleted(ctx, obj) {
        return Ok(Action::await_change());
    }
    let run = Run::new(ctx, obj);
    let bundle = next!(spec::parse(&run, obj).await);
    let config = next!(configure::configure(ctx, &run.ns, &bundle).await);
    let mut canary = next!(canary::decide(&run, &bundle, config.digest.as_deref()).await);
    let canary_children = canary.as_ref().and_then(canary::Canary::children);
    let digest = config.digest.as_deref();
    let rendered = next!(spec::render(&run, &bundle, digest, canary_children.as_ref()).await);
    let mut children =
        read::children(ctx, &run.ns, &bundle, rendered, config.digest.is_some()).await?;
    let mut written = next!(write::as_a_unit(&run, &bundle, &mut children).await);
    let gateway = canary.as_mut().and_then(|c| c.gateway.take());
    let seen = next!(observe::observe(&run, &bundle, &children, gateway).await);
    let mut status = status::compute(
        &bundle,
        &seen.observed(&config.resolved),
        children.blocker.as_ref(),
        &ctx.settings.cluster_domain,
        &run.now,
    );
    let canary_recheck = canary.as_ref().and_then(|c| c.decision.recheck);
    let route_recheck = canary.as_ref().and_then(|c| c.settle_recheck);
    if let Some(c) = canary.as_ref() {
        status::with_canary(
            &mut status,
            c.decision.status.clone(),
            bundle.metadata.generation,
            &run.now,
        );
        if c.decision.status.is_some() {
            canary::quiet_moves(&mut written.changes, &children.name);
        }
    }
    let blocker = children.blocker.as_ref();
    let history_retry = record::history(&run, &bundle, blocker, &written, &mut status).await;
    let class_recheck = notes::on_ready(&run, &bundle, &children.name, &written, &mut status).await;
    let made_of = made_of(&children);
    let drain_recheck = written.drain_recheck;
    announce::changes(&run, &bundle, &config, &children, written.changes, &status);
    if let Some(c) = canary.as_ref() {
        c.tell(&run, &bundle);
    }
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
        canary_recheck,
        route_recheck,
    ]))
}

/// The children, as the status's message names them ("Deployment web, Service web").
fn made_of(children: &read::Children) -> String {
    children
        .set
        .iter()
        .map(|c| {
            let name = c.desired.metadata.name.as_deref().unwrap_or_default();
            format!("{} {name}", c.kind.name())
        })
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

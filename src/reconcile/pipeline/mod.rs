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
    let rendered = next!(spec::render(&run, &bundle, config.digest.as_deref()).await);
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

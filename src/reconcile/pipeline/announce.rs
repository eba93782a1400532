//! The Events of one reconcile's changes: one Event naming each child changed, or a
//! ConfigChanged Event when the pods roll for new configuration contents, unless an Event to
//! come tells it.

use k8s_openapi::api::core::v1::ObjectReference;

use super::configure::Configured;
use super::read::Children;
use super::run::{Run, never_reported};
use super::write::Changed;
use crate::api::{AppBundle, AppBundleStatus, READY, TRUE, find_condition};
use crate::events::EventType;
use crate::reconcile::children::Change;
use crate::reconcile::context::Context;
use crate::reconcile::report::publish;
use crate::render::ChildKind;
use crate::render::config::ConfigKind;

/// Tells the children's changes. A new AppBundle's first rollout names its children, and a new
/// spec that starts a rollout is told by RolledOut when it is done. Drift undone, a child
/// re-created or pruned, and a new spec that changes no pod are told now. The same spec with new
/// configuration contents rolls the pods for that, which is no drift: told as ConfigChanged.
pub(super) fn changes(
    run: &Run<'_>,
    bundle: &AppBundle,
    config: &Configured,
    children: &Children,
    mut changes: Vec<Changed>,
    status: &AppBundleStatus,
) {
    let first_rollout = never_reported(bundle)
        && changes
            .iter()
            .all(|(_, _, c)| matches!(c, Change::Created | Change::None));
    let new_spec =
        bundle.status.as_ref().and_then(|s| s.observed_generation) != bundle.metadata.generation;
    let rolling_out = children.blocker.is_none()
        && find_condition(&status.conditions, READY).is_none_or(|c| c.status != TRUE);
    let told_later = first_rollout || (new_spec && rolling_out);
    let (live, digest) = (&children.live_digest, &config.digest);
    let config_rollout = !new_spec
        && live.is_some()
        && digest.is_some()
        && live != digest
        && changes
            .iter()
            .any(|(kind, _, c)| *kind == ChildKind::Deployment.name() && *c == Change::Updated);
    if config_rollout {
        changes.retain(|(kind, _, _)| *kind != ChildKind::Deployment.name());
        config_changed(run, config, &children.name, live, digest);
    }
    if !told_later {
        announce(run.ctx, &run.reference, &changes);
    }
}

/// The ConfigChanged Event: the pods of the Deployment roll for new configuration contents.
fn config_changed(
    run: &Run<'_>,
    config: &Configured,
    name: &str,
    live: &Option<String>,
    digest: &Option<String>,
) {
    let used = config
        .refs
        .iter()
        .filter(|r| r.kind == ConfigKind::ConfigMap || run.ctx.config.follows_secrets())
        .map(|r| format!("{} {}", r.kind.name(), r.name))
        .collect::<Vec<_>>()
        .join(", ");
    publish(
        &run.ctx.reporter(),
        &run.reference,
        EventType::Normal,
        "ConfigChanged",
        format!(
            "rolling the pods of Deployment {name}: the contents of the configuration they use changed ({used}; digest {} -> {})",
            live.as_deref().unwrap_or_default(),
            digest.as_deref().unwrap_or_default()
        ),
    );
}

/// One Event for what this reconcile changed, naming each child.
pub(super) fn announce(ctx: &Context, reference: &ObjectReference, changes: &[Changed]) {
    let notes: Vec<String> = changes
        .iter()
        .filter_map(|(kind, name, change)| match change {
            Change::None => None,
            Change::Created => Some(format!("created {kind} {name}")),
            Change::Adopted => Some(format!(
                "adopted {kind} {name} (made by kubundle earlier, left without an owner)"
            )),
            Change::Updated => Some(format!(
                "updated {kind} {name} (it differed from the AppBundle)"
            )),
            Change::Deleted => Some(format!(
                "deleted {kind} {name} (the AppBundle no longer asks for it)"
            )),
        })
        .collect();
    if notes.is_empty() {
        return;
    }
    let has = |c: Change| changes.iter().any(|(_, _, x)| *x == c);
    let reason = if has(Change::Updated) {
        "Updated"
    } else if has(Change::Deleted) && !has(Change::Created) && !has(Change::Adopted) {
        "Deleted"
    } else if has(Change::Adopted) {
        "Adopted"
    } else {
        "Created"
    };
    publish(
        &ctx.reporter(),
        reference,
        EventType::Normal,
        reason,
        notes.join("; "),
    );
}

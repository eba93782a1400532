//! The configuration step: the ConfigMaps and Secrets the pods use, which of them are missing,
//! and (with spec.rolloutOnConfigChange) the digest of their contents the pod template gets.

use std::ops::ControlFlow;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;
use tracing::debug;

use super::run::Step;
use crate::api::{AppBundle, READY, find_condition, reason};
use crate::reconcile::context::Context;
use crate::reconcile::observe::config_tracker::Resolved;
use crate::render::config::{CONFIG_DIGEST, ConfigRef};
use crate::render::{self, ChildKind};

/// What the configuration step found.
pub(super) struct Configured {
    /// The ConfigMaps and Secrets the spec names.
    pub refs: Vec<ConfigRef>,
    /// Which are missing and unfollowed, and the digest of their contents now.
    pub resolved: Resolved,
    /// The digest the pod template is rendered with: the running pods' while the new one waits.
    pub digest: Option<String>,
    /// When the waiting digest is due (the configuration stops changing).
    pub settle_again: Option<Duration>,
}

pub(super) async fn configure(ctx: &Context, ns: &str, bundle: &AppBundle) -> Step<Configured> {
    let refs = render::config::references(&bundle.spec);
    let resolved = ctx
        .config
        .resolve(
            &ctx.client,
            ns,
            &bundle.name_any(),
            &refs,
            bundle.spec.rollout_on_config_change,
        )
        .await?;
    // A ConfigMap the pods need is newly missing: in a namespace being deleted that is the
    // namespace controller at work, and nothing is to be written or told.
    let newly_missing = !resolved.missing.is_empty()
        && bundle
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, READY))
            .is_none_or(|c| c.reason != reason::CONFIG_MISSING);
    if newly_missing && ctx.namespaces.terminating(&ctx.client, ns).await {
        debug!("the namespace is being deleted; nothing to do");
        return Ok(ControlFlow::Break(Action::await_change()));
    }
    let digest = digest_to_render(ctx, ns, &bundle.name_any(), &resolved);
    let settle_again = resolved
        .settling
        .filter(|_| digest != resolved.digest)
        .map(|wait| wait + Duration::from_millis(100));
    Ok(ControlFlow::Continue(Configured {
        refs,
        resolved,
        digest,
        settle_again,
    }))
}

/// The digest to render the pods with. The running pods' digest stays while a ConfigMap they need
/// is missing (pods made now could not start; its re-creation with the same contents then rolls
/// nothing) and while the configuration is still changing (a burst of edits rolls once).
fn digest_to_render(ctx: &Context, ns: &str, name: &str, resolved: &Resolved) -> Option<String> {
    let running = resolved
        .digest
        .as_ref()
        .and_then(|_| ctx.cache.get(ChildKind::Deployment, ns, name))
        .and_then(|c| {
            c.object().data["spec"]["template"]["metadata"]["annotations"][CONFIG_DIGEST]
                .as_str()
                .map(str::to_string)
        });
    match (&resolved.digest, running) {
        (Some(new), Some(running))
            if *new != running && (!resolved.missing.is_empty() || resolved.settling.is_some()) =>
        {
            debug!(missing = resolved.missing.len(), settling = ?resolved.settling, "the configuration's new digest waits");
            Some(running)
        }
        _ => resolved.digest.clone(),
    }
}

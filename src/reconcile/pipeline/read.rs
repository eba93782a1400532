//! The read step: every child the spec asks for as it is now (from the cache, or from the API
//! server where the cache cannot say), and the children the spec no longer asks for.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;

use crate::api::{AppBundle, STALLED, TRUE, find_condition, reason};
use crate::error::Result;
use crate::reconcile::children::{self, Child, Stale};
use crate::reconcile::context::Context;
use crate::render::{self, ChildKind, Rendered};
use crate::status::Blocker;

/// How long reconciles wait for the children's watches to list at startup (counted from the first
/// reconcile) before they read the children of the kinds still unlisted from the API server.
const CACHE_SYNC_WAIT: Duration = Duration::from_secs(10);

/// The AppBundle's children as this reconcile found them.
pub(super) struct Children {
    /// The AppBundle's name (each child's) and UID (their controller's).
    pub name: String,
    pub uid: String,
    /// The children the spec asks for, each with its live object (if any) and rendering.
    pub set: Vec<Child>,
    /// Children of kinds the spec no longer asks for.
    pub stale: Vec<Stale>,
    /// What stops the children from being written (a foreign object of a child's name; later
    /// also a refused write).
    pub blocker: Option<Blocker>,
    /// The configuration digest the running pods were made with (only for AppBundles that follow
    /// their configuration: parsing the Deployment costs), to tell a config-driven rollout.
    pub live_digest: Option<String>,
}

impl Children {
    /// The child of `kind` of the AppBundle's own name (not the canary's), if the spec asks for
    /// one.
    pub fn live(&self, kind: ChildKind) -> Option<&Child> {
        self.named(kind, &self.name)
    }

    /// The child of `kind` and `name`, if the spec asks for one.
    pub fn named(&self, kind: ChildKind, name: &str) -> Option<&Child> {
        self.set
            .iter()
            .find(|c| c.kind == kind && c.desired.metadata.name.as_deref() == Some(name))
    }
}

pub(super) async fn children(
    ctx: &Context,
    ns: &str,
    bundle: &AppBundle,
    rendered: Vec<Rendered>,
    follows_config: bool,
) -> Result<Children> {
    let uid = bundle.metadata.uid.clone().unwrap_or_default();
    let name = bundle.name_any();
    // Until every child kind has listed once, the cache cannot tell a missing child from one not
    // listed yet: wait a little (at startup), then read what is still unknown from the API server.
    if !ctx.cache.is_synced() {
        ctx.cache.wait_synced(CACHE_SYNC_WAIT).await;
    }
    let stale = stale(ctx, ns, &rendered, &uid, &name);
    // Every child as the cache holds it, or as the API server has it where the cache cannot say:
    // a kind not listed yet, or a missing child whose name a foreign object held at the last look
    // (so that a conflict that lasts costs one read per look, not a refused write and a read).
    let blocked_by_foreign = matches!(
        bundle.status.as_ref().and_then(|s| find_condition(&s.conditions, STALLED)),
        Some(c) if c.status == TRUE && c.reason == reason::NAME_CONFLICT
    );
    let set: Vec<Child> = futures::future::try_join_all(rendered.into_iter().map(|r| {
        let kind = r.kind;
        let child_name = r.object.name_any();
        let cached = ctx
            .cache
            .is_kind_synced(kind)
            .then(|| ctx.cache.get(kind, ns, &child_name));
        let (client, uid, name) = (&ctx.client, &uid, &name);
        async move {
            match cached {
                Some(Some(live)) => children::cached(client, ns, r, Some(&live), uid, name),
                Some(None) if !blocked_by_foreign => {
                    children::cached(client, ns, r, None, uid, name)
                }
                _ => children::read(client, ns, r, uid, name).await,
            }
        }
    }))
    .await?;
    let blocker = set.iter().find_map(Child::blocker);
    let live_digest = set
        .iter()
        .filter(|_| follows_config)
        .find(|c| c.kind == ChildKind::Deployment && c.desired.metadata.name == Some(name.clone()))
        .and_then(Child::live_as::<Deployment>)
        .and_then(|d| render::config::digest_of(&d).map(str::to_string));
    Ok(Children {
        name,
        uid,
        set,
        stale,
        blocker,
        live_digest,
    })
}

/// Children the spec no longer asks for, from the cache (no request).
/// The canary's Deployment and Service are stale once the spec has no canary; a frozen canary
/// Deployment (not rendered while its share goes to 0) is not.
fn stale(ctx: &Context, ns: &str, rendered: &[Rendered], uid: &str, name: &str) -> Vec<Stale> {
    let canary = render::canary::canary_name(name);
    let has_canary = rendered
        .iter()
        .any(|r| r.object.metadata.name.as_deref() == Some(canary.as_str()));
    let own = ChildKind::ALL
        .into_iter()
        .filter(|k| k.optional() && !rendered.iter().any(|r| r.kind == *k))
        .map(|k| (k, name));
    let canaries = [ChildKind::Deployment, ChildKind::Service]
        .into_iter()
        .filter(|_| !has_canary)
        .map(|k| (k, canary.as_str()));
    own.chain(canaries)
        .filter_map(|(k, n)| ctx.cache.get(k, ns, n).map(|c| (k, n, c.object().metadata)))
        .filter(|(_, _, meta)| children::is_stale_child(meta, uid, name))
        .map(|(kind, n, meta)| Stale {
            kind,
            name: n.to_string(),
            uid: meta.uid.unwrap_or_default(),
        })
        .collect()
}

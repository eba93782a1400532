//! Deleting the children the spec no longer asks for: exactly the object seen, never one of the
//! same name made since by someone else.

use kube::Client;
use kube::api::{DeleteParams, Preconditions};
use tracing::info;

use super::child::{Change, api, from_an_earlier_life, is_orphan};
use crate::metrics::Metrics;
use crate::reconcile::observe::children_cache::ChildCache;
use crate::render::{ChildKind, controlled_by, labels};

/// A child the spec no longer asks for, found in the watch cache: kubundle made it for this
/// AppBundle (its labels) and the AppBundle controls it (its UID).
#[derive(Clone, Debug, PartialEq)]
pub struct Stale {
    pub kind: ChildKind,
    pub name: String,
    pub uid: String,
}

/// Whether an object seen in a child watch is a stale child of the AppBundle `bundle_name`
/// (UID `owner_uid`): controlled by it, or by an earlier AppBundle of its name (deleted since),
/// or by nothing (left by an orphaning delete: the AppBundle of its name made again takes over
/// what its spec asks for, and what it does not ask for must not stay, a disruption budget
/// blocking every drain), and labelled by kubundle for it (or for its canary).
pub fn is_stale_child(meta: &kube::api::ObjectMeta, owner_uid: &str, bundle_name: &str) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let canary = crate::render::canary::canary_name(bundle_name);
    (controlled_by(meta, owner_uid)
        || from_an_earlier_life(meta, owner_uid, bundle_name)
        || is_orphan(meta, bundle_name))
        && meta.deletion_timestamp.is_none()
        && label(labels::MANAGED_BY) == Some(labels::MANAGER)
        && (label(labels::INSTANCE) == Some(bundle_name)
            || label(labels::INSTANCE) == Some(canary.as_str()))
}

/// Deletes a stale child: exactly the object seen (a UID precondition), so that an object of
/// the same name made since by someone else is never touched. Gone already counts as deleted.
pub async fn prune(
    client: &Client,
    ns: &str,
    stale: &Stale,
    metrics: &Metrics,
    cache: &ChildCache,
) -> Result<Change, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(stale.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    metrics.write(stale.kind.name(), "delete");
    let deleted = api(client, ns, stale.kind)
        .delete(&stale.name, &params)
        .await;
    // Deleted, gone already, or no longer the object seen (its UID): not a stale child any more.
    if deleted.is_ok()
        || matches!(&deleted, Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409))
    {
        cache.forget(stale.kind, ns, &stale.name, &stale.uid);
    }
    match deleted {
        Ok(_) => {
            info!(
                kind = stale.kind.name(),
                child = stale.name,
                "deleted: no longer in the spec"
            );
            Ok(Change::Deleted)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Change::None),
        Err(e) => Err(e),
    }
}

//! Recording the rollout history (see [`crate::history`]): once an AppBundle is Ready on its
//! newest spec, that spec becomes its newest revision, if it is not already.
//!
//! Requests: none while `status.currentRevision` names the spec (steady state, restarts). For a
//! new spec, one create (the number follows `status.revision`); a list too when the spec was
//! recorded before (a rollback: it is renumbered with a patch) and when there are more revisions
//! than the limit (the oldest are deleted).

use k8s_openapi::api::apps::v1::ControllerRevision;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use tracing::debug;

use crate::api::AppBundle;
use crate::history::{DEFAULT_LIMIT, controller_revision, revision_name, revisions};
use crate::metrics::Metrics;
use crate::render::{FIELD_MANAGER, selector_string};

/// Whether `bundle`'s spec is not yet its current revision.
pub fn unrecorded(bundle: &AppBundle) -> bool {
    let current = bundle
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref());
    current != Some(revision_name(&bundle.name_any(), &bundle.spec).as_str())
}

/// What [`record`] says of a revision of the wanted name that another owner controls.
pub const FOREIGN: &str = "exists and is not this AppBundle's";

/// Revisions kubundle recorded for an AppBundle of this name that nothing controls now (an
/// orphan delete of the AppBundle left them): adopted, as its children are, so the re-created
/// AppBundle keeps its history. Called when children were adopted (one list). Returns the highest
/// number among them.
pub async fn adopt_orphans(
    client: &Client,
    bundle: &AppBundle,
    metrics: &Metrics,
) -> Result<Option<i64>, kube::Error> {
    let ns = bundle.namespace().unwrap_or_default();
    let name = bundle.name_any();
    let owner = crate::render::identity(bundle)
        .map_err(|e| kube::Error::Service(e.to_string().into()))?
        .2;
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let listed = api
        .list(&ListParams::default().labels(&selector_string(&name)))
        .await?;
    let mut highest = None;
    for r in listed.items {
        let refs = r.metadata.owner_references.clone().unwrap_or_default();
        if refs.iter().any(|o| o.controller == Some(true)) {
            continue;
        }
        let mut owners = refs;
        owners.push(owner.clone());
        metrics.write("ControllerRevision", "adopt");
        // The resourceVersion makes it a compare-and-swap: a revision changed meanwhile is left.
        let patch = serde_json::json!({"metadata": {
            "ownerReferences": owners,
            "resourceVersion": r.metadata.resource_version,
        }});
        match api
            .patch(
                &r.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                debug!(revision = %r.name_any(), number = r.revision, "adopted an orphaned revision");
                highest = highest.max(Some(r.revision));
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(highest)
}

/// Records `bundle`'s spec as its newest revision, numbered after `last` (the status's);
/// returns its (number, name).
pub async fn record(
    client: &Client,
    bundle: &AppBundle,
    last: i64,
    metrics: &Metrics,
) -> Result<(i64, String), kube::Error> {
    let ns = bundle.namespace().unwrap_or_default();
    let name = bundle.name_any();
    let uid = bundle.metadata.uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let limit = i64::from(bundle.spec.revision_history_limit.unwrap_or(DEFAULT_LIMIT));
    let wanted = revision_name(&name, &bundle.spec);
    let list = || async {
        let params = ListParams::default().labels(&selector_string(&name));
        api.list(&params).await.map(|l| revisions(l.items, &uid))
    };
    // The number follows the status's (1 for the first): the status names the newest revision,
    // since only kubundle records revisions and it records the status with them.
    let number = last + 1;
    let mut known = None;
    let revision = controller_revision(bundle, number)
        .map_err(|e| kube::Error::Service(e.to_string().into()))?;
    metrics.write("ControllerRevision", "create");
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Recorded before: a rollback to an earlier spec (or a spec that came back).
            let listed = list().await?;
            if !listed.iter().any(|r| r.name == wanted) {
                return Err(kube::Error::Service(
                    format!("ControllerRevision {wanted} {FOREIGN}").into(),
                ));
            }
            known = Some(listed);
        }
        Err(e) => return Err(e),
    }
    let mut number = number;
    if let Some(k) = &known
        && let Some(old) = k.iter().find(|r| r.name == wanted)
    {
        // Renumbered as the newest, as kubectl rollout history does for a Deployment's old
        // ReplicaSet brought back.
        let newest_other = k
            .iter()
            .filter(|r| r.name != wanted)
            .map(|r| r.number)
            .max()
            .unwrap_or(0);
        number = if old.number > newest_other {
            old.number
        } else {
            newest_other + 1
        };
        if number != old.number {
            metrics.write("ControllerRevision", "patch");
            api.patch(
                &wanted,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(serde_json::json!({"revision": number})),
            )
            .await?;
        }
    }
    if number > limit {
        let all = match known {
            Some(k) => k,
            None => list().await?,
        };
        let mut others: Vec<&crate::history::Revision> =
            all.iter().filter(|r| r.name != wanted).collect();
        others.sort_by_key(|r| std::cmp::Reverse(r.number));
        for old in others.into_iter().skip((limit - 1).max(0) as usize) {
            debug!(revision = %old.name, number = old.number, "deleting a revision beyond the limit");
            metrics.write("ControllerRevision", "delete");
            match api.delete(&old.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok((number, wanted))
}

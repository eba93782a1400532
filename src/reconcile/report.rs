//! What kubundle tells people: the AppBundle's status (written only when it changed) and
//! Events (one per thing a person wants to know: children changed, Ready, Stalled, recovered).

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use tracing::warn;

use super::{CachedBundle, Context};
use crate::api::{AppBundle, AppBundleStatus, READY, STALLED, TRUE, find_condition};
use crate::error::Result;
use crate::events::EventType;
use crate::render::FIELD_MANAGER;

/// Writes the status if it changed, and publishes the Events of condition transitions.
pub async fn write_status(
    ctx: &Context,
    api: &Api<CachedBundle>,
    bundle: &AppBundle,
    status: &AppBundleStatus,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<()> {
    let previous = bundle.status.clone().unwrap_or_default();
    if &previous == status {
        return Ok(());
    }
    let body = serde_json::json!({
        "apiVersion": AppBundle::api_version(&()),
        "kind": AppBundle::kind(&()),
        "status": status,
    });
    ctx.metrics.write("AppBundle", "apply_status");
    api.patch_status(
        &bundle.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;

    let was = |t: &str| find_condition(&previous.conditions, t).map(|c| c.status.clone());
    let now = |t: &str| find_condition(&status.conditions, t).cloned();
    if let Some(ready) = now(READY)
        && ready.status == TRUE
        && was(READY).as_deref() != Some(TRUE)
    {
        publish(
            ctx,
            reference,
            EventType::Normal,
            "RolledOut",
            ready.message,
        );
    }
    if let Some(stalled) = now(STALLED) {
        if stalled.status == TRUE
            && (was(STALLED).as_deref() != Some(TRUE)
                || find_condition(&previous.conditions, STALLED).map(|c| c.reason.as_str())
                    != Some(stalled.reason.as_str()))
        {
            publish(
                ctx,
                reference,
                EventType::Warning,
                &stalled.reason,
                stalled.message,
            );
        } else if stalled.status != TRUE && was(STALLED).as_deref() == Some(TRUE) {
            publish(
                ctx,
                reference,
                EventType::Normal,
                "Recovered",
                "no longer stalled".into(),
            );
        }
    }
    Ok(())
}

/// Publishes an Event in the background: Events are for people, and must not slow a reconcile
/// (nor fail it: a lost Event is logged).
pub fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.metrics.write("Event", "publish");
    let (events, reference, reason) = (ctx.events.clone(), reference.clone(), reason.to_string());
    tokio::spawn(async move {
        if let Err(e) = events
            .publish(&reference, type_, &reason, "Reconcile", &note)
            .await
        {
            warn!(error = %e, %reason, "cannot publish an Event");
        }
    });
}

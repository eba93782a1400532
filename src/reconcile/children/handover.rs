//! Handing a Deployment's `spec.replicas` over without a dip: to the HorizontalPodAutoscaler, or
//! to nobody when the AppBundle stops declaring `replicas`.
//!
//! With a declared `spec.replicas` and no autoscaling, kubundle applies the field and owns it
//! (server-side apply). With autoscaling, or without `spec.replicas` (removed from a manifest,
//! or a spec whose autoscaling was removed), kubundle's rendering leaves the field out, and a
//! field that its only owner stops applying is removed: the Deployment would fall back to 1 pod
//! at once. So before the first apply without the field, kubundle applies the live value under a
//! second field manager, `kubundle-handover`, alone: the field then has another owner and keeps
//! its value; an autoscaler's first scale takes it over (Kubernetes' documented way to transfer
//! ownership), and a `replicas` declared later takes it back. Once kubundle no longer owns the
//! field, this does nothing. Handed to an autoscaler, the value is at least its minimum: at 0
//! pods an autoscaler does nothing.

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use tracing::info;

use super::child::{Child, Found};
use crate::api::AppBundle;
use crate::error::Result;
use crate::metrics::Metrics;

/// The field manager that holds `spec.replicas` between kubundle and the autoscaler.
pub const HANDOVER_MANAGER: &str = "kubundle-handover";

/// Before kubundle's first apply of a Deployment without `spec.replicas` (autoscaling was just
/// turned on, or `replicas` removed), hands the field to [`HANDOVER_MANAGER`] with its live value.
pub async fn release_replicas(
    bundle: &AppBundle,
    deployment: &Child,
    metrics: &Metrics,
) -> Result<()> {
    // kubundle's rendering sets the field only for a declared `spec.replicas` without autoscaling.
    if bundle.spec.autoscaling.is_none() && bundle.spec.replicas.is_some() {
        return Ok(());
    }
    let Found::Ours(live) = &deployment.found else {
        return Ok(());
    };
    if !deployment.owns_replicas {
        return Ok(());
    }
    let Some(live_replicas) = live
        .data
        .get("spec")
        .and_then(|s| s.get("replicas"))
        .and_then(serde_json::Value::as_i64)
    else {
        return Ok(());
    };
    // An autoscaler takes over at its minimum at least: one that finds its Deployment at 0 pods
    // is off ("ScalingDisabled") and would never start one, leaving the AppBundle short of pods
    // for good (`replicas: 0`, then `autoscaling` instead).
    let replicas = match &bundle.spec.autoscaling {
        Some(a) => live_replicas.max(i64::from(a.min())),
        None => live_replicas,
    };
    let name = live.name_any();
    let patch = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    metrics.write("Deployment", "apply");
    deployment
        .api
        .patch(
            &name,
            &PatchParams::apply(HANDOVER_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    info!(child = name, %replicas, "spec.replicas handed over (the AppBundle no longer sets it)");
    Ok(())
}

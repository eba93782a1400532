//! The notes step: what Ready's message adds about the way in. A stale routing child kept until
//! its replacement routes, and an Ingress waiting for an address from a class that does not
//! exist (it waits for good).

use std::time::Duration;

use k8s_openapi::api::networking::v1::IngressClass;
use kube::Api;
use tracing::debug;

use super::run::Run;
use super::write::Written;
use crate::api::{AppBundle, AppBundleStatus, READY, find_condition, reason};
use crate::reconcile::children::routing;
use crate::render;

/// How soon a missing IngressClass is looked at again (its creation is no event kubundle watches).
const CLASS_RECHECK: Duration = Duration::from_secs(60);
use crate::status;

/// Adds the notes to Ready's message; when to look at a missing IngressClass again.
pub(super) async fn on_ready(
    run: &Run<'_>,
    bundle: &AppBundle,
    name: &str,
    written: &Written,
    status: &mut AppBundleStatus,
) -> Option<Duration> {
    for kind in &written.held {
        status::note_on_ready(status, &routing::held_note(*kind, name));
    }
    let note = missing_ingress_class(run, bundle, status).await?;
    status::note_on_ready(status, &note);
    Some(CLASS_RECHECK)
}

/// While Ready waits for the Ingress's address: the named IngressClass, when it does not exist
/// (one GET). GKE's classes are not IngressClass objects, and a read kubundle may not make says
/// nothing.
async fn missing_ingress_class(
    run: &Run<'_>,
    bundle: &AppBundle,
    status: &AppBundleStatus,
) -> Option<String> {
    let waiting = find_condition(&status.conditions, READY)
        .is_some_and(|c| c.reason == reason::WAITING_FOR_INGRESS);
    let class = bundle
        .spec
        .http
        .as_ref()?
        .ingress
        .as_ref()?
        .class_name
        .as_deref()?;
    if !waiting || render::GKE_INGRESS_CLASSES.contains(&class) {
        return None;
    }
    let api: Api<IngressClass> = Api::all(run.ctx.client.clone());
    match api.get_metadata_opt(class).await {
        Ok(None) => Some(format!(
            "IngressClass {class} does not exist in this cluster, so no ingress controller will give the Ingress an address \
             (kubectl get ingressclass lists the classes; on GKE use gce or gce-internal)"
        )),
        Ok(Some(_)) => None,
        Err(e) => {
            debug!(error = %e, "cannot read the IngressClass");
            None
        }
    }
}

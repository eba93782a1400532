//! The first steps: the AppBundle's spec parsed, then rendered into its children; a spec that
//! cannot get that far is reported as blocked.

use std::ops::ControlFlow;

use kube::ResourceExt;

use super::run::{Run, Step};
use crate::api::AppBundle;
use crate::reconcile::observe::cached_bundle::CachedBundle;
use crate::render::canary::CanaryChildren;
use crate::render::{self, ChildKind};
use crate::status::Blocker;

/// The AppBundle, parsed; a stored spec that does not fit this version's types (the schema
/// let it through) is reported as an invalid spec.
pub async fn parse(run: &Run<'_>, obj: &CachedBundle) -> Step<AppBundle> {
    match obj.bundle() {
        Ok(bundle) => Ok(ControlFlow::Continue(bundle)),
        Err(e) => {
            let message = format!("the AppBundle cannot be read by this version of kubundle: {e}");
            let mut stub = AppBundle::new(
                &obj.name_any(),
                serde_json::from_value(serde_json::json!({"image": "-"})).unwrap(),
            );
            stub.metadata = obj.metadata.clone();
            stub.status = obj.status.clone();
            run.blocked(&stub, Blocker::InvalidSpec { message }).await
        }
    }
}

/// The children the spec asks for, rendered with the configuration digest `digest`; a spec
/// that cannot be rendered, or that asks for an API this cluster does not serve, is reported.
pub async fn render(
    run: &Run<'_>,
    bundle: &AppBundle,
    digest: Option<&str>,
    canary: Option<&CanaryChildren<'_>>,
) -> Step<Vec<render::Rendered>> {
    let rendered = match render::children_with(bundle, digest, canary) {
        Ok(rendered) => rendered,
        Err(e) => {
            let message = e.to_string();
            return run.blocked(bundle, Blocker::InvalidSpec { message }).await;
        }
    };
    if !run.ctx.settings.gateway_api && rendered.iter().any(|r| r.kind == ChildKind::HttpRoute) {
        let blocker = Blocker::ApiMissing {
            message: "spec.http.gateway asks for an HTTPRoute, but this cluster does not serve the Gateway API \
                      (gateway.networking.k8s.io/v1 HTTPRoute) to kubundle: install the Gateway API CRDs (on GKE, \
                      enable the Gateway API on the cluster) and restart kubundle, or use spec.http.ingress"
                .into(),
        };
        return run.blocked(bundle, blocker).await;
    }
    Ok(ControlFlow::Continue(rendered))
}

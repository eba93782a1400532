//! The set of children an AppBundle needs: every kind kubundle can make, and which of them a
//! given spec asks for. The reconciler treats them all alike (read, apply, prune, watch); adding
//! a kind is a variant here, its render function and its readiness rule in the status.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde::Serialize;

use super::canary::{
    CanaryChildren, canary_deployment, canary_service, weighted_route, with_stable_pods,
};
use super::{RenderError, autoscaler, deployment, disruption_budget, http_route, ingress, service};
use crate::api::AppBundle;

/// A kind of child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    Deployment,
    Service,
    HorizontalPodAutoscaler,
    PodDisruptionBudget,
    /// gateway.networking.k8s.io/v1 HTTPRoute (a CRD: not every cluster has it).
    HttpRoute,
    Ingress,
}

impl ChildKind {
    /// Every kind, in the order children are reported.
    pub const ALL: [ChildKind; 6] = [
        ChildKind::Deployment,
        ChildKind::Service,
        ChildKind::HorizontalPodAutoscaler,
        ChildKind::PodDisruptionBudget,
        ChildKind::HttpRoute,
        ChildKind::Ingress,
    ];

    /// The Kubernetes kind.
    pub fn name(self) -> &'static str {
        match self {
            ChildKind::Deployment => "Deployment",
            ChildKind::Service => "Service",
            ChildKind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            ChildKind::PodDisruptionBudget => "PodDisruptionBudget",
            ChildKind::HttpRoute => "HTTPRoute",
            ChildKind::Ingress => "Ingress",
        }
    }

    /// The resource's plural name (metrics and health name the watches by it).
    pub fn plural(self) -> &'static str {
        match self {
            ChildKind::Deployment => "deployments",
            ChildKind::Service => "services",
            ChildKind::HorizontalPodAutoscaler => "horizontalpodautoscalers",
            ChildKind::PodDisruptionBudget => "poddisruptionbudgets",
            ChildKind::HttpRoute => "httproutes",
            ChildKind::Ingress => "ingresses",
        }
    }

    /// Group, version and plural, for requests.
    pub fn api_resource(self) -> ApiResource {
        match self {
            ChildKind::Deployment => ApiResource::erase::<Deployment>(&()),
            ChildKind::Service => ApiResource::erase::<Service>(&()),
            ChildKind::HorizontalPodAutoscaler => {
                ApiResource::erase::<HorizontalPodAutoscaler>(&())
            }
            ChildKind::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
            ChildKind::HttpRoute => ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
                "httproutes",
            ),
            ChildKind::Ingress => ApiResource::erase::<Ingress>(&()),
        }
    }

    /// Whether an AppBundle has this child only when its spec asks for it. Only such children
    /// are ever deleted by kubundle (when the spec stops asking); the others are removed by the
    /// garbage collector with the AppBundle.
    pub fn optional(self) -> bool {
        !matches!(self, ChildKind::Deployment | ChildKind::Service)
    }
}

/// One rendered child.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub kind: ChildKind,
    pub object: DynamicObject,
}

fn erase<K: Serialize>(kind: ChildKind, object: &K) -> Result<Rendered, RenderError> {
    let value = serde_json::to_value(object)
        .map_err(|e| RenderError::Encode(kind.name(), e.to_string()))?;
    let object = serde_json::from_value(value)
        .map_err(|e| RenderError::Encode(kind.name(), e.to_string()))?;
    Ok(Rendered { kind, object })
}

/// The children `bundle` needs, in [`ChildKind::ALL`] order: a Deployment and a Service always,
/// the others when the spec asks for them. `config_digest`: the digest of the configuration the
/// pods use, with `spec.rolloutOnConfigChange` (see [`super::config`]).
pub fn children(
    bundle: &AppBundle,
    config_digest: Option<&str>,
) -> Result<Vec<Rendered>, RenderError> {
    children_with(bundle, config_digest, None)
}

/// The children `bundle` needs with a canary ([`super::canary`]): the stable Deployment on the
/// pods of `canary.stable` (when set), the HTTPRoute split by the canary's weight, and after the
/// others the canary's Deployment (unless frozen) and Service, named `NAME-canary`. Without a
/// canary, exactly [`children`].
pub fn children_with(
    bundle: &AppBundle,
    config_digest: Option<&str>,
    canary: Option<&CanaryChildren>,
) -> Result<Vec<Rendered>, RenderError> {
    let mut deployment = match canary.and_then(|c| c.stable) {
        Some(stable) => super::deployment(&with_stable_pods(bundle, stable))?,
        None => deployment(bundle)?,
    };
    if let Some(digest) = config_digest {
        super::config::annotate(&mut deployment, digest);
    }
    let mut out = vec![
        erase(ChildKind::Deployment, &deployment)?,
        erase(ChildKind::Service, &service(bundle)?)?,
    ];
    if let Some(hpa) = autoscaler(bundle)? {
        out.push(erase(ChildKind::HorizontalPodAutoscaler, &hpa)?);
    }
    if let Some(pdb) = disruption_budget(bundle)? {
        out.push(erase(ChildKind::PodDisruptionBudget, &pdb)?);
    }
    let route = match canary {
        Some(c) => weighted_route(bundle, c.weight)?,
        None => http_route(bundle)?,
    };
    if let Some(route) = route {
        out.push(Rendered {
            kind: ChildKind::HttpRoute,
            object: route,
        });
    }
    if let Some(ing) = ingress(bundle)? {
        out.push(erase(ChildKind::Ingress, &ing)?);
    }
    if let Some(c) = canary {
        if !c.frozen {
            let mut d = canary_deployment(bundle, c.replicas)?;
            if let Some(digest) = config_digest {
                super::config::annotate(&mut d, digest);
            }
            out.push(erase(ChildKind::Deployment, &d)?);
        }
        out.push(erase(ChildKind::Service, &canary_service(bundle)?)?);
    }
    Ok(out)
}

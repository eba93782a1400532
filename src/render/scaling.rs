//! The optional children that decide how many pods run: the HorizontalPodAutoscaler
//! (`spec.autoscaling`) and the PodDisruptionBudget (`spec.disruptionBudget`).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::{RenderError, child_labels, identity, inherited_labels, selector_labels};
use crate::api::AppBundle;

/// The CPU target when `spec.autoscaling` names none (what `kubectl autoscale` uses).
pub const DEFAULT_CPU_TARGET: i32 = 80;

fn utilization(resource: &str, percent: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    }
}

/// The metadata of an optional child: the AppBundle's name, its inherited and kubundle's labels,
/// controlled by the AppBundle.
pub(super) fn metadata(
    bundle: &AppBundle,
    name: &str,
    namespace: String,
    owner: OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(namespace),
        labels: Some(child_labels(name, &[Some(&inherited_labels(bundle))])),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The HorizontalPodAutoscaler of an AppBundle with `spec.autoscaling`, scaling its Deployment.
pub fn autoscaler(bundle: &AppBundle) -> Result<Option<HorizontalPodAutoscaler>, RenderError> {
    let Some(a) = bundle.spec.autoscaling.as_ref() else {
        return Ok(None);
    };
    let (name, namespace, owner) = identity(bundle)?;
    let mut metrics = Vec::new();
    let cpu = match (
        a.target_cpu_utilization_percentage,
        a.target_memory_utilization_percentage,
    ) {
        (None, None) => Some(DEFAULT_CPU_TARGET),
        (cpu, _) => cpu,
    };
    if let Some(cpu) = cpu {
        metrics.push(utilization("cpu", cpu));
    }
    if let Some(memory) = a.target_memory_utilization_percentage {
        metrics.push(utilization("memory", memory));
    }
    Ok(Some(HorizontalPodAutoscaler {
        metadata: metadata(bundle, &name, namespace, owner),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: name.clone(),
            },
            min_replicas: Some(a.min()),
            max_replicas: a.max_replicas,
            metrics: Some(metrics),
            behavior: None,
        }),
        status: None,
    }))
}

/// The PodDisruptionBudget of an AppBundle with `spec.disruptionBudget`, over its pods.
pub fn disruption_budget(bundle: &AppBundle) -> Result<Option<PodDisruptionBudget>, RenderError> {
    let Some(b) = bundle.spec.disruption_budget.as_ref() else {
        return Ok(None);
    };
    let (name, namespace, owner) = identity(bundle)?;
    Ok(Some(PodDisruptionBudget {
        metadata: metadata(bundle, &name, namespace, owner),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: b.min_available.clone(),
            max_unavailable: b.max_unavailable.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: None,
        }),
        status: None,
    }))
}

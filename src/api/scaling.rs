//! The optional parts of a tier that decide how many pods run and how many may go at once:
//! `spec.autoscaling` (a HorizontalPodAutoscaler) and `spec.disruptionBudget` (a
//! PodDisruptionBudget). Field names follow the Helm scaffold's values and the Kubernetes types.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Autoscaling: kubundle renders an autoscaling/v2 HorizontalPodAutoscaler of the AppBundle's name
/// that scales its Deployment between `minReplicas` and `maxReplicas`. While it is set, the
/// autoscaler alone sets the number of pods: `spec.replicas` is not used (and cannot be changed,
/// so `kubectl scale` says so instead of doing nothing).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.minReplicas) ? self.minReplicas : 1) <= self.maxReplicas")
        .message("spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas"),
)]
pub struct AutoscalingSpec {
    /// The fewest pods, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub min_replicas: Option<i32>,

    /// The most pods.
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: i32,

    /// Average CPU use across the pods, in percent of their CPU request, that the autoscaler keeps
    /// them at. Without any target, 80 (as `kubectl autoscale` does). Needs a CPU request.
    #[serde(
        default,
        rename = "targetCPUUtilizationPercentage",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: Option<i32>,

    /// Average memory use across the pods, in percent of their memory request. Needs a memory
    /// request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_memory_utilization_percentage: Option<i32>,
}

impl AutoscalingSpec {
    /// The fewest pods, defaulted.
    pub fn min(&self) -> i32 {
        self.min_replicas.unwrap_or(1)
    }
}

/// A disruption budget: kubundle renders a policy/v1 PodDisruptionBudget of the AppBundle's name
/// over its pods, so that voluntary disruptions (a node drain, a GKE node upgrade) leave at least
/// `minAvailable` pods, or take at most `maxUnavailable` at a time. Exactly one of the two; a
/// number or a percentage (`"50%"`). A budget that would block every eviction is refused.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.minAvailable) != has(self.maxUnavailable)")
        .message("spec.disruptionBudget needs exactly one of minAvailable and maxUnavailable"),
    validation = Rule::new("!has(self.maxUnavailable) || (type(self.maxUnavailable) == int ? self.maxUnavailable > 0 : !self.maxUnavailable.matches('^0+%$'))")
        .message("spec.disruptionBudget.maxUnavailable: 0 would block every eviction, and so every node drain and upgrade; allow at least 1"),
    validation = Rule::new("!has(self.minAvailable) || type(self.minAvailable) == int || !self.minAvailable.matches('^100%$')")
        .message("spec.disruptionBudget.minAvailable: 100% would block every eviction, and so every node drain and upgrade"),
)]
pub struct DisruptionBudgetSpec {
    /// Pods that must stay available during a voluntary disruption: a number, or a percentage
    /// of the desired pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "percent_or_count")]
    pub min_available: Option<IntOrString>,

    /// Pods that may be unavailable at once during a voluntary disruption: a number, or a
    /// percentage of the desired pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "percent_or_count")]
    pub max_unavailable: Option<IntOrString>,
}

/// A count or a percentage. (A structural schema keeps no type inside the int-or-string's
/// anyOf, so bounds by type cannot be said there: the CEL rule on the field says them.)
fn percent_or_count(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')",
            "message": "must be a number of pods (0 or more) or a percentage from 0% to 100%, like 1 or \"25%\""
        }]
    })
}

//! `spec.rollout`: how a new version of the pods reaches the users. Without it (today's default),
//! a rolling update of the one Deployment. With `canary`, a second Deployment and Service
//! (`NAME-canary`) run the new version beside the stable one, and the HTTPRoute sends it a rising
//! share of the requests, step by step, while an analysis checks it; then it is promoted, or it is
//! aborted and its share goes back to 0. The rollout's state is in `status.rollout`.
//!
//! The state machine is in [`crate::rollout`]; the controller runs it in
//! src/reconcile/pipeline/canary.rs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How new versions are rolled out.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Roll a new version out as a canary: a share of the requests first, more step by step,
    /// checked by an analysis, then promoted (or aborted). Needs `spec.http.gateway`: the share is
    /// set by the weights of the HTTPRoute kubundle writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
}

/// A canary release. It starts when the pods' spec changes (image, env, resources, probes, pod
/// template: whatever rolls the pods); changes of replicas, the Service or the route are applied
/// at once, as without a canary.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.steps.map(s, s.weight).isSorted() && self.steps.all(s, self.steps.exists_one(t, t.weight == s.weight))")
        .field_path(".steps")
        .message("spec.rollout.canary.steps[].weight must rise from one step to the next (each step sends the canary a larger share than the one before)"),
)]
pub struct CanarySpec {
    /// The shares of the requests the canary gets, in order. Each step waits until the canary's
    /// pods for it are ready and the Gateway has the new weights, then for its pause and a passing
    /// analysis. After the last step, the canary is promoted.
    #[schemars(length(min = 1, max = 10))]
    pub steps: Vec<CanaryStep>,

    /// How the canary is checked while it gets requests. Its pods' health (not ready, restarts,
    /// crash loops, out of memory) is always checked, every `intervalSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
}

/// One step of a canary.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStep {
    /// Percent of the requests sent to the canary in this step.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,

    /// Seconds to hold this step (with a passing analysis) before the next. Without it, the step
    /// waits for `kubectl kubundle promote NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub pause_seconds: Option<i32>,
}

/// The analysis of a canary: checks run every `intervalSeconds` while the canary gets requests.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Seconds between two runs of the checks. Defaults to 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 5, max = 3600))]
    pub interval_seconds: Option<i32>,

    /// Failed runs tolerated during one canary; one more aborts it. Defaults to 0: the first
    /// failed run aborts. A check without data, or one that could not be run, never fails a run:
    /// it holds the step (and says so), and aborts only at the progress deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub failure_limit: Option<i32>,

    /// Queries to a Prometheus HTTP API (Prometheus, Google Managed Prometheus, Thanos, Mimir,
    /// VictoriaMetrics): each must give one number within its bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub prometheus: Option<Vec<PrometheusCheck>>,

    /// HTTP calls (smoke tests, load tests, manual gates): each passes on a 2xx answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub webhooks: Option<Vec<WebhookCheck>>,
}

impl AnalysisSpec {
    /// Seconds between two runs, defaulted.
    pub fn interval_seconds(&self) -> i32 {
        self.interval_seconds.unwrap_or(DEFAULT_ANALYSIS_INTERVAL)
    }

    /// Failed runs tolerated, defaulted.
    pub fn failure_limit(&self) -> i32 {
        self.failure_limit.unwrap_or(0)
    }
}

/// Seconds between two analysis runs when `intervalSeconds` is not set.
pub const DEFAULT_ANALYSIS_INTERVAL: i32 = 60;

/// A Prometheus query that must stay within bounds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.min) || has(self.max)")
        .message("spec.rollout.canary.analysis.prometheus[] needs min or max (or both): the bounds the query's value must stay within"),
    validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max")
        .message("spec.rollout.canary.analysis.prometheus[].min must not exceed max"),
)]
pub struct PrometheusCheck {
    /// The check's name, as status and Events name it.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// The Prometheus HTTP API's base URL, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub address: String,

    /// An instant query giving one number. `{{canary}}`, `{{stable}}` and `{{namespace}}` are
    /// replaced by the canary's and the stable Service's names and the namespace.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,

    /// The least value that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,

    /// The greatest value that passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// An HTTP call that must answer 2xx.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookCheck {
    /// The check's name, as status and Events name it.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// The URL called (a POST with the canary's namespace, name and revision as JSON).
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,

    /// Seconds to wait for the answer; a call without one fails. Defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: Option<i32>,
}

/// Where a canary is: `status.rollout`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Stepping up: the canary's pods, the Gateway's weights, the pause and the analysis.
    Progressing,
    /// Holding a step without a pause: waiting for `kubectl kubundle promote`.
    Paused,
    /// The stable Deployment takes the canary's spec; then the canary's share goes back to it.
    Promoting,
    /// Done: the canary's spec is the stable one.
    Promoted,
    /// Stopped by a failed analysis or by hand: the canary's share went back to 0. Stays until the
    /// spec changes or `kubectl kubundle retry`.
    Aborted,
    /// The spec went back to the stable one during the canary: the canary's share went back to 0.
    Reverted,
}

/// The state of a canary release.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub phase: Phase,

    /// The step the canary is at, counted from 0.
    pub step_index: i32,

    /// The revision the canary runs (the spec's).
    pub canary_revision: String,

    /// The revision the stable Deployment ran when the canary started.
    pub stable_revision: String,

    /// The canary's share of the requests, in percent, as kubundle writes it on the HTTPRoute.
    pub weight: i32,

    /// The canary's share the Gateway has accepted (the route's status at its current
    /// generation); absent while the Gateway has not reported the last write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_weight: Option<i32>,

    /// Pods the canary Deployment is given.
    pub canary_replicas: i32,

    /// When the current phase or step began to wait (its deadline counts from here).
    pub since: Time,

    /// When the Gateway first had the current step's weight (its pause counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,

    /// When the checks last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_at: Option<Time>,

    /// Failed analysis runs during this canary.
    pub failures: i32,

    /// Each check's last result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub checks: Vec<CheckStatus>,

    /// Why the canary stopped, for `Aborted`: AnalysisFailed, AnalysisNoData, CanaryUnhealthy,
    /// ProgressDeadlineExceeded or AbortRequested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// What the canary is doing or waiting for, in words.
    pub message: String,

    /// The last promote, abort or retry request carried out (the value of its annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_request: Option<String>,
}

/// A check's last result.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub name: String,
    /// Pass, Fail, NoData or Error (could not be run); the last two hold the step.
    pub verdict: Verdict,
    /// The value measured, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The bounds it is held to, as text (`<= 0.05`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A check's verdict.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Verdict {
    Pass,
    Fail,
    /// No value (an empty result, NaN): holds the step; at the progress deadline, aborts.
    NoData,
    /// The check could not be run (unreachable, a bad query, a timeout): holds the step, as no
    /// data does (a Prometheus restarting must not abort a good release); at the progress
    /// deadline, aborts.
    Error,
}

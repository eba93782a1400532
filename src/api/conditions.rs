//! Condition types and reasons of `AppBundle.status.conditions`, and the one rule for updating them.
//!
//! The types follow the Kubernetes API conventions and kstatus (which Flux and Helm 4 use to decide
//! "healthy"): `Ready` is the summary, `Reconciling` (abnormal-true) says a change is being rolled
//! out, `Stalled` (abnormal-true) says progress stopped on an error that will not fix itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The newest spec is fully rolled out and the Service has its address.
pub const READY: &str = "Ready";
/// A change is being rolled out (kstatus: in progress).
pub const RECONCILING: &str = "Reconciling";
/// Progress stopped on an error that needs a person (kstatus: failed).
pub const STALLED: &str = "Stalled";

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Reasons: short CamelCase words, stable (tools and alerts match on them).
pub mod reason {
    /// First seen; nothing has been done yet.
    pub const PENDING: &str = "Pending";
    /// Every pod runs the newest spec and is available; the Service has its address.
    pub const AVAILABLE: &str = "Available";
    /// The Deployment is rolling out the newest spec.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// The Deployment controller has not yet observed the newest Deployment spec.
    pub const DEPLOYMENT_PENDING: &str = "DeploymentPending";
    /// A LoadBalancer Service has no external address yet.
    pub const WAITING_FOR_ADDRESS: &str = "WaitingForLoadBalancer";
    /// A Deployment or Service of the AppBundle's name exists and kubundle does not own it.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// The rollout passed its progress deadline.
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    /// The API server refused a write (forbidden, invalid).
    pub const WRITE_REFUSED: &str = "WriteRefused";
    /// An object of a child's name is being deleted; kubundle waits for it to go.
    pub const CHILD_TERMINATING: &str = "ChildTerminating";
    /// Old pods are still terminating after a rollout.
    pub const PODS_TERMINATING: &str = "PodsTerminating";
    /// The Deployment cannot create pods (quota, admission, a missing ServiceAccount, an invalid
    /// pod): the Deployment's ReplicaFailure condition.
    pub const POD_CREATION_FAILED: &str = "PodCreationFailed";
    /// The spec cannot be rendered (a case the schema could not catch).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The spec asks for a kind of child whose API this cluster does not serve (an HTTPRoute
    /// without the Gateway API CRDs).
    pub const API_MISSING: &str = "APINotInstalled";
    /// The HTTPRoute's Gateway has not accepted it (yet): the Gateway's own reason and message.
    pub const ROUTE_NOT_ACCEPTED: &str = "RouteNotAccepted";
    /// Waiting for the Gateway to report on the HTTPRoute.
    pub const WAITING_FOR_ROUTE: &str = "WaitingForRoute";
    /// Waiting for the ingress controller to give the Ingress an address.
    pub const WAITING_FOR_INGRESS: &str = "WaitingForIngressAddress";
    /// Nothing is in progress or stalled.
    pub const DONE: &str = "Done";
    /// A ConfigMap or Secret the pods use (not marked optional) does not exist: they cannot
    /// start until it does.
    pub const CONFIG_MISSING: &str = "ConfigMissing";
    /// A transient error; kubundle retries with backoff.
    pub const RETRYING: &str = "Retrying";
    /// A canary release is under way (spec.rollout.canary): the new version gets a share of the
    /// requests, step by step.
    pub const CANARY_PROGRESSING: &str = "CanaryProgressing";
    /// A canary step without a pause waits for `kubectl kubundle promote`.
    pub const WAITING_FOR_PROMOTION: &str = "WaitingForPromotion";
    /// The canary was aborted (a failed analysis, its deadline, or by request): the stable
    /// version serves every request until the spec changes.
    pub const ROLLOUT_ABORTED: &str = "RolloutAborted";
}

/// A condition with the given fields; `lastTransitionTime` is `now`.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Puts `new` into `conditions`, replacing the condition of the same type. `lastTransitionTime`
/// changes only when the status changes (API conventions); reason, message and
/// observedGeneration always take the new values.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
        }
        None => conditions.push(new),
    }
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn transition_time_is_kept_while_the_status_stays() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            condition(READY, FALSE, reason::ROLLING_OUT, "1/3", Some(1), &at(10)),
        );
        set_condition(
            &mut conditions,
            condition(READY, FALSE, reason::ROLLING_OUT, "2/3", Some(2), &at(20)),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "2/3");
        assert_eq!(conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn transition_time_moves_when_the_status_changes() {
        let mut conditions = vec![condition(
            READY,
            FALSE,
            reason::ROLLING_OUT,
            "",
            Some(1),
            &at(10),
        )];
        set_condition(
            &mut conditions,
            condition(READY, TRUE, reason::AVAILABLE, "", Some(1), &at(30)),
        );
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(conditions[0].status, TRUE);
    }

    #[test]
    fn conditions_of_other_types_are_kept() {
        let mut conditions = vec![condition(STALLED, FALSE, reason::DONE, "", Some(1), &at(1))];
        set_condition(
            &mut conditions,
            condition(READY, TRUE, reason::AVAILABLE, "", Some(1), &at(2)),
        );
        assert_eq!(conditions.len(), 2);
        assert!(find_condition(&conditions, STALLED).is_some());
        assert_eq!(find_condition(&conditions, READY).unwrap().status, TRUE);
    }
}

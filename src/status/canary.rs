//! What a canary release (`status.rollout`) says in the conditions, pure. While it runs, Ready is
//! False and Reconciling True (kstatus: InProgress), with `WaitingForPromotion` at a step that
//! waits for a person; once aborted, Stalled is True with `RolloutAborted` (kstatus: Failed) until
//! the spec changes. A promoted or reverted canary leaves the conditions to the children.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::rollout::{Phase, RolloutStatus};
use crate::api::{
    AppBundleStatus, FALSE, READY, RECONCILING, STALLED, TRUE, condition, find_condition, reason,
    set_condition,
};

/// Sets `rollout` on `status` and what it says on the conditions. A status already Stalled (a
/// name conflict, a refused write) keeps what it says: that is what needs a person first.
pub fn with_canary(
    status: &mut AppBundleStatus,
    rollout: Option<RolloutStatus>,
    generation: Option<i64>,
    now: &Time,
) {
    status.rollout = rollout;
    let Some(r) = status.rollout.as_ref() else {
        return;
    };
    if find_condition(&status.conditions, STALLED).is_some_and(|c| c.status == TRUE) {
        return;
    }
    let message = format!("canary revision {}: {}", r.canary_revision, r.message);
    let conditions: [(&str, &str, &str, String); 3] = match r.phase {
        Phase::Progressing | Phase::Promoting => [
            (READY, FALSE, reason::CANARY_PROGRESSING, message.clone()),
            (RECONCILING, TRUE, reason::CANARY_PROGRESSING, message),
            (STALLED, FALSE, reason::DONE, String::new()),
        ],
        Phase::Paused => [
            (READY, FALSE, reason::WAITING_FOR_PROMOTION, message.clone()),
            (RECONCILING, TRUE, reason::WAITING_FOR_PROMOTION, message),
            (STALLED, FALSE, reason::DONE, String::new()),
        ],
        Phase::Aborted => [
            (READY, FALSE, reason::ROLLOUT_ABORTED, message.clone()),
            (RECONCILING, FALSE, reason::ROLLOUT_ABORTED, String::new()),
            (STALLED, TRUE, reason::ROLLOUT_ABORTED, message),
        ],
        Phase::Promoted | Phase::Reverted => return,
    };
    for (type_, value, why, msg) in conditions {
        set_condition(
            &mut status.conditions,
            condition(type_, value, why, msg, generation, now),
        );
    }
}

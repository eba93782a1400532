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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::RolloutStatus;

    fn at() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn state(phase: Phase) -> RolloutStatus {
        serde_json::from_value(serde_json::json!({
            "phase": phase, "stepIndex": 0, "canaryRevision": "c1", "stableRevision": "s1",
            "weight": 20, "canaryReplicas": 1, "since": at(), "failures": 0,
            "message": "step 1 of 2: 20% to the canary",
        }))
        .unwrap()
    }

    /// The status as the children make it: Ready (the stable Deployment is fine).
    fn ready() -> AppBundleStatus {
        let mut s = AppBundleStatus::default();
        for (t, v, r) in [
            (READY, TRUE, reason::AVAILABLE),
            (RECONCILING, FALSE, reason::DONE),
            (STALLED, FALSE, reason::DONE),
        ] {
            set_condition(&mut s.conditions, condition(t, v, r, "", Some(2), &at()));
        }
        s
    }

    fn cond(s: &AppBundleStatus, t: &str) -> (String, String) {
        let c = find_condition(&s.conditions, t).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_running_canary_is_in_progress_and_an_aborted_one_failed_for_kstatus() {
        let cases = [
            (
                Phase::Progressing,
                FALSE,
                reason::CANARY_PROGRESSING,
                TRUE,
                FALSE,
            ),
            (
                Phase::Promoting,
                FALSE,
                reason::CANARY_PROGRESSING,
                TRUE,
                FALSE,
            ),
            (
                Phase::Paused,
                FALSE,
                reason::WAITING_FOR_PROMOTION,
                TRUE,
                FALSE,
            ),
            (Phase::Aborted, FALSE, reason::ROLLOUT_ABORTED, FALSE, TRUE),
            // Finished: what the children say.
            (Phase::Promoted, TRUE, reason::AVAILABLE, FALSE, FALSE),
            (Phase::Reverted, TRUE, reason::AVAILABLE, FALSE, FALSE),
        ];
        for (phase, ready_is, why, reconciling, stalled) in cases {
            let mut s = ready();
            with_canary(&mut s, Some(state(phase)), Some(2), &at());
            assert_eq!(cond(&s, READY), (ready_is.into(), why.into()), "{phase:?}");
            assert_eq!(cond(&s, RECONCILING).0, reconciling, "{phase:?}");
            assert_eq!(cond(&s, STALLED).0, stalled, "{phase:?}");
            assert_eq!(s.rollout.as_ref().map(|r| r.phase), Some(phase));
        }
        let mut s = ready();
        with_canary(&mut s, Some(state(Phase::Progressing)), Some(2), &at());
        let message = &find_condition(&s.conditions, READY).unwrap().message;
        assert_eq!(
            message,
            "canary revision c1: step 1 of 2: 20% to the canary"
        );
    }

    #[test]
    fn what_needs_a_person_first_is_kept() {
        let mut s = ready();
        set_condition(
            &mut s.conditions,
            condition(STALLED, TRUE, reason::NAME_CONFLICT, "x", Some(2), &at()),
        );
        with_canary(&mut s, Some(state(Phase::Progressing)), Some(2), &at());
        assert_eq!(
            cond(&s, STALLED),
            (TRUE.into(), reason::NAME_CONFLICT.into())
        );
        let mut plain = ready();
        with_canary(&mut plain, None, Some(2), &at());
        assert_eq!(plain, ready(), "no canary: nothing changes");
    }
}

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::api::rollout::{AnalysisSpec, CanarySpec, CanaryStep, CheckStatus, Phase, Verdict};

const STABLE: &str = "aaaa";
const NEW: &str = "bbbb";
const NEWER: &str = "cccc";

fn canary(steps: &[(i32, Option<i32>)]) -> CanarySpec {
    CanarySpec {
        steps: steps
            .iter()
            .map(|&(weight, pause_seconds)| CanaryStep {
                weight,
                pause_seconds,
            })
            .collect(),
        analysis: Some(AnalysisSpec {
            interval_seconds: Some(30),
            failure_limit: None,
            prometheus: None,
            webhooks: None,
        }),
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn seen(at: i64) -> Seen {
    Seen {
        now: t(at),
        stable_replicas: 4,
        stable_promoted: false,
        canary_ready: 0,
        gateway_weight: None,
        analysis: None,
        request: None,
        deadline: Duration::from_secs(600),
    }
}

fn check(name: &str, verdict: Verdict) -> CheckStatus {
    CheckStatus {
        name: name.into(),
        verdict,
        value: Some("0.2".into()),
        limit: Some("<= 0.05".into()),
        message: None,
    }
}

const TO_NEW: Target = Target {
    desired: NEW,
    stable: STABLE,
};

/// Runs `decide` and returns the decision (the new state is in `.status`).
fn step(c: &CanarySpec, prev: Option<&RolloutStatus>, target: Target, s: &Seen) -> Decision {
    decide(c, prev, target, s)
}

#[test]
fn canary_replicas_follow_the_share_of_the_stable_pods_and_at_least_one() {
    assert_eq!(canary_replicas(10, 4), 1);
    assert_eq!(canary_replicas(25, 4), 1);
    assert_eq!(canary_replicas(26, 4), 2);
    assert_eq!(canary_replicas(50, 5), 3);
    assert_eq!(canary_replicas(100, 5), 5);
    assert_eq!(canary_replicas(50, 0), 1);
}

#[test]
fn no_canary_without_a_new_pod_spec() {
    let d = step(
        &canary(&[(10, Some(60))]),
        None,
        Target {
            desired: STABLE,
            stable: STABLE,
        },
        &seen(0),
    );
    assert!(d.status.is_none());
    assert_eq!(d.plan, Plan::IDLE);
    assert!(d.notes.is_empty());
}

#[test]
fn a_good_canary_goes_pods_then_weight_then_gateway_then_pause_then_checks_then_promotion() {
    let c = canary(&[(25, Some(60)), (50, Some(60))]);
    // A new pod spec: the canary gets its pods for step 1, no weight yet.
    let d = step(&c, None, TO_NEW, &seen(0));
    let s = d.status.clone().unwrap();
    assert_eq!(
        d.notes,
        vec![Note::Started {
            revision: NEW.into()
        }]
    );
    assert_eq!(
        (s.phase, s.step_index, s.weight, s.canary_replicas),
        (Phase::Progressing, 0, 0, 1)
    );
    assert_eq!(
        d.plan,
        Plan {
            weight: 0,
            canary_replicas: 1,
            canary_frozen: false,
            stable_takes_spec: false
        }
    );
    assert!(
        s.message.contains("waiting for 1 canary pods"),
        "{}",
        s.message
    );

    // Its pod is ready: the step's weight is written; the Gateway has not said yet.
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: 1,
            gateway_weight: Some(0),
            ..seen(5)
        },
    );
    let s = d.status.clone().unwrap();
    assert_eq!(d.plan.weight, 25);
    assert!(s.step_started_at.is_none());
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: 1,
            gateway_weight: None,
            ..seen(6)
        },
    );
    let s = d.status.clone().unwrap();
    assert!(
        s.message.contains("waiting for the Gateway to have 25%"),
        "{}",
        s.message
    );
    assert!(s.step_started_at.is_none());

    // The Gateway has it: the pause starts now.
    let at = |secs: i64, checks: Option<Vec<CheckStatus>>| Seen {
        canary_ready: 2,
        gateway_weight: Some(25),
        analysis: checks,
        ..seen(secs)
    };
    let d = step(&c, Some(&s), TO_NEW, &at(8, None));
    let s = d.status.clone().unwrap();
    assert_eq!(
        d.notes,
        vec![Note::StepReached {
            step: 0,
            weight: 25
        }]
    );
    assert_eq!(s.step_started_at.as_ref().map(|t| t.0), Some(t(8)));
    assert!(
        analysis_due(&c, Some(&s), t(8)),
        "the first run is due at once"
    );
    assert_eq!(d.recheck, Some(Duration::from_secs(60)));

    // A run during the pause passes, but the step waits for its pause and for a run after it.
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &at(9, Some(vec![check(POD_HEALTH, Verdict::Pass)])),
    );
    let s = d.status.clone().unwrap();
    assert!(!analysis_due(&c, Some(&s), t(30)));
    assert!(analysis_due(&c, Some(&s), t(39)), "every interval");
    assert!(!analysis_due(&c, Some(&s), t(38)));
    let d = step(&c, Some(&s), TO_NEW, &at(68, None));
    let s = d.status.clone().unwrap();
    assert_eq!(s.step_index, 0);
    assert!(
        s.message.contains("waiting for the checks"),
        "{}",
        s.message
    );
    assert!(
        analysis_due(&c, Some(&s), t(68)),
        "a run once the pause is over"
    );

    // That run passes: step 2, whose pods (2 of 4) come first; not ready, the weight waits.
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: 1,
            ..at(68, Some(vec![check(POD_HEALTH, Verdict::Pass)]))
        },
    );
    let s = d.status.clone().unwrap();
    assert_eq!(
        (s.step_index, d.plan.weight, d.plan.canary_replicas),
        (1, 25, 2)
    );
    // Ready: the weight moves.
    let d = step(&c, Some(&s), TO_NEW, &at(69, None));
    let s = d.status.clone().unwrap();
    assert_eq!(d.plan.weight, 50);
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            gateway_weight: Some(50),
            ..at(70, None)
        },
    );
    let s = d.status.clone().unwrap();
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            gateway_weight: Some(50),
            ..at(131, Some(vec![check(POD_HEALTH, Verdict::Pass)]))
        },
    );
    let s = d.status.clone().unwrap();

    // Past the last step: promotion. The stable Deployment takes the spec; the weight stays.
    assert_eq!(s.phase, Phase::Promoting);
    assert_eq!(
        d.plan,
        Plan {
            weight: 50,
            canary_replicas: 2,
            canary_frozen: false,
            stable_takes_spec: true
        }
    );
    let promoted = Seen {
        gateway_weight: Some(50),
        stable_promoted: true,
        ..at(200, None)
    };
    let d = step(&c, Some(&s), TO_NEW, &promoted);
    let s = d.status.clone().unwrap();
    assert_eq!(
        (d.plan.weight, d.plan.canary_replicas),
        (0, 2),
        "the canary's pods wait for the Gateway"
    );
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            gateway_weight: Some(0),
            ..promoted.clone()
        },
    );
    let s = d.status.clone().unwrap();
    assert_eq!(s.phase, Phase::Promoted);
    assert_eq!(d.notes, vec![Note::Promoted]);
    assert_eq!(d.plan, Plan::IDLE);

    // The promoted spec is now the stable one: nothing more happens.
    let stable_now = Target {
        desired: NEW,
        stable: NEW,
    };
    let d = step(
        &c,
        Some(&s),
        stable_now,
        &Seen {
            gateway_weight: Some(0),
            ..seen(300)
        },
    );
    assert_eq!(d.plan, Plan::IDLE);
    assert!(d.notes.is_empty());
    assert_eq!(d.status.unwrap().phase, Phase::Promoted);
}

/// A canary at its first step with the Gateway holding its weight, at `at`.
fn holding(c: &CanarySpec, at: i64) -> RolloutStatus {
    let s = step(c, None, TO_NEW, &seen(0)).status.unwrap();
    let ready = canary_replicas(c.steps[0].weight, 4);
    let s = step(
        c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: ready,
            ..seen(1)
        },
    )
    .status
    .unwrap();
    let s = step(
        c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: ready,
            gateway_weight: Some(c.steps[0].weight),
            ..seen(at)
        },
    )
    .status
    .unwrap();
    assert!(s.step_started_at.is_some());
    s
}

#[test]
fn a_failed_run_aborts_weight_first_then_pods() {
    let c = canary(&[(20, Some(60)), (60, Some(60))]);
    let s = holding(&c, 2);
    let run = vec![
        check(POD_HEALTH, Verdict::Pass),
        check("error-rate", Verdict::Fail),
    ];
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: 1,
            gateway_weight: Some(20),
            analysis: Some(run),
            ..seen(30)
        },
    );
    let s = d.status.clone().unwrap();
    assert_eq!(
        (s.phase, s.reason.as_deref()),
        (Phase::Aborted, Some(reason::ANALYSIS_FAILED))
    );
    assert!(
        s.message.contains("error-rate: 0.2 (limit <= 0.05)")
            && s.message
                .ends_with("waiting for the Gateway to send the canary's share back"),
        "{}",
        s.message
    );
    // The weight goes to 0 at once; the pods stay, and keep their spec, until the Gateway has it.
    assert_eq!(
        d.plan,
        Plan {
            weight: 0,
            canary_replicas: 1,
            canary_frozen: true,
            stable_takes_spec: false
        }
    );
    assert!(matches!(
        &d.notes[..],
        [Note::Aborted {
            reason: reason::ANALYSIS_FAILED,
            ..
        }]
    ));
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            gateway_weight: Some(0),
            ..seen(31)
        },
    );
    assert_eq!(
        d.plan,
        Plan {
            weight: 0,
            canary_replicas: 0,
            canary_frozen: false,
            stable_takes_spec: false
        }
    );
    let s = d.status.unwrap();
    assert_eq!(
        s.phase,
        Phase::Aborted,
        "stays aborted until the spec changes or a retry"
    );
    assert!(!s.message.contains("waiting"), "{}", s.message);
    assert!(s.message.starts_with("error-rate: 0.2"), "{}", s.message);
    assert!(!analysis_due(&c, Some(&s), t(1000)));
}

#[test]
fn the_pods_health_failing_is_an_unhealthy_canary_and_the_failure_limit_counts_runs() {
    let mut c = canary(&[(20, Some(60))]);
    c.analysis.as_mut().unwrap().failure_limit = Some(1);
    let s = holding(&c, 2);
    let bad = || Seen {
        canary_ready: 1,
        gateway_weight: Some(20),
        analysis: Some(vec![check(POD_HEALTH, Verdict::Fail)]),
        ..seen(30)
    };
    let d = step(&c, Some(&s), TO_NEW, &bad());
    let s = d.status.unwrap();
    assert_eq!(
        (s.phase, s.failures),
        (Phase::Progressing, 1),
        "one failed run is tolerated"
    );
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            now: t(60),
            ..bad()
        },
    );
    let s = d.status.unwrap();
    assert_eq!(
        (s.phase, s.reason.as_deref()),
        (Phase::Aborted, Some(reason::CANARY_UNHEALTHY))
    );
    assert!(
        s.message.contains("failed run 2 of 2 allowed"),
        "{}",
        s.message
    );
}

#[test]
fn no_data_holds_the_step_and_says_so_until_the_deadline() {
    let c = canary(&[(20, Some(30)), (40, Some(30))]);
    let s = holding(&c, 2);
    let nodata = |at: i64| Seen {
        canary_ready: 1,
        gateway_weight: Some(20),
        analysis: Some(vec![
            check(POD_HEALTH, Verdict::Pass),
            CheckStatus {
                value: None,
                ..check("error-rate", Verdict::NoData)
            },
        ]),
        deadline: Duration::from_secs(120),
        ..seen(at)
    };
    let d = step(&c, Some(&s), TO_NEW, &nodata(40));
    let s = d.status.unwrap();
    assert_eq!(
        (s.phase, s.step_index, s.failures),
        (Phase::Progressing, 0, 0)
    );
    assert!(
        s.message
            .contains("holding, no verdict: error-rate: NoData"),
        "{}",
        s.message
    );
    let d = step(&c, Some(&s), TO_NEW, &nodata(150));
    let s = d.status.unwrap();
    assert_eq!(
        s.phase,
        Phase::Progressing,
        "120 s after the pause's end is not past the deadline"
    );
    let d = step(&c, Some(&s), TO_NEW, &nodata(153));
    let s = d.status.unwrap();
    assert_eq!(
        (s.phase, s.reason.as_deref()),
        (Phase::Aborted, Some(reason::ANALYSIS_NO_DATA))
    );
}

#[test]
fn a_step_without_pause_waits_for_a_promote_request_for_its_revision() {
    let c = canary(&[(20, None), (50, Some(10))]);
    let s = holding(&c, 2);
    assert_eq!(s.phase, Phase::Paused);
    let ask = |raw: &str, at: i64| Seen {
        canary_ready: 2,
        gateway_weight: Some(20),
        request: Request::parse(raw),
        ..seen(at)
    };
    // For another revision: acknowledged, not carried out.
    let d = step(&c, Some(&s), TO_NEW, &ask("promote zzzz 1", 10));
    let s = d.status.unwrap();
    assert_eq!(s.phase, Phase::Paused);
    assert_eq!(s.acknowledged_request.as_deref(), Some("promote zzzz 1"));
    assert!(matches!(&d.notes[..], [Note::RequestIgnored { .. }]));
    // For this one: the next step.
    let d = step(&c, Some(&s), TO_NEW, &ask("promote bbbb 2", 11));
    let s = d.status.unwrap();
    assert_eq!(
        (s.phase, s.step_index, d.plan.weight),
        (Phase::Progressing, 1, 50)
    );
    // The same request seen again is not a second promotion.
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            gateway_weight: Some(50),
            ..ask("promote bbbb 2", 12)
        },
    );
    let s = d.status.unwrap();
    assert_eq!(s.step_index, 1);
    assert!(
        d.notes
            .iter()
            .all(|n| !matches!(n, Note::RequestIgnored { .. }))
    );
}

#[test]
fn promote_full_and_abort_and_retry_by_request() {
    let c = canary(&[(10, Some(600)), (50, Some(600))]);
    let s = holding(&c, 2);
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: 1,
            gateway_weight: Some(10),
            request: Request::parse("promote-full bbbb x"),
            ..seen(5)
        },
    );
    assert_eq!(d.status.unwrap().phase, Phase::Promoting);
    assert!(d.plan.stable_takes_spec);

    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: 1,
            gateway_weight: Some(10),
            request: Request::parse("abort bbbb x"),
            ..seen(5)
        },
    );
    let s = d.status.unwrap();
    assert_eq!(
        (s.phase, s.reason.as_deref()),
        (Phase::Aborted, Some(reason::ABORT_REQUESTED))
    );
    let s = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            gateway_weight: Some(0),
            ..seen(6)
        },
    )
    .status
    .unwrap();
    assert_eq!(s.canary_replicas, 0);

    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            gateway_weight: Some(0),
            request: Request::parse("retry bbbb y"),
            ..seen(7)
        },
    );
    let s = d.status.unwrap();
    assert_eq!(
        (s.phase, s.step_index, s.failures, s.reason.as_deref()),
        (Phase::Progressing, 0, 0, None)
    );
    assert_eq!(s.acknowledged_request.as_deref(), Some("retry bbbb y"));
    assert_eq!(d.plan.canary_replicas, 1);
}

#[test]
fn a_new_spec_mid_canary_takes_the_share_back_before_the_pods_change() {
    let c = canary(&[(30, Some(60)), (60, Some(60))]);
    let s = holding(&c, 2);
    let to_newer = Target {
        desired: NEWER,
        stable: STABLE,
    };
    // Its pods run the old spec: none is ready at the new one.
    let d = step(
        &c,
        Some(&s),
        to_newer,
        &Seen {
            canary_ready: 0,
            gateway_weight: Some(30),
            ..seen(10)
        },
    );
    let s = d.status.clone().unwrap();
    assert_eq!(
        d.notes,
        vec![Note::Restarted {
            revision: NEWER.into()
        }]
    );
    assert_eq!((s.canary_revision.as_str(), s.step_index), (NEWER, 0));
    assert_eq!(
        d.plan,
        Plan {
            weight: 0,
            canary_replicas: 2,
            canary_frozen: true,
            stable_takes_spec: false
        }
    );
    // The Gateway has 0: the canary takes the new spec (its pods are not ready at it yet).
    let d = step(
        &c,
        Some(&s),
        to_newer,
        &Seen {
            canary_ready: 0,
            gateway_weight: Some(0),
            ..seen(11)
        },
    );
    assert_eq!(
        d.plan,
        Plan {
            weight: 0,
            canary_replicas: 2,
            canary_frozen: false,
            stable_takes_spec: false
        }
    );
    let d = step(
        &c,
        Some(&d.status.unwrap()),
        to_newer,
        &Seen {
            canary_ready: 2,
            gateway_weight: Some(0),
            ..seen(20)
        },
    );
    assert_eq!(d.plan.weight, 30);
}

#[test]
fn the_spec_back_to_the_stable_one_reverts_without_stalling() {
    let c = canary(&[(30, Some(60))]);
    let s = holding(&c, 2);
    let back = Target {
        desired: STABLE,
        stable: STABLE,
    };
    let d = step(
        &c,
        Some(&s),
        back,
        &Seen {
            gateway_weight: Some(30),
            ..seen(10)
        },
    );
    let s = d.status.clone().unwrap();
    assert_eq!(d.notes, vec![Note::Reverted]);
    assert_eq!((s.phase, s.reason.clone()), (Phase::Reverted, None));
    assert_eq!(
        d.plan,
        Plan {
            weight: 0,
            canary_replicas: 2,
            canary_frozen: true,
            stable_takes_spec: false
        }
    );
    let d = step(
        &c,
        Some(&s),
        back,
        &Seen {
            gateway_weight: Some(0),
            ..seen(11)
        },
    );
    assert_eq!(d.plan.canary_replicas, 0);
    assert!(d.notes.is_empty());
}

#[test]
fn canary_pods_that_never_become_ready_abort_at_the_deadline() {
    let c = canary(&[(30, Some(60))]);
    let s = step(&c, None, TO_NEW, &seen(0)).status.unwrap();
    let d = step(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            gateway_weight: Some(0),
            ..seen(600)
        },
    );
    assert_eq!(d.status.clone().unwrap().phase, Phase::Progressing);
    assert_eq!(
        d.recheck,
        Some(Duration::from_secs(1)),
        "the look that finds the deadline passed"
    );
    let d = step(
        &c,
        Some(&d.status.unwrap()),
        TO_NEW,
        &Seen {
            gateway_weight: Some(0),
            ..seen(601)
        },
    );
    let s = d.status.unwrap();
    assert_eq!(
        (s.phase, s.reason.as_deref()),
        (Phase::Aborted, Some(reason::PROGRESS_DEADLINE_EXCEEDED))
    );
    assert_eq!(
        d.plan.canary_replicas, 0,
        "no share was ever given: the pods go at once"
    );
}

#[test]
fn requests_parse() {
    assert_eq!(
        Request::parse("promote bbbb 2026-12-04T10:00:00Z"),
        Some(Request {
            action: Action::Promote,
            revision: "bbbb".into(),
            raw: "promote bbbb 2026-12-04T10:00:00Z".into()
        })
    );
    assert_eq!(
        Request::parse("promote-full r").map(|r| r.action),
        Some(Action::PromoteFull)
    );
    assert_eq!(Request::parse("promote"), None);
    assert_eq!(Request::parse("deploy r"), None);
}

/// A world that follows kubundle's plan with delays: the Gateway takes the rendered weight after
/// a lag, pods get ready after a lag, checks sometimes give no data or fail.
#[derive(Clone, Debug)]
struct World {
    gateway_lag: Vec<u8>,
    pods_lag: Vec<u8>,
    verdicts: Vec<u8>,
    requests: Vec<u8>,
    new_spec_at: Option<u8>,
}

fn worlds() -> impl Strategy<Value = (World, Vec<(i32, Option<i32>)>)> {
    let steps = prop::collection::btree_set(1..=100i32, 1..=4).prop_flat_map(|weights| {
        let n = weights.len();
        (
            Just(weights.into_iter().collect::<Vec<_>>()),
            prop::collection::vec(prop::option::weighted(0.8, 0..120i32), n),
        )
    });
    (
        prop::collection::vec(0..4u8, 200),
        prop::collection::vec(0..4u8, 200),
        prop::collection::vec(0..20u8, 200),
        prop::collection::vec(0..40u8, 200),
        prop::option::of(0..150u8),
        steps,
    )
        .prop_map(
            |(gateway_lag, pods_lag, verdicts, requests, new_spec_at, (w, p))| {
                (
                    World {
                        gateway_lag,
                        pods_lag,
                        verdicts,
                        requests,
                        new_spec_at,
                    },
                    w.into_iter().zip(p).collect(),
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the world does: a share only goes to pods ready for it, never above the step's
    /// weight; pods that had a share go (or change spec) only once the Gateway has none for
    /// them; an aborted canary has no share; a promotion finishes only after the stable
    /// Deployment runs the spec. And a world that cooperates ends promoted.
    #[test]
    fn the_order_of_moves_holds((world, steps) in worlds()) {
        let mut c = canary(&steps);
        c.analysis.as_mut().unwrap().failure_limit = Some(2);
        let mut state: Option<RolloutStatus> = None;
        let mut target = TO_NEW;
        let (mut gateway, mut rendered_weight, mut replicas, mut ready, mut stable_promoted) = (Some(0), 0, 0, 0, false);
        let mut frozen = false;
        for i in 0..200usize {
            let now = i as i64 * 7;
            if world.new_spec_at == Some(i as u8) {
                target = Target { desired: NEWER, stable: STABLE };
                if !frozen { ready = 0; }
            }
            let due = analysis_due(&c, state.as_ref(), t(now));
            let verdict = match world.verdicts[i] { 0 => Verdict::Fail, 1 => Verdict::NoData, 2 => Verdict::Error, _ => Verdict::Pass };
            let request = match world.requests[i] {
                0 => Some(format!("promote {} {i}", target.desired)),
                1 => Some(format!("abort {} {i}", target.desired)),
                2 => Some(format!("retry {} {i}", target.desired)),
                3 => Some(format!("promote-full {} {i}", target.desired)),
                _ => None,
            };
            let s = Seen {
                now: t(now),
                stable_replicas: 4,
                stable_promoted,
                canary_ready: ready,
                gateway_weight: gateway,
                analysis: due.then(|| vec![check(POD_HEALTH, verdict)]),
                request: request.as_deref().and_then(Request::parse),
                deadline: Duration::from_secs(300),
            };
            let d = decide(&c, state.as_ref(), target, &s);
            let p = d.plan;
            let max = c.steps.iter().map(|s| s.weight).max().unwrap();
            prop_assert!(p.weight <= max);
            if p.weight > rendered_weight {
                prop_assert!(ready >= canary_replicas(p.weight, 4), "weight {} given to {} ready pods", p.weight, ready);
            }
            if p.weight > 0 { prop_assert!(p.canary_replicas >= 1); }
            if replicas > 0 && p.canary_replicas == 0 {
                prop_assert_eq!(gateway, Some(0), "pods removed while the Gateway may still send them requests");
            }
            if p.canary_frozen { prop_assert_eq!(p.weight, 0); }
            let st = d.status.clone();
            if let Some(st) = &st {
                if st.phase == Phase::Aborted { prop_assert_eq!(p.weight, 0); }
                if st.phase == Phase::Promoted && state.as_ref().is_some_and(|o| o.phase == Phase::Promoting) {
                    prop_assert!(stable_promoted);
                }
            }
            // The world follows, with lags.
            if p.weight != rendered_weight { gateway = None; }
            rendered_weight = p.weight;
            if gateway.is_none() && world.gateway_lag[i] == 0 { gateway = Some(rendered_weight); }
            if !p.canary_frozen && st.as_ref().is_some_and(|s| Some(s.canary_revision.as_str()) != state.as_ref().map(|o| o.canary_revision.as_str())) && state.is_some() {
                ready = 0;
            }
            frozen = p.canary_frozen;
            replicas = p.canary_replicas;
            if ready > replicas { ready = replicas; }
            if ready < replicas && world.pods_lag[i] == 0 { ready += 1; }
            stable_promoted = p.stable_takes_spec && (world.pods_lag[i] != 3 || stable_promoted);
            state = st;
        }
    }
}

#[test]
fn a_cooperating_world_ends_promoted() {
    let c = canary(&[(10, Some(20)), (40, Some(20)), (90, Some(0))]);
    let mut state = None;
    let (mut gateway, mut ready) = (Some(0), 0);
    for i in 0..100 {
        let now = i * 10;
        let due = analysis_due(&c, state.as_ref(), t(now));
        let s = Seen {
            now: t(now),
            stable_replicas: 10,
            stable_promoted: state
                .as_ref()
                .is_some_and(|s: &RolloutStatus| s.phase == Phase::Promoting),
            canary_ready: ready,
            gateway_weight: gateway,
            analysis: due.then(|| vec![check(POD_HEALTH, Verdict::Pass)]),
            request: None,
            deadline: Duration::from_secs(600),
        };
        let d = decide(&c, state.as_ref(), TO_NEW, &s);
        gateway = Some(d.plan.weight);
        ready = d.plan.canary_replicas;
        state = d.status;
        if state.as_ref().unwrap().phase == Phase::Promoted {
            assert!(now <= 200, "promoted after {now}s");
            return;
        }
    }
    panic!("never promoted: {:?}", state);
}

#[test]
fn recheck_is_the_nearest_of_pause_end_next_run_and_deadline() {
    let c = canary(&[(10, Some(45))]);
    let s = holding(&c, 2);
    let d = decide(
        &c,
        Some(&s),
        TO_NEW,
        &Seen {
            canary_ready: 1,
            gateway_weight: Some(10),
            analysis: Some(vec![check(POD_HEALTH, Verdict::Pass)]),
            ..seen(10)
        },
    );
    // Next run at 40, pause ends at 47.
    assert_eq!(d.recheck, Some(Duration::from_secs(30)));
}

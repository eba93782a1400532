//! Canary releases, pure: from the canary's spec, its last state (`status.rollout`) and what was
//! seen of its children, the next state and what to render (the route's weights, the canary's
//! pods, which spec the stable Deployment runs). No I/O: the controller reads, runs the checks
//! when [`analysis_due`] says so, calls [`decide`], renders the [`Plan`] and writes the state.
//!
//! The order of every move is the point (design notes §13):
//! - weight goes only to a ready canary: its pods for a step first, then the step's weight;
//! - a step's pause counts from when the Gateway reports the route with that weight, and the step
//!   advances only when a run of the checks made after the pause passes;
//! - on abort, on a new spec and when the spec goes back to the stable one, the canary's weight
//!   goes to 0 at once, and its pods go (or change) only once the Gateway has that;
//! - promotion rolls the stable Deployment onto the canary's spec first (it keeps its name, its
//!   selector and its size), then moves the weight back to it, then scales the canary to 0;
//! - no data is not failure: a check without a value (or that could not run) holds the step and
//!   says so; only the progress deadline turns that into an abort.

pub mod analysis;
pub mod seen;
#[cfg(test)]
mod tests;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::api::rollout::{CanarySpec, CheckStatus, Phase, RolloutStatus, Verdict};

/// The name of the always-on check of the canary's pods.
pub const POD_HEALTH: &str = "pod-health";

/// Why a canary was aborted (`status.rollout.reason`).
pub mod reason {
    pub const ANALYSIS_FAILED: &str = "AnalysisFailed";
    pub const ANALYSIS_NO_DATA: &str = "AnalysisNoData";
    pub const CANARY_UNHEALTHY: &str = "CanaryUnhealthy";
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
    pub const ABORT_REQUESTED: &str = "AbortRequested";
}

/// Which pods are which. A revision here names what the pods run: a hash of the pod template
/// rendered from a spec, so that a change of replicas, of the Service or of the route is no new
/// canary (they are applied at once, as without one).
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The spec's pod revision: what a canary runs.
    pub desired: &'a str,
    /// The pod revision of the stable Deployment (of the spec last fully rolled out).
    pub stable: &'a str,
}

/// The annotation a person's request to a canary is written in (`kubectl kubundle promote`,
/// `abort`, `retry`): `ACTION REVISION TIME`. Not the spec: a GitOps tool that syncs the spec
/// leaves it alone, and the request names the canary revision it is meant for.
pub const REQUEST_ANNOTATION: &str = "kubundle.dev/rollout-request";

/// What a person asked for through the request annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Skip the current step's wait (pause or promotion gate).
    Promote,
    /// Skip every step left: promote now.
    PromoteFull,
    Abort,
    /// Start an aborted canary again from its first step.
    Retry,
}

/// A request: the annotation's value, `ACTION REVISION [ANYTHING]` (the plugin adds the time, so
/// that the same request made twice is two requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub action: Action,
    /// The canary revision it is meant for: a request for another one is not carried out.
    pub revision: String,
    /// The annotation's value, acknowledged in `status.rollout.acknowledgedRequest`.
    pub raw: String,
}

impl Request {
    /// Reads the annotation's value; None if it is not a request.
    pub fn parse(raw: &str) -> Option<Request> {
        let mut words = raw.split_whitespace();
        let action = match words.next()? {
            "promote" => Action::Promote,
            "promote-full" => Action::PromoteFull,
            "abort" => Action::Abort,
            "retry" => Action::Retry,
            _ => return None,
        };
        Some(Request {
            action,
            revision: words.next()?.to_string(),
            raw: raw.to_string(),
        })
    }
}

/// What was seen of the canary's world in this reconcile.
#[derive(Clone, Debug)]
pub struct Seen {
    pub now: Timestamp,
    /// Pods the stable Deployment is meant to have (its replicas, or the autoscaler's).
    pub stable_replicas: i32,
    /// Every stable pod runs the spec, ready (the promotion's rolling update is done).
    pub stable_promoted: bool,
    /// Ready canary pods that run the canary's current spec.
    pub canary_ready: i32,
    /// The canary's weight the Gateway has: the route accepted at its current generation, read
    /// from the route's spec. None while the Gateway has not reported the last write.
    pub gateway_weight: Option<i32>,
    /// The checks run in this reconcile (only when [`analysis_due`] said so), the pod-health
    /// check among them.
    pub analysis: Option<Vec<CheckStatus>>,
    /// The request annotation's value, if any.
    pub request: Option<Request>,
    /// How long the canary may wait for anything but a person: pods, the Gateway, data.
    pub deadline: Duration,
}

/// What to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The canary's share of the requests on the route, in percent (the stable Service has the
    /// rest).
    pub weight: i32,
    /// Pods of the canary Deployment.
    pub canary_replicas: i32,
    /// The canary Deployment keeps the spec its pods run: its weight is going to 0 before it may
    /// take a new one.
    pub canary_frozen: bool,
    /// The stable Deployment runs the spec (a promotion); otherwise the stable revision's.
    pub stable_takes_spec: bool,
}

impl Plan {
    /// No canary under way: everything on the stable Deployment, which runs the spec.
    pub const IDLE: Plan = Plan {
        weight: 0,
        canary_replicas: 0,
        canary_frozen: false,
        stable_takes_spec: true,
    };
}

/// What happened, for Events.
#[derive(Clone, Debug, PartialEq)]
pub enum Note {
    Started {
        revision: String,
    },
    /// A new spec during a canary: it starts again from its first step.
    Restarted {
        revision: String,
    },
    StepReached {
        step: i32,
        weight: i32,
    },
    WaitingForPromotion {
        step: i32,
    },
    Promoting,
    Promoted,
    Aborted {
        reason: &'static str,
        message: String,
    },
    Reverted,
    /// A request acknowledged without effect (for another revision, or nothing to do).
    RequestIgnored {
        request: String,
        why: String,
    },
}

/// The next state of the canary, what to render, what to tell, and when to look again.
#[derive(Clone, Debug)]
pub struct Decision {
    /// `status.rollout`: None only while there has never been a canary.
    pub status: Option<RolloutStatus>,
    pub plan: Plan,
    pub notes: Vec<Note>,
    /// When to reconcile again without an event (a pause ending, checks due, a deadline).
    pub recheck: Option<Duration>,
}

/// The pods a canary gets at `weight` percent beside `stable` pods: the same share of them,
/// rounded up, and at least one.
pub fn canary_replicas(weight: i32, stable: i32) -> i32 {
    let share = (i64::from(stable.max(0)) * i64::from(weight.clamp(0, 100)) + 99) / 100;
    i32::try_from(share).unwrap_or(i32::MAX).max(1)
}

/// Whether the checks are due now: while the canary is stepping or paused and has pods, every
/// analysis interval, and once when a step's pause has ended (the run its advance waits for).
pub fn analysis_due(canary: &CanarySpec, state: Option<&RolloutStatus>, now: Timestamp) -> bool {
    let Some(s) = state else { return false };
    if !matches!(s.phase, Phase::Progressing | Phase::Paused) || s.canary_replicas == 0 {
        return false;
    }
    let Some(last) = s.last_analysis_at.as_ref().map(|t| t.0) else {
        return true;
    };
    if now >= last + interval(canary) {
        return true;
    }
    pause_end(canary, s).is_some_and(|end| last < end && now >= end)
}

fn interval(canary: &CanarySpec) -> SignedDuration {
    let secs = canary
        .analysis
        .as_ref()
        .map_or(crate::api::rollout::DEFAULT_ANALYSIS_INTERVAL, |a| {
            a.interval_seconds()
        });
    SignedDuration::from_secs(i64::from(secs))
}

/// When the current step's pause ends: None before the Gateway has the step's weight, or for a
/// step that waits for a promotion.
fn pause_end(canary: &CanarySpec, s: &RolloutStatus) -> Option<Timestamp> {
    let started = s.step_started_at.as_ref()?.0;
    let pause = step_of(canary, s.step_index)?.pause_seconds?;
    Some(started + SignedDuration::from_secs(i64::from(pause)))
}

fn step_of(canary: &CanarySpec, index: i32) -> Option<&crate::api::rollout::CanaryStep> {
    usize::try_from(index)
        .ok()
        .and_then(|i| canary.steps.get(i))
}

/// The next state of a canary. `previous` is `status.rollout` as last written.
pub fn decide(
    canary: &CanarySpec,
    previous: Option<&RolloutStatus>,
    target: Target,
    seen: &Seen,
) -> Decision {
    let mut out = Outcome::default();
    let state = match previous {
        None if target.desired == target.stable => {
            return Decision {
                status: None,
                plan: Plan::IDLE,
                notes: vec![],
                recheck: None,
            };
        }
        None => start(target, seen, &mut out, false),
        Some(p) if p.canary_revision == target.desired => p.clone(),
        Some(p) if target.desired == target.stable => revert(p, seen, &mut out),
        Some(p) => {
            let under_way = !is_final(p.phase) || p.weight > 0 || p.canary_replicas > 0;
            let mut fresh = start(target, seen, &mut out, under_way);
            // Its share goes to 0 at once; its pods keep their spec until the Gateway has that
            // (see `canary_frozen`).
            fresh.canary_replicas = p.canary_replicas;
            fresh
        }
    };
    let mut state = acknowledge(canary, state, seen, &mut out);
    let plan = advance(canary, &mut state, seen, &mut out);
    let recheck = recheck(canary, &state, seen);
    Decision {
        status: Some(state),
        plan,
        notes: out.notes,
        recheck,
    }
}

#[derive(Default)]
struct Outcome {
    notes: Vec<Note>,
}

fn is_final(phase: Phase) -> bool {
    matches!(phase, Phase::Promoted | Phase::Aborted | Phase::Reverted)
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// A canary of the spec from its first step, against the stable revision.
fn start(target: Target, seen: &Seen, out: &mut Outcome, restarted: bool) -> RolloutStatus {
    let revision = target.desired.to_string();
    out.notes.push(if restarted {
        Note::Restarted {
            revision: revision.clone(),
        }
    } else {
        Note::Started {
            revision: revision.clone(),
        }
    });
    RolloutStatus {
        phase: Phase::Progressing,
        step_index: 0,
        canary_revision: revision,
        stable_revision: target.stable.to_string(),
        weight: 0,
        gateway_weight: None,
        canary_replicas: 0,
        since: time(seen.now),
        step_started_at: None,
        last_analysis_at: None,
        failures: 0,
        checks: vec![],
        reason: None,
        message: String::new(),
        acknowledged_request: None,
    }
}

/// The spec went back to the stable one: the canary's share goes back to it.
fn revert(p: &RolloutStatus, seen: &Seen, out: &mut Outcome) -> RolloutStatus {
    let mut s = p.clone();
    if s.phase != Phase::Reverted {
        out.notes.push(Note::Reverted);
        s.phase = Phase::Reverted;
        s.since = time(seen.now);
        s.reason = None;
    }
    s
}

/// Takes in a request not yet acknowledged.
fn acknowledge(
    canary: &CanarySpec,
    mut s: RolloutStatus,
    seen: &Seen,
    out: &mut Outcome,
) -> RolloutStatus {
    let Some(req) = seen.request.as_ref() else {
        return s;
    };
    if s.acknowledged_request.as_deref() == Some(req.raw.as_str()) {
        return s;
    }
    s.acknowledged_request = Some(req.raw.clone());
    let ignored = |why: String, out: &mut Outcome| {
        out.notes.push(Note::RequestIgnored {
            request: req.raw.clone(),
            why,
        })
    };
    if req.revision != s.canary_revision {
        ignored(
            format!(
                "it names revision {}, and the canary runs {}",
                req.revision, s.canary_revision
            ),
            out,
        );
        return s;
    }
    let stepping = matches!(s.phase, Phase::Progressing | Phase::Paused);
    match req.action {
        Action::Abort if stepping || s.phase == Phase::Promoting => {
            abort(
                &mut s,
                seen,
                reason::ABORT_REQUESTED,
                "aborted by request".into(),
                out,
            );
        }
        Action::Promote if stepping => {
            next_step(canary, &mut s, seen, out);
        }
        Action::PromoteFull if stepping => {
            promote(&mut s, seen, out);
        }
        Action::Retry if s.phase == Phase::Aborted => {
            let keep = (
                s.weight,
                s.gateway_weight,
                s.canary_replicas,
                s.acknowledged_request.take(),
            );
            s = start(
                Target {
                    desired: &s.canary_revision,
                    stable: &s.stable_revision,
                },
                seen,
                out,
                true,
            );
            (
                s.weight,
                s.gateway_weight,
                s.canary_replicas,
                s.acknowledged_request,
            ) = keep;
        }
        _ => ignored(format!("the canary is {:?}", s.phase), out),
    }
    s
}

fn abort(
    s: &mut RolloutStatus,
    seen: &Seen,
    why: &'static str,
    message: String,
    out: &mut Outcome,
) {
    s.phase = Phase::Aborted;
    s.reason = Some(why.to_string());
    s.since = time(seen.now);
    s.message = message.clone();
    out.notes.push(Note::Aborted {
        reason: why,
        message,
    });
}

fn promote(s: &mut RolloutStatus, seen: &Seen, out: &mut Outcome) {
    s.phase = Phase::Promoting;
    s.since = time(seen.now);
    out.notes.push(Note::Promoting);
}

/// The step after the current one, or the promotion after the last.
fn next_step(canary: &CanarySpec, s: &mut RolloutStatus, seen: &Seen, out: &mut Outcome) {
    if step_of(canary, s.step_index + 1).is_none() {
        promote(s, seen, out);
        return;
    }
    s.step_index += 1;
    s.phase = Phase::Progressing;
    s.step_started_at = None;
    s.since = time(seen.now);
}

/// Moves the canary on as far as what was seen allows, and says what to render.
fn advance(canary: &CanarySpec, s: &mut RolloutStatus, seen: &Seen, out: &mut Outcome) -> Plan {
    let had_pods = s.canary_replicas > 0;
    s.gateway_weight = seen.gateway_weight;
    if let Some(run) = seen.analysis.as_ref()
        && matches!(s.phase, Phase::Progressing | Phase::Paused)
    {
        take_in_run(canary, s, run, seen, out);
    }
    let mut plan = match s.phase {
        Phase::Promoted | Phase::Aborted | Phase::Reverted => wind_down(s, seen),
        Phase::Promoting => promoting(s, seen, out),
        Phase::Progressing | Phase::Paused => stepping(canary, s, seen, out),
    };
    // Pods that had a share keep the spec they run until the Gateway has none for them: a new
    // spec (or none) must not reach users through a share meant to go.
    plan.canary_frozen = had_pods && plan.weight == 0 && seen.gateway_weight != Some(0);
    plan
}

/// Records a run of the checks; a failed run beyond the limit aborts.
fn take_in_run(
    canary: &CanarySpec,
    s: &mut RolloutStatus,
    run: &[CheckStatus],
    seen: &Seen,
    out: &mut Outcome,
) {
    s.last_analysis_at = Some(time(seen.now));
    s.checks = run.to_vec();
    let failed: Vec<&CheckStatus> = run.iter().filter(|c| c.verdict == Verdict::Fail).collect();
    if failed.is_empty() {
        return;
    }
    s.failures += 1;
    let limit = canary.analysis.as_ref().map_or(0, |a| a.failure_limit());
    if s.failures <= limit {
        return;
    }
    let why = if failed.iter().any(|c| c.name == POD_HEALTH) {
        reason::CANARY_UNHEALTHY
    } else {
        reason::ANALYSIS_FAILED
    };
    let message = failed
        .iter()
        .map(|c| describe(c))
        .collect::<Vec<_>>()
        .join("; ");
    abort(
        s,
        seen,
        why,
        format!(
            "{message} (failed run {} of {} allowed)",
            s.failures,
            limit + 1
        ),
        out,
    );
}

/// A check's result in words: `error-rate: 0.2 (limit <= 0.05)`.
pub fn describe(c: &CheckStatus) -> String {
    let mut text = c.name.clone();
    match (&c.value, &c.limit) {
        (Some(v), Some(l)) => text.push_str(&format!(": {v} (limit {l})")),
        (Some(v), None) => text.push_str(&format!(": {v}")),
        _ => text.push_str(&format!(": {:?}", c.verdict)),
    }
    if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
        text.push_str(&format!(", {m}"));
    }
    text
}

/// What a canary winding down adds to its message until the Gateway has 0 for it.
const WAITING_FOR_SHARE_BACK: &str = "; waiting for the Gateway to send the canary's share back";

/// After the end (promoted, aborted, reverted): weight 0 first; once the Gateway has it, the
/// canary's pods go.
fn wind_down(s: &mut RolloutStatus, seen: &Seen) -> Plan {
    s.weight = 0;
    if seen.gateway_weight == Some(0) {
        s.canary_replicas = 0;
    }
    let done = s.canary_replicas == 0;
    let said = s
        .message
        .strip_suffix(WAITING_FOR_SHARE_BACK)
        .unwrap_or(&s.message)
        .to_string();
    let said = match s.phase {
        Phase::Promoted => format!("promoted revision {}", s.canary_revision),
        Phase::Reverted => "the spec is the stable one again".to_string(),
        _ => said,
    };
    s.message = if done {
        said
    } else {
        format!("{said}{WAITING_FOR_SHARE_BACK}")
    };
    Plan {
        weight: 0,
        canary_replicas: s.canary_replicas,
        canary_frozen: false,
        // Promoted: the stable Deployment runs the promoted spec (it is the stable revision now).
        stable_takes_spec: s.phase == Phase::Promoted,
    }
}

/// Promotion: the stable Deployment takes the spec; once all its pods run it, the weight goes
/// back to it; once the Gateway has that, the canary's pods go.
fn promoting(s: &mut RolloutStatus, seen: &Seen, out: &mut Outcome) -> Plan {
    let plan = |s: &RolloutStatus| Plan {
        weight: s.weight,
        canary_replicas: s.canary_replicas,
        canary_frozen: false,
        stable_takes_spec: true,
    };
    if !seen.stable_promoted {
        s.message = "promoting: the stable Deployment rolls onto the canary's spec".into();
        return plan(s);
    }
    s.weight = 0;
    if seen.gateway_weight != Some(0) {
        s.message =
            "promoting: waiting for the Gateway to send every request to the stable Deployment"
                .into();
        return plan(s);
    }
    s.canary_replicas = 0;
    s.phase = Phase::Promoted;
    s.since = time(seen.now);
    s.message = format!("promoted revision {}", s.canary_revision);
    out.notes.push(Note::Promoted);
    plan(s)
}

/// What a canary stepping renders: its weight and pods as they are, the stable Deployment on its
/// own spec.
fn held(s: &RolloutStatus) -> Plan {
    Plan {
        weight: s.weight,
        canary_replicas: s.canary_replicas,
        canary_frozen: false,
        stable_takes_spec: false,
    }
}

/// A wait that is no person's (pods, the Gateway, data), since `since`: past the deadline, an
/// abort saying `late`; before it, the message says `waiting`.
fn wait(
    s: &mut RolloutStatus,
    seen: &Seen,
    since: Timestamp,
    late: (&'static str, String),
    waiting: String,
    out: &mut Outcome,
) -> Plan {
    let deadline = SignedDuration::try_from(seen.deadline).unwrap_or(SignedDuration::MAX);
    if seen.now.duration_since(since) > deadline {
        let (why, message) = late;
        abort(s, seen, why, message, out);
        return wind_down(s, seen);
    }
    s.message = waiting;
    held(s)
}

/// Stepping: the step's pods, then its weight, then the Gateway, then the pause and a passing run.
fn stepping(canary: &CanarySpec, s: &mut RolloutStatus, seen: &Seen, out: &mut Outcome) -> Plan {
    let Some(step) = step_of(canary, s.step_index).cloned() else {
        // Fewer steps than before (the canary's spec changed): promote.
        promote(s, seen, out);
        return promoting(s, seen, out);
    };
    let want = canary_replicas(step.weight, seen.stable_replicas);
    s.canary_replicas = s.canary_replicas.max(want);
    let label = format!("step {} of {}", s.step_index + 1, canary.steps.len());
    let (since, secs) = (s.since.0, seen.deadline.as_secs());
    if seen.canary_ready < want {
        let ready = seen.canary_ready;
        let late = format!("{ready} of {want} canary pods ready after {secs}s");
        let waiting =
            format!("{label}: waiting for {want} canary pods to be ready ({ready} ready)");
        return wait(
            s,
            seen,
            since,
            (reason::PROGRESS_DEADLINE_EXCEEDED, late),
            waiting,
            out,
        );
    }
    if s.weight != step.weight {
        s.weight = step.weight;
        s.step_started_at = None;
        s.since = time(seen.now);
        s.message = format!(
            "{label}: sending {}% of the requests to the canary",
            step.weight
        );
        return held(s);
    }
    if seen.gateway_weight != Some(step.weight) {
        let w = step.weight;
        let late =
            format!("the Gateway has not accepted the route with {w}% to the canary after {secs}s");
        let waiting = format!("{label}: waiting for the Gateway to have {w}% to the canary");
        return wait(
            s,
            seen,
            since,
            (reason::PROGRESS_DEADLINE_EXCEEDED, late),
            waiting,
            out,
        );
    }
    if s.step_started_at.is_none() {
        s.step_started_at = Some(time(seen.now));
        out.notes.push(Note::StepReached {
            step: s.step_index,
            weight: step.weight,
        });
    }
    holding(canary, s, seen, out, &label)
}

/// The Gateway has the step's weight: the pause (or a promotion), then a run of the checks made
/// after the pause must pass; then the next step.
fn holding(
    canary: &CanarySpec,
    s: &mut RolloutStatus,
    seen: &Seen,
    out: &mut Outcome,
    label: &str,
) -> Plan {
    let weight = s.weight;
    let Some(end) = pause_end(canary, s) else {
        if s.phase != Phase::Paused {
            s.phase = Phase::Paused;
            out.notes
                .push(Note::WaitingForPromotion { step: s.step_index });
        }
        s.message = format!("{label}: {weight}% to the canary, waiting for promotion");
        return held(s);
    };
    if seen.now < end {
        let left = end.duration_since(seen.now).as_secs().max(1);
        s.message = format!("{label}: {weight}% to the canary, {left}s of the pause left");
        return held(s);
    }
    if s.last_analysis_at.as_ref().is_none_or(|t| t.0 < end) {
        s.message = format!("{label}: {weight}% to the canary, waiting for the checks to run");
        return held(s);
    }
    let holding: Vec<String> = s
        .checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::NoData | Verdict::Error))
        .map(describe)
        .collect();
    if !holding.is_empty() {
        let what = holding.join("; ");
        let late = format!("{what} for {}s after the pause", seen.deadline.as_secs());
        let waiting = format!("{label}: holding, no verdict: {what}");
        return wait(s, seen, end, (reason::ANALYSIS_NO_DATA, late), waiting, out);
    }
    next_step(canary, s, seen, out);
    if s.phase == Phase::Promoting {
        return promoting(s, seen, out);
    }
    stepping(canary, s, seen, out)
}

/// When to look again: the pause's end, the next run of the checks, or a deadline.
fn recheck(canary: &CanarySpec, s: &RolloutStatus, seen: &Seen) -> Option<Duration> {
    let mut at: Vec<Timestamp> = vec![];
    if matches!(s.phase, Phase::Progressing | Phase::Paused) {
        if let Some(end) = pause_end(canary, s).filter(|e| *e > seen.now) {
            at.push(end);
        }
        if let Some(last) = s.last_analysis_at.as_ref() {
            at.push(last.0 + interval(canary));
        }
        let deadline = SignedDuration::try_from(seen.deadline).unwrap_or(SignedDuration::MAX);
        // Just past the deadline: the look that finds it passed.
        let past = deadline.saturating_add(SignedDuration::from_secs(1));
        at.push(s.since.0.saturating_add(past).unwrap_or(s.since.0));
    }
    at.into_iter()
        .filter(|t| *t > seen.now)
        .min()
        .map(|t| t.duration_since(seen.now).unsigned_abs())
}

//! The canary step (`spec.rollout.canary`, see [`crate::rollout`]): what the canary's world looks
//! like now, the checks when they are due, and the state machine's decision, which the render
//! step then turns into the children (the stable Deployment on the stable revision's pods, the
//! route's weights, the canary's Deployment and Service).
//!
//! Reads: the stable revision's spec once per revision (a GET of its ControllerRevision, then
//! remembered), the Gateway (handed on to the observe step, so still one GET per reconcile), the
//! canary's pods and the checks' calls only when the checks are due. The rest is the cache.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use kube::api::DynamicObject;
use kube::{Api, ResourceExt};
use tracing::{debug, warn};

use super::observe::read_gateway;
use super::run::{Run, Step};
use super::write::Changed;
use crate::api::{AppBundle, AppBundleSpec};
use crate::error::{Error, Result};
use crate::events::EventType;
use crate::history::revision_name;
use crate::reconcile::analysis;
use crate::reconcile::children::Change;
use crate::reconcile::children::{RENDERED_HASH, rendering_hash, routing};
use crate::reconcile::context::Context;
use crate::reconcile::report::publish;
use crate::render::canary::{
    CanaryChildren, POD_REVISION, canary_name, pod_revision, with_stable_pods,
};
use crate::render::{self, ChildKind};
use crate::rollout::Note;
use crate::rollout::{self, Decision, REQUEST_ANNOTATION, Request, Seen, Target, seen};
use crate::status::Blocker;
use crate::status::desired_replicas;
use crate::status::route::GatewayLook;

/// The progress deadline when `spec.progressDeadlineSeconds` is not set (the Deployment default).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

/// What the canary step decided.
pub(super) struct Canary {
    pub decision: Decision,
    /// The stable revision's spec.
    stable: AppBundleSpec,
    /// The Gateway the route attaches to, read here for the weight it has.
    pub gateway: Option<GatewayLook>,
    /// The checks ran in this reconcile.
    checked: bool,
    /// When the Gateway's report of the route will have held long enough to count.
    pub settle_recheck: Option<Duration>,
}

impl Canary {
    /// Tells what the canary did: an Event for each move, and the metrics.
    pub fn tell(&self, run: &Run<'_>, bundle: &AppBundle) {
        let metrics = &run.ctx.metrics;
        let spec = bundle.spec.rollout.as_ref().and_then(|r| r.canary.as_ref());
        if self.checked
            && let Some(s) = self.decision.status.as_ref()
        {
            let prometheus = |n: &str| {
                spec.and_then(|c| c.analysis.as_ref())
                    .and_then(|a| a.prometheus.as_ref())
                    .is_some_and(|p| p.iter().any(|q| q.name == n))
            };
            for c in &s.checks {
                let kind = if c.name == rollout::POD_HEALTH {
                    "pod-health"
                } else if prometheus(&c.name) {
                    "prometheus"
                } else {
                    "webhook"
                };
                let verdict = format!("{:?}", c.verdict);
                metrics
                    .canary_checks
                    .with_label_values(&[kind, verdict.as_str()])
                    .inc();
            }
        }
        let steps = spec.map_or(0, |c| c.steps.len());
        for note in &self.decision.notes {
            let (warning, reason, moved, message) =
                event_of(note, steps, self.decision.status.as_ref());
            if let Some(m) = moved {
                metrics.canary_moves.with_label_values(&[m]).inc();
            }
            let type_ = if warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            publish(&run.ctx.reporter(), &run.reference, type_, reason, message);
        }
    }

    /// What the children are to be; None while there has never been a canary (the children
    /// are then exactly those of an AppBundle without one).
    pub fn children(&self) -> Option<CanaryChildren<'_>> {
        self.decision.status.as_ref()?;
        let plan = self.decision.plan;
        Some(CanaryChildren {
            stable: (!plan.stable_takes_spec).then_some(&self.stable),
            weight: plan.weight,
            replicas: plan.canary_replicas,
            frozen: plan.canary_frozen,
        })
    }
}

/// The canary's decision, or None for an AppBundle without `spec.rollout.canary`, or without a
/// stable revision yet (its first rollout has nothing to run beside: a plain rolling update).
///
/// A stable revision kubundle may not read stops the AppBundle (Stalled, the API server's words):
/// rolling the new version out without its canary is not what was asked.
pub(super) async fn decide(
    run: &Run<'_>,
    bundle: &AppBundle,
    digest: Option<&str>,
) -> Step<Option<Canary>> {
    let Some(spec) = bundle.spec.rollout.as_ref().and_then(|r| r.canary.as_ref()) else {
        return Ok(ControlFlow::Continue(None));
    };
    let ctx = run.ctx;
    let name = bundle.name_any();
    let stable = match stable_spec(ctx, &run.ns, bundle).await {
        Ok(Some(stable)) => stable,
        Ok(None) => return Ok(ControlFlow::Continue(None)),
        Err(Error::Api(kube::Error::Api(s))) if s.code == 403 => {
            let message = format!(
                "cannot read the stable revision the canary runs beside: {} (kubundle needs get on controllerrevisions.apps; the chart grants it)",
                s.message
            );
            let blocker = Blocker::WriteRefused {
                kind: "ControllerRevision",
                message,
                retry: true,
            };
            return run.blocked(bundle, blocker).await;
        }
        Err(e) => return Err(e),
    };
    // A spec that cannot be rendered is reported by the render step.
    let (Ok(desired), Ok(stable_revision)) = (
        pod_revision(bundle),
        pod_revision(&with_stable_pods(bundle, &stable)),
    ) else {
        return Ok(ControlFlow::Continue(None));
    };
    let previous = bundle.status.as_ref().and_then(|s| s.rollout.as_ref());
    let live = |kind, n: &str| ctx.cache.get(kind, &run.ns, n).map(|c| c.object());
    let stable_live: Option<Deployment> =
        live(ChildKind::Deployment, &name).and_then(|o| typed(&o));
    let canary_live: Option<Deployment> =
        live(ChildKind::Deployment, &canary_name(&name)).and_then(|o| typed(&o));
    let route: Option<DynamicObject> = live(ChildKind::HttpRoute, &name);
    let gateway = match route {
        Some(_) => read_gateway(ctx, bundle).await,
        None => None,
    };
    let reported = seen::gateway_weight(bundle, route.as_ref(), gateway.as_ref());
    let generation = route
        .as_ref()
        .and_then(|r| r.metadata.generation)
        .unwrap_or(0);
    let known = previous.and_then(|p| p.gateway_weight);
    let (gateway_weight, settle_recheck) = gateway_has(
        &mut ctx.route_reports.lock().unwrap(),
        &format!("{}/{name}", run.ns),
        (generation, reported, known),
        Instant::now(),
    );
    let stable_replicas = desired_replicas(bundle, stable_live.as_ref());
    let canary_ready = canary_live
        .as_ref()
        .filter(|d| d.annotations().get(POD_REVISION) == Some(&desired))
        .map_or(0, |d| seen::ready_at_current(Some(d)));
    let now = run.now.0;
    let analysis: Option<Vec<_>> = match previous {
        Some(p) if p.canary_revision == desired && rollout::analysis_due(spec, Some(p), now) => {
            Some(analysis::run(&ctx.client, &ctx.caller, bundle, spec, p).await)
        }
        _ => None,
    };
    let seen = Seen {
        now,
        stable_replicas,
        stable_promoted: stable_promoted(bundle, digest, stable_live.as_ref(), stable_replicas),
        canary_ready,
        gateway_weight,
        analysis,
        request: bundle
            .annotations()
            .get(REQUEST_ANNOTATION)
            .and_then(|raw| Request::parse(raw)),
        deadline: bundle
            .spec
            .progress_deadline_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_DEADLINE, Duration::from_secs),
    };
    let target = Target {
        desired: &desired,
        stable: &stable_revision,
    };
    let checked = seen.analysis.is_some();
    let decision = rollout::decide(spec, previous, target, &seen);
    debug!(plan = ?decision.plan, phase = ?decision.status.as_ref().map(|s| s.phase), "canary");
    Ok(ControlFlow::Continue(Some(Canary {
        decision,
        stable,
        gateway,
        checked,
        settle_recheck,
    })))
}

/// The weight the Gateway routes with: the one it reports, once the report has held for
/// [`routing::DRAIN`] (a controller reports a route before its proxies have it: Traefik
/// throttles its configuration by 2 s). A weight already in status counts at once (it held
/// before a restart of kubundle). The second value: when to look again while it settles.
/// `seen`: the route's generation, the weight the Gateway reports, the one in status.
fn gateway_has(
    reports: &mut HashMap<String, (i64, i32, Instant)>,
    key: &str,
    seen: (i64, Option<i32>, Option<i32>),
    now: Instant,
) -> (Option<i32>, Option<Duration>) {
    let (generation, reported, known) = seen;
    let Some(weight) = reported else {
        reports.remove(key);
        return (None, None);
    };
    let since = match reports.get(key) {
        Some((g, w, at)) if *g == generation && *w == weight => *at,
        _ if known == Some(weight) => now.checked_sub(routing::DRAIN).unwrap_or(now),
        _ => now,
    };
    reports.insert(key.to_string(), (generation, weight, since));
    let held = now.duration_since(since);
    if held >= routing::DRAIN {
        (Some(weight), None)
    } else {
        (
            None,
            Some(routing::DRAIN - held + Duration::from_millis(100)),
        )
    }
}

fn typed<K: serde::de::DeserializeOwned>(o: &DynamicObject) -> Option<K> {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
}

/// The spec of the stable revision (`status.currentRevision`): the spec itself when it is that
/// revision; None before the first rollout, or when the revision is gone (then there is nothing
/// to run a canary beside).
async fn stable_spec(ctx: &Context, ns: &str, bundle: &AppBundle) -> Result<Option<AppBundleSpec>> {
    let Some(current) = bundle
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
    else {
        return Ok(None);
    };
    if current == revision_name(&bundle.name_any(), &bundle.spec) {
        return Ok(Some(bundle.spec.clone()));
    }
    let key = format!("{ns}/{current}");
    if let Some(spec) = ctx.stable_specs.lock().unwrap().get(&key) {
        return Ok(Some(spec.clone()));
    }
    let Some(revision) = Api::<ControllerRevision>::namespaced(ctx.client.clone(), ns)
        .get_opt(&current)
        .await?
    else {
        warn!(revision = %current, "the stable revision is gone: no canary, a rolling update");
        return Ok(None);
    };
    let mut spec = revision
        .data
        .map(|d| d.0)
        .and_then(|mut d| d.get_mut("spec").map(serde_json::Value::take))
        .unwrap_or_default();
    // A revision holds the spec without replicas (src/history.rs).
    if let Some(map) = spec.as_object_mut() {
        map.remove("replicas");
    }
    let spec: AppBundleSpec = match serde_json::from_value(spec) {
        Ok(spec) => spec,
        Err(e) => {
            warn!(revision = %current, error = %e, "the stable revision cannot be read: no canary, a rolling update");
            return Ok(None);
        }
    };
    let mut specs = ctx.stable_specs.lock().unwrap();
    if specs.len() >= 4096 {
        specs.clear();
    }
    specs.insert(key, spec.clone());
    Ok(Some(spec))
}

/// The stable Deployment runs the spec: it carries the hash of the spec's own rendering (with
/// the configuration digest), and its rollout is done.
fn stable_promoted(
    bundle: &AppBundle,
    digest: Option<&str>,
    live: Option<&Deployment>,
    desired: i32,
) -> bool {
    let Some(live) = live else { return false };
    let Some(rendered) = render::children(bundle, digest)
        .ok()
        .and_then(|set| set.into_iter().next())
    else {
        return false;
    };
    let Ok(hash) = rendering_hash(&rendered.object, "Deployment") else {
        return false;
    };
    live.annotations().get(RENDERED_HASH) == Some(&hash) && seen::rollout_done(Some(live), desired)
}

/// A canary's move as an Event: (warning, reason, the move counted, message).
fn event_of(
    note: &Note,
    steps: usize,
    state: Option<&crate::api::rollout::RolloutStatus>,
) -> (bool, &'static str, Option<&'static str>, String) {
    let revision = state
        .map(|s| s.canary_revision.as_str())
        .unwrap_or_default();
    let stable = state
        .map(|s| s.stable_revision.as_str())
        .unwrap_or_default();
    match note {
        Note::Started { revision } => (
            false,
            "CanaryStarted",
            Some("started"),
            format!("canary of pod revision {revision} beside the stable {stable}: {steps} steps"),
        ),
        Note::Restarted { revision } => (
            false,
            "CanaryRestarted",
            Some("restarted"),
            format!("a new canary, pod revision {revision}: it starts again from step 1"),
        ),
        Note::StepReached { step, weight } => (
            false,
            "CanaryStep",
            Some("step"),
            format!(
                "step {} of {steps}: the Gateway sends {weight}% of the requests to the canary ({revision})",
                step + 1
            ),
        ),
        Note::WaitingForPromotion { step } => (
            false,
            "CanaryWaitingForPromotion",
            None,
            format!(
                "step {} of {steps} waits for a promotion: kubectl kubundle promote",
                step + 1
            ),
        ),
        Note::Promoting => (
            false,
            "CanaryPromoting",
            None,
            format!("promoting {revision}: the stable Deployment rolls onto it"),
        ),
        Note::Promoted => (
            false,
            "CanaryPromoted",
            Some("promoted"),
            format!(
                "promoted {revision}: every request goes to the stable Deployment, which runs it"
            ),
        ),
        Note::Aborted { reason, message } => (
            true,
            "CanaryAborted",
            Some("aborted"),
            format!(
                "aborted {revision} ({reason}): {message}; the stable version {stable} gets every request"
            ),
        ),
        Note::Reverted => (
            false,
            "CanaryReverted",
            Some("reverted"),
            format!("the spec is the stable one ({stable}) again: the canary {revision} ends"),
        ),
        Note::RequestIgnored { request, why } => (
            true,
            "RequestIgnored",
            None,
            format!("the request \"{request}\" is not carried out: {why}"),
        ),
    }
}

/// Changes of the canary's own moves, told by its Events instead: the canary's children, the
/// route's weights, and the stable Deployment taking the spec at a promotion.
pub(super) fn quiet_moves(changes: &mut Vec<Changed>, name: &str) {
    let canary = canary_name(name);
    changes.retain(|(kind, child, change)| {
        let own_move = *child == canary
            || (*change == Change::Updated
                && (*kind == ChildKind::HttpRoute.name() || *kind == ChildKind::Deployment.name()));
        !own_move
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_counts_once_its_report_held_for_the_drain() {
        let mut reports = HashMap::new();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Reported at generation 2 with 20%: not yet, look again when it has held.
        let (w, again) = gateway_has(&mut reports, "ns/web", (2, Some(20), Some(0)), at(0));
        assert_eq!(w, None);
        assert!(again.is_some_and(|d| d > routing::DRAIN));
        assert_eq!(
            gateway_has(&mut reports, "ns/web", (2, Some(20), None), at(3)).0,
            None
        );
        assert_eq!(
            gateway_has(&mut reports, "ns/web", (2, Some(20), None), at(5)),
            (Some(20), None)
        );
        // A new generation starts again; no report forgets it.
        assert_eq!(
            gateway_has(&mut reports, "ns/web", (3, Some(40), None), at(6)).0,
            None
        );
        assert_eq!(
            gateway_has(&mut reports, "ns/web", (3, None, None), at(7)),
            (None, None)
        );
        // What status already says held before (a restart of kubundle) counts at once.
        let mut fresh = HashMap::new();
        assert_eq!(
            gateway_has(&mut fresh, "ns/web", (3, Some(0), Some(0)), at(0)),
            (Some(0), None)
        );
    }
}

//! What kubundle tells people: the AppBundle's status (written only when it changed, progress at
//! most every 2 s and within a budget all AppBundles share) and Events (one per thing a person wants to know: children changed, the first
//! rollout with what the AppBundle is made of, Ready again, Stalled, recovered).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, warn};

use super::observe::cached_bundle::CachedBundle;
use super::observe::crd_skew::CrdSkew;
use crate::api::{AppBundle, AppBundleStatus, READY, STALLED, TRUE, find_condition};
use crate::error::Result;
use crate::events::{EventType, Publisher};
use crate::metrics::Metrics;
use crate::render::FIELD_MANAGER;

use super::progress_budget::ProgressBudget;
use crate::status::{PROGRESS_INTERVAL, is_milestone};

/// What writing status and Events takes: the Event publisher and the metrics, the pacing of
/// progress writes, kubundle's own last writes, and what the installed CRD can store.
pub struct Reporter<'a> {
    pub events: &'a Publisher,
    pub metrics: &'a Metrics,
    pub pacer: &'a StatusPacer,
    pub own_writes: &'a OwnWrites,
    pub crd_skew: &'a CrdSkew,
}

/// When each AppBundle's status was last written (by UID), to write progress at most every
/// [`PROGRESS_INTERVAL`] (entries older than that are dropped as the map grows), and the budget
/// all AppBundles' progress writes share (progress_budget.rs).
#[derive(Default)]
pub struct StatusPacer {
    last: Mutex<HashMap<String, Instant>>,
    budget: ProgressBudget,
}

impl StatusPacer {
    /// How long a progress-only write of `uid` must wait; zero when it may go now. Before the
    /// first write, `age` (how long the AppBundle has existed) counts as the time since one.
    fn wait(&self, uid: &str, now: Instant, age: Duration) -> Duration {
        let since = self
            .last
            .lock()
            .unwrap()
            .get(uid)
            .map_or(age, |last| now.saturating_duration_since(*last));
        PROGRESS_INTERVAL.saturating_sub(since)
    }

    fn wrote(&self, uid: &str, now: Instant) {
        let mut last = self.last.lock().unwrap();
        if last.len() >= 1024 {
            last.retain(|_, t| now.saturating_duration_since(*t) < PROGRESS_INTERVAL);
        }
        last.insert(uid.to_string(), now);
    }
}

/// The AppBundle as kubundle's last status write returned it (by UID), until the cache holds one
/// at least as new. A reconcile that starts in between (a child's event right after the write)
/// reads that one, not the cached AppBundle from before the write: it neither writes the same
/// status again nor records the same revision twice.
///
/// An entry goes [`DELIVERED_GRACE`] after the AppBundles' watch delivered its version
/// ([`OwnWrites::seen`]): a reconcile handed the cached object just before the delivery still
/// finds it meanwhile. (Before, an entry went only when a later reconcile found the cache caught
/// up: the last write of every AppBundle, the one that says Ready, stayed for the life of the
/// process, a second copy of every AppBundle.) An entry whose delivery was never seen (a watch
/// that missed the event) goes after [`UNSEEN_LIMIT`].
#[derive(Default)]
pub struct OwnWrites(Mutex<Writes>);

/// How long an entry stays once the watch has delivered its version.
const DELIVERED_GRACE: Duration = Duration::from_secs(5);
/// How long an entry stays at most.
const UNSEEN_LIMIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Writes {
    by_uid: HashMap<String, Written>,
    /// When the map was last swept of expired entries (at most once a second).
    swept: Option<Instant>,
}

struct Written {
    at: Instant,
    bundle: CachedBundle,
    /// When the watch delivered this version (or a newer one).
    delivered: Option<Instant>,
}

impl Writes {
    fn sweep(&mut self, now: Instant) {
        if self
            .swept
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.swept = Some(now);
        self.by_uid.retain(|_, w| {
            now.saturating_duration_since(w.at) < UNSEEN_LIMIT
                && w.delivered
                    .is_none_or(|d| now.saturating_duration_since(d) < DELIVERED_GRACE)
        });
    }
}

impl OwnWrites {
    fn wrote(&self, written: CachedBundle, now: Instant) {
        let Some(uid) = written.metadata.uid.clone() else {
            return;
        };
        let mut writes = self.0.lock().unwrap();
        writes.sweep(now);
        writes.by_uid.insert(
            uid,
            Written {
                at: now,
                bundle: written,
                delivered: None,
            },
        );
    }

    /// The AppBundles' watch delivered `observed` at `now`: the entry of its UID expires
    /// [`DELIVERED_GRACE`] later if that is at least as new as the write.
    pub fn seen(&self, observed: &CachedBundle, now: Instant) {
        let mut writes = self.0.lock().unwrap();
        writes.sweep(now);
        let (Some(uid), Some(version)) = (
            observed.metadata.uid.as_deref(),
            observed.metadata.resource_version.as_deref(),
        ) else {
            return;
        };
        if let Some(w) = writes.by_uid.get_mut(uid)
            && w.delivered.is_none()
        {
            let written = w
                .bundle
                .metadata
                .resource_version
                .as_deref()
                .unwrap_or_default();
            if super::observe::children_cache::compare_versions(version, written)
                .is_some_and(|o| o != std::cmp::Ordering::Less)
            {
                w.delivered = Some(now);
            }
        }
    }

    /// How many writes are held (for the tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().by_uid.len()
    }

    /// `cached`, or the AppBundle kubundle's own status write returned when the cache is still
    /// older than that.
    pub fn newest<'a>(&self, cached: &'a CachedBundle) -> Cow<'a, CachedBundle> {
        let Some(uid) = cached.metadata.uid.as_deref() else {
            return Cow::Borrowed(cached);
        };
        let mut writes = self.0.lock().unwrap();
        let Some(written) = writes.by_uid.get(uid) else {
            return Cow::Borrowed(cached);
        };
        let version = |b: &CachedBundle| b.metadata.resource_version.clone().unwrap_or_default();
        match super::observe::children_cache::compare_versions(
            &version(cached),
            &version(&written.bundle),
        ) {
            Some(std::cmp::Ordering::Less) => Cow::Owned(written.bundle.clone()),
            // Caught up (or versions that do not compare): the cache is the truth again.
            _ => {
                writes.by_uid.remove(uid);
                Cow::Borrowed(cached)
            }
        }
    }
}

/// One server-side apply of the status.
async fn apply_status(
    ctx: &Reporter<'_>,
    api: &Api<CachedBundle>,
    name: &str,
    status: &AppBundleStatus,
) -> std::result::Result<CachedBundle, kube::Error> {
    let body = serde_json::json!({
        "apiVersion": AppBundle::api_version(&()),
        "kind": AppBundle::kind(&()),
        "status": status,
    });
    ctx.metrics.write("AppBundle", "apply_status");
    let sent = Instant::now();
    let answer = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await;
    let throttled = matches!(&answer, Err(kube::Error::Api(s)) if s.code == 429);
    ctx.pacer
        .budget
        .observed(sent.elapsed(), throttled, Instant::now());
    answer
}

/// Writes the status if it changed, and publishes the Events of condition transitions. A change
/// that is only progress ([`is_milestone`]) within [`PROGRESS_INTERVAL`] of the last write is
/// held back: the answer is how soon to reconcile again to write it. `made_of` names the children
/// ("Deployment web, Service web"), for the Event of the first rollout.
pub async fn write_status(
    ctx: &Reporter<'_>,
    api: &Api<CachedBundle>,
    bundle: &AppBundle,
    status: &AppBundleStatus,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    made_of: &str,
) -> Result<Option<Duration>> {
    let previous = bundle.status.clone().unwrap_or_default();
    // What the installed CRD can store of it: all of it, unless the CRD is older (observe/crd_skew.rs).
    let mut status = Cow::Borrowed(status);
    if ctx.crd_skew.problem().is_some() {
        status = Cow::Owned(ctx.crd_skew.fit(&status));
    }
    if previous == *status {
        return Ok(None);
    }
    let uid = bundle.metadata.uid.clone().unwrap_or_default();
    let now = Instant::now();
    if !is_milestone(&previous, &status) {
        let age =
            bundle
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(PROGRESS_INTERVAL, |created| {
                    let ms = k8s_openapi::jiff::Timestamp::now().as_millisecond()
                        - created.0.as_millisecond();
                    Duration::from_millis(ms.max(0) as u64)
                });
        let wait = ctx.pacer.wait(&uid, now, age);
        if !wait.is_zero() {
            debug!(
                ?wait,
                "progress only; written with the next step or in a moment"
            );
            return Ok(Some(wait));
        }
        if let Err(wait) = ctx.pacer.budget.take(now) {
            ctx.metrics.progress_deferred.inc();
            debug!(
                ?wait,
                "progress only, and the progress budget is spent: written with the next \
                 milestone or later"
            );
            return Ok(Some(wait));
        }
    }
    // The CRD in the cluster may be older than this kubundle (Helm does not upgrade CRDs): what
    // it can store is written, and the gap is told (below, /readyz, the log). The API server may
    // name one unknown field per refusal: a few tries learn them all.
    let mut tries = 0;
    loop {
        match apply_status(ctx, api, &bundle.name_any(), &status).await {
            Ok(mut written) => {
                written.slim();
                ctx.own_writes.wrote(written, now);
                break;
            }
            Err(kube::Error::Api(s))
                if tries < 5 && ctx.crd_skew.learn_from_refusal(&s.message) =>
            {
                tries += 1;
                status = Cow::Owned(ctx.crd_skew.fit(&status));
                if previous == *status {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    let status: &AppBundleStatus = &status;
    if ctx.crd_skew.first_warning_for(&uid)
        && let Some(problem) = ctx.crd_skew.problem()
    {
        publish(ctx, reference, EventType::Warning, "CRDOutdated", problem);
    }
    ctx.pacer.wrote(&uid, now);

    let was = |t: &str| find_condition(&previous.conditions, t).map(|c| c.status.clone());
    let now = |t: &str| find_condition(&status.conditions, t).cloned();
    if let Some(ready) = now(READY)
        && ready.status == TRUE
        && was(READY).as_deref() != Some(TRUE)
    {
        // The first rollout also says what the AppBundle is made of (its children's creation
        // is not announced on its own).
        let note = if previous.image.is_none() && !made_of.is_empty() {
            format!(
                "rolled out for the first time: {made_of}; {}",
                ready.message
            )
        } else {
            ready.message
        };
        let note = match status.revision {
            Some(n) if status.revision != previous.revision => format!("{note} (revision {n})"),
            _ => note,
        };
        publish(ctx, reference, EventType::Normal, "RolledOut", note);
    }
    if let Some(stalled) = now(STALLED) {
        if stalled.status == TRUE
            && (was(STALLED).as_deref() != Some(TRUE)
                || find_condition(&previous.conditions, STALLED).map(|c| c.reason.as_str())
                    != Some(stalled.reason.as_str()))
        {
            publish(
                ctx,
                reference,
                EventType::Warning,
                &stalled.reason,
                stalled.message,
            );
        } else if stalled.status != TRUE && was(STALLED).as_deref() == Some(TRUE) {
            publish(
                ctx,
                reference,
                EventType::Normal,
                "Recovered",
                "no longer stalled".into(),
            );
        }
    }
    Ok(None)
}

/// Publishes an Event in the background: Events are for people, and must not slow a reconcile
/// (nor fail it: a lost Event is logged).
pub fn publish(
    ctx: &Reporter<'_>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    ctx.metrics.write("Event", "publish");
    let (events, reference, reason) = (ctx.events.clone(), reference.clone(), reason.to_string());
    tokio::spawn(async move {
        if let Err(e) = events
            .publish(&reference, type_, &reason, "Reconcile", &note)
            .await
        {
            warn!(error = %e, %reason, "cannot publish an Event");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_waits_for_the_interval_since_the_last_write_or_the_creation() {
        let pacer = StatusPacer::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Never written: a 500 ms old AppBundle waits 1.5 s; a minute-old one does not wait.
        assert_eq!(pacer.wait("a", t0, ms(500)), ms(1500));
        assert_eq!(pacer.wait("a", t0, ms(60_000)), Duration::ZERO);
        pacer.wrote("a", t0);
        assert_eq!(pacer.wait("a", t0 + ms(400), ms(60_000)), ms(1600));
        assert_eq!(pacer.wait("a", t0 + ms(2500), ms(60_000)), Duration::ZERO);
        assert_eq!(
            pacer.wait("b", t0, ms(60_000)),
            Duration::ZERO,
            "per AppBundle"
        );
    }

    #[test]
    fn own_writes_stand_in_until_the_cache_catches_up() {
        let at = |rv: &str, revision: Option<&str>| CachedBundle {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                uid: Some("u1".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Err("not read here".into()),
            status: Some(AppBundleStatus {
                current_revision: revision.map(str::to_string),
                ..Default::default()
            }),
        };
        let revision = |b: &CachedBundle| b.status.as_ref().unwrap().current_revision.clone();
        let writes = OwnWrites::default();
        let before = at("10", None);
        assert_eq!(
            revision(&writes.newest(&before)),
            None,
            "nothing written yet"
        );
        writes.wrote(at("12", Some("web-1")), Instant::now());
        assert_eq!(revision(&writes.newest(&before)).as_deref(), Some("web-1"));
        assert_eq!(
            revision(&writes.newest(&at("11", None))).as_deref(),
            Some("web-1")
        );
        // The cache has the write (or something newer): it is used, and the entry is gone.
        assert_eq!(revision(&writes.newest(&at("13", None))), None);
        assert_eq!(revision(&writes.newest(&before)), None);

        // The watch delivering the write lets it go, a few seconds later, without a reconcile;
        // an older version does not.
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        writes.wrote(at("20", Some("web-2")), t0);
        writes.seen(&at("19", None), later(2));
        writes.seen(&at("20", Some("web-2")), later(3));
        assert_eq!(
            writes.len(),
            1,
            "kept for a reconcile handed the older object"
        );
        assert_eq!(
            revision(&writes.newest(&at("19", None))).as_deref(),
            Some("web-2"),
            "a reconcile handed the object from before the delivery still reads the write"
        );
        writes.seen(&at("21", None), later(9));
        assert_eq!(writes.len(), 0, "delivered 6 s ago: no second copy kept");
        // Never seen delivered: gone after a minute.
        writes.wrote(at("30", Some("web-3")), later(10));
        writes.seen(&at("29", None), later(69));
        assert_eq!(writes.len(), 1);
        writes.seen(&at("29", None), later(71));
        assert_eq!(writes.len(), 0);
    }
}

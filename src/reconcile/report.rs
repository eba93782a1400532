//! What kubundle tells people: the AppBundle's status (written only when it changed, progress at
//! most every 2 s) and Events (one per thing a person wants to know: children changed, the first
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
/// [`PROGRESS_INTERVAL`]. Entries older than that are dropped as the map grows.
#[derive(Default)]
pub struct StatusPacer(Mutex<HashMap<String, Instant>>);

impl StatusPacer {
    /// How long a progress-only write of `uid` must wait; zero when it may go now. Before the
    /// first write, `age` (how long the AppBundle has existed) counts as the time since one.
    fn wait(&self, uid: &str, now: Instant, age: Duration) -> Duration {
        let since = self
            .0
            .lock()
            .unwrap()
            .get(uid)
            .map_or(age, |last| now.saturating_duration_since(*last));
        PROGRESS_INTERVAL.saturating_sub(since)
    }

    fn wrote(&self, uid: &str, now: Instant) {
        let mut last = self.0.lock().unwrap();
        if last.len() >= 1024 {
            last.retain(|_, t| now.saturating_duration_since(*t) < PROGRESS_INTERVAL);
        }
        last.insert(uid.to_string(), now);
    }
}

/// The AppBundle as kubundle's last status write returned it (by UID), until the cache holds one
/// at least as new. A reconcile that starts in between (a child's event right after the write)
/// reads that one, not the cached AppBundle from before the write: it neither writes the same
/// status again nor records the same revision twice. An entry goes as soon as the AppBundles'
/// watch delivers a version at least as new ([`OwnWrites::seen`]), so the map holds the writes
/// in flight only (it once kept a second copy of every AppBundle, the last write of each); entries
/// older than a minute are dropped as the map grows (a watch that missed the event).
#[derive(Default)]
pub struct OwnWrites(Mutex<HashMap<String, (Instant, CachedBundle)>>);

impl OwnWrites {
    fn wrote(&self, written: CachedBundle, now: Instant) {
        let Some(uid) = written.metadata.uid.clone() else {
            return;
        };
        let mut map = self.0.lock().unwrap();
        if map.len() >= 1024 {
            map.retain(|_, (t, _)| now.saturating_duration_since(*t) < Duration::from_secs(60));
        }
        map.insert(uid, (now, written));
    }

    /// The AppBundles' watch delivered `observed`: the entry of its UID goes if that is at least
    /// as new as the write.
    pub fn seen(&self, observed: &CachedBundle) {
        let (Some(uid), Some(observed)) = (
            observed.metadata.uid.as_deref(),
            observed.metadata.resource_version.as_deref(),
        ) else {
            return;
        };
        let mut map = self.0.lock().unwrap();
        let caught_up = map.get(uid).is_some_and(|(_, written)| {
            let written = written
                .metadata
                .resource_version
                .as_deref()
                .unwrap_or_default();
            super::observe::children_cache::compare_versions(observed, written)
                .is_some_and(|o| o != std::cmp::Ordering::Less)
        });
        if caught_up {
            map.remove(uid);
        }
    }

    /// How many writes are held (for the tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// `cached`, or the AppBundle kubundle's own status write returned when the cache is still
    /// older than that.
    pub fn newest<'a>(&self, cached: &'a CachedBundle) -> Cow<'a, CachedBundle> {
        let Some(uid) = cached.metadata.uid.as_deref() else {
            return Cow::Borrowed(cached);
        };
        let mut map = self.0.lock().unwrap();
        let Some((_, written)) = map.get(uid) else {
            return Cow::Borrowed(cached);
        };
        let version = |b: &CachedBundle| b.metadata.resource_version.clone().unwrap_or_default();
        match super::observe::children_cache::compare_versions(&version(cached), &version(written))
        {
            Some(std::cmp::Ordering::Less) => Cow::Owned(written.clone()),
            // Caught up (or versions that do not compare): the cache is the truth again.
            _ => {
                map.remove(uid);
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
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
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

        // The watch delivering the write lets it go without a reconcile: an older version does not.
        writes.wrote(at("20", Some("web-2")), Instant::now());
        writes.seen(&at("19", None));
        assert_eq!(writes.len(), 1, "the watch is still behind the write");
        writes.seen(&at("20", Some("web-2")));
        assert_eq!(
            writes.len(),
            0,
            "the watch has the write: no second copy is kept"
        );
        assert_eq!(revision(&writes.newest(&at("19", None))), None);
    }
}

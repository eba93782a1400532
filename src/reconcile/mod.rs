//! The controller: for each AppBundle, read -> parse -> render -> apply the children -> status.
//! This file wires it together (watches, queue, backoff, error policy). Below it, top-down:
//! `pipeline` is one reconcile, a driver of named steps; `context` what reconciles share;
//! `report` writes the status and the Events; [`children`] classifies, applies and prunes them
//! (drift detection, the replicas handover, make-before-break of the way in); [`observe`] is what
//! the watches and reads tell (the children's cache, the AppBundles' cached form, the ConfigMap
//! tracker, relists, the CRD's age); [`revisions`] records the rollout history. The status
//! itself is computed, pure, in [`crate::status`].
//!
//! - AppBundles are cached parsed ([`CachedBundle`]); one whose spec does not fit the Rust types
//!   is reported (Stalled, a Warning Event) and does not break the watch.
//! - Children are watched (labels `app.kubernetes.io/managed-by=kubundle`) and cached ([`observe::children_cache`]):
//!   a reconcile reads them from the cache, not from the API server, and any change or deletion of
//!   a child triggers its AppBundle's reconcile, so drift is undone.
//! - Writes are server-side apply with field manager `kubundle`, and only when a child differs from
//!   its rendering: a steady cluster sees no write from kubundle.
//! - An existing object of a child's name that the AppBundle does not control is never written,
//!   except an orphan kubundle itself made for an AppBundle of that name (its labels, no
//!   controller), which is adopted.

mod analysis;
pub mod children;
mod context;
pub mod observe;
mod pipeline;
mod progress_budget;
mod report;
pub mod revisions;

pub use children::RENDERED_HASH;
pub use context::{Context, Settings, gateway_api_served};
pub use observe::cached_bundle::CachedBundle;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{DynamicObject, ListParams, PartialObjectMeta};
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store, reflector};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{Instrument, debug, info, warn};

use crate::api::{READY, find_condition};
use crate::error::{Error, Result};
use crate::render::config::ConfigKind;
use crate::render::{ChildKind, labels};
use observe::watches::{NoBackoff, WatchHealth, resilient};

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Why the AppBundles could not be listed at start-up.
#[derive(Debug)]
pub enum CrdCheck {
    /// The CRD is not installed: only a person can change that (the message says how).
    NotInstalled(String),
    /// No answer, or not yet the right one: the API server unreachable or restarting, its
    /// authorizer still warming up after a restart (401/403 for a few seconds), throttling.
    Unanswered(String),
}

/// Checks that the AppBundle CRD is installed (and readable), with a message saying what to do.
pub async fn check_crd(
    client: &Client,
    namespace: Option<&str>,
) -> std::result::Result<(), CrdCheck> {
    let api: Api<CachedBundle> = api_for(client, namespace);
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(CrdCheck::NotInstalled(format!(
            "the AppBundle CustomResourceDefinition (appbundles.{}) is not installed in this cluster: \
             install it with `kubectl apply --server-side -f crds/` (or the Helm chart) and start kubundle again",
            crate::api::GROUP
        ))),
        Err(e) => Err(CrdCheck::Unanswered(format!("cannot list AppBundles: {e}"))),
    }
}

/// The running controller's handles for the HTTP endpoints.
pub struct Handles {
    /// The controller's cache of AppBundles.
    pub store: Store<CachedBundle>,
    /// Set once the first list of AppBundles is in the cache.
    pub synced: Arc<AtomicBool>,
    /// Which watch streams are failing.
    pub watches: Arc<WatchHealth>,
}

/// Builds the controller; the future drives it until SIGTERM/SIGINT.
pub fn controller(ctx: Arc<Context>) -> (impl futures::Future<Output = ()>, Handles) {
    let mut streams = vec!["appbundles"];
    streams.extend(ChildKind::ALL.map(ChildKind::plural));
    streams.push("configmaps");
    if ctx.settings.follow_secrets {
        streams.push("secrets");
    }
    let health = Arc::new(WatchHealth::new(&streams));
    // The AppBundle reflector is ours rather than the Controller's, so that readiness can be read
    // off its InitDone event: the store's own wait_until_ready wakes only one waiter (the
    // Controller), so a second waiter would never be woken.
    let writer = Writer::default();
    let store = writer.as_reader();
    let synced = Arc::new(AtomicBool::new(false));
    let main = bundle_stream(&ctx, &health, writer, synced.clone());
    let controller = Controller::for_stream(main, store.clone());
    let controller = watch_config(watch_children(controller, &ctx, &health), &ctx, &health);
    // The CRD caught up with this kubundle (observe/crd_skew.rs): every AppBundle again, for what
    // its status and history could not hold.
    let skew = ctx.clone();
    let crd_applied = futures::stream::unfold(skew, |ctx| async move {
        ctx.crd_skew.closed().await;
        Some(((), ctx))
    });
    let controller = controller
        .reconcile_all_on(crd_applied)
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        // Each stream backs off on its own (see observe/watches.rs); a shared backoff would delay all.
        .trigger_backoff(NoBackoff)
        .shutdown_on_signal();
    let run = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "reconcile failed");
            }
        });
    (
        run,
        Handles {
            store,
            synced,
            watches: health,
        },
    )
}

/// The AppBundles' watch, into the reflector's `writer`; `synced` is set once they listed.
fn bundle_stream(
    ctx: &Arc<Context>,
    health: &Arc<WatchHealth>,
    writer: Writer<CachedBundle>,
    synced: Arc<AtomicBool>,
) -> impl futures::Stream<Item = std::result::Result<CachedBundle, watcher::Error>> + Send + 'static
{
    let bundles: Api<CachedBundle> = api_for(&ctx.client, ctx.settings.namespace.as_deref());
    reflector(
        writer,
        resilient(
            "appbundles",
            watcher(bundles, watcher_settings()),
            health.clone(),
            ctx.metrics.clone(),
        )
        .modify(CachedBundle::slim),
    )
    .inspect({
        let ctx = ctx.clone();
        move |event| {
            if matches!(event, Ok(watcher::Event::InitDone))
                && !synced.swap(true, Ordering::Relaxed)
            {
                info!("AppBundle cache synced; reconciling");
            }
            // kubundle's own status write, held until the cache has it, is in now (or the
            // AppBundle is gone).
            if let Ok(
                watcher::Event::Apply(seen)
                | watcher::Event::InitApply(seen)
                | watcher::Event::Delete(seen),
            ) = event
            {
                ctx.own_writes.seen(seen, std::time::Instant::now());
            }
            // A deleted AppBundle no longer uses any ConfigMap (it may go without a reconcile
            // seeing it go).
            if let Ok(watcher::Event::Delete(gone)) = event {
                ctx.config
                    .forget(&gone.namespace().unwrap_or_default(), &gone.name_any());
            }
        }
    })
    .applied_objects()
    // Only spec changes (a new generation) and label changes (labels pass on to the children)
    // trigger a reconcile from the AppBundle itself: its own status writes do not. Children's
    // changes trigger through their watches.
    .predicate_filter(
        predicates::generation
            .combine(predicates::labels)
            .combine(rollout_request),
        PredicateConfig::default(),
    )
}

/// A request to a canary (`kubectl kubundle promote`, an annotation) triggers a reconcile too.
fn rollout_request(obj: &CachedBundle) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let value = obj
        .metadata
        .annotations
        .as_ref()?
        .get(crate::rollout::REQUEST_ANNOTATION)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    Some(hasher.finish())
}

/// Every kind of child: watched in full (kubundle's label only), cached
/// (observe/children_cache.rs), and each change or deletion triggers its owner's reconcile.
fn watch_children(
    mut controller: Controller<CachedBundle>,
    ctx: &Arc<Context>,
    health: &Arc<WatchHealth>,
) -> Controller<CachedBundle> {
    let ns = ctx.settings.namespace.as_deref();
    for kind in ChildKind::ALL {
        if kind == ChildKind::HttpRoute && !ctx.settings.gateway_api {
            ctx.cache.mark_unwatched(kind);
            continue;
        }
        let ar = kind.api_resource();
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
            None => Api::all_with(ctx.client.clone(), &ar),
        };
        let cache_ctx = ctx.clone();
        let stream = resilient(
            kind.plural(),
            ctx.relists
                .relistable(kind.plural(), move || watcher(api.clone(), ours_config())),
            health.clone(),
            ctx.metrics.clone(),
        )
        .inspect(move |event| {
            if let Ok(event) = event {
                cache_ctx.cache.observe(kind, event);
            }
        })
        .touched_objects();
        controller = controller.owns_stream_with(stream, ar);
    }
    controller
}

/// The ConfigMaps (and Secrets) the pods use, as metadata: a change triggers the AppBundles that
/// use the object (observe/config_tracker.rs).
fn watch_config(
    controller: Controller<CachedBundle>,
    ctx: &Arc<Context>,
    health: &Arc<WatchHealth>,
) -> Controller<CachedBundle> {
    let controller = controller.watches_stream(
        config_stream::<ConfigMap>(ctx, health, ConfigKind::ConfigMap),
        config_users::<ConfigMap>(ctx, ConfigKind::ConfigMap),
    );
    if !ctx.settings.follow_secrets {
        return controller;
    }
    controller.watches_stream(
        config_stream::<Secret>(ctx, health, ConfigKind::Secret),
        config_users::<Secret>(ctx, ConfigKind::Secret),
    )
}

/// The metadata watch of one kind of configuration object, recorded in the [`ConfigTracker`].
fn config_stream<K>(
    ctx: &Arc<Context>,
    health: &Arc<WatchHealth>,
    kind: ConfigKind,
) -> impl futures::Stream<Item = std::result::Result<PartialObjectMeta<K>, watcher::Error>>
+ Send
+ 'static
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    // (An Api of PartialObjectMeta asks for metadata only.)
    let api: Api<PartialObjectMeta<K>> = api_for(&ctx.client, ctx.settings.namespace.as_deref());
    let plural = match kind {
        ConfigKind::ConfigMap => "configmaps",
        ConfigKind::Secret => "secrets",
    };
    let tracker = ctx.clone();
    resilient(
        plural,
        watcher(api, watcher_settings()),
        health.clone(),
        ctx.metrics.clone(),
    )
    .inspect(move |event| {
        if let Ok(event) = event {
            tracker.config.observe(kind, event);
        }
    })
    .touched_objects()
}

/// The AppBundles a change of a configuration object concerns.
fn config_users<K: Resource>(
    ctx: &Arc<Context>,
    kind: ConfigKind,
) -> impl Fn(PartialObjectMeta<K>) -> Vec<ObjectRef<CachedBundle>> + Send + Sync + 'static {
    let ctx = ctx.clone();
    move |obj| {
        ctx.config
            .users_of(kind, &obj.namespace().unwrap_or_default(), &obj.name_any())
    }
}

/// Objects per page of a watch's (re-)list. A page is parsed whole before its objects are
/// slimmed and cached, so it bounds the transient memory of a list: 500 (kube's default) full
/// Deployments parse into tens of MiB, about as much as the whole cache of 5,000 AppBundles.
const LIST_PAGE: u32 = 100;

/// How long the API server keeps one watch request open before it ends it (with a bookmark) and
/// the watcher goes on from where it was. The watcher gives up on a watch that has sent nothing
/// for this long plus 5 s, so this bounds how long events can be lost unseen on a connection the
/// network dropped without a reset (kube's default, 290 s, left the status stale for five minutes).
/// Cost: one watch request per watched kind every WATCH_TIMEOUT, served from the API server's cache.
pub const WATCH_TIMEOUT: u32 = 30;

/// Every watch: pages of [`LIST_PAGE`], watch requests of [`WATCH_TIMEOUT`].
fn watcher_settings() -> watcher::Config {
    watcher::Config::default()
        .page_size(LIST_PAGE)
        .timeout(WATCH_TIMEOUT)
}

/// Child watches see only objects with kubundle's managed-by label.
fn ours_config() -> watcher::Config {
    watcher_settings().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER))
}

async fn reconcile(obj: Arc<CachedBundle>, ctx: Arc<Context>) -> Result<Action> {
    // Field names of their own: `name` is the span's name in JSON logs.
    let span = tracing::info_span!("reconcile", appbundle.namespace = %obj.namespace().unwrap_or_default(), appbundle.name = %obj.name_any());
    let start = Instant::now();
    let result = pipeline::reconcile_one(&obj, &ctx)
        .instrument(span.clone())
        .await;
    ctx.metrics
        .reconcile_duration
        .observe(start.elapsed().as_secs_f64());
    let key = ObjectRef::from_obj(&*obj);
    match &result {
        Ok(_) => {
            ctx.metrics.reconciles.with_label_values(&["success"]).inc();
            ctx.failures.lock().unwrap().remove(&key);
        }
        Err(e) => {
            ctx.metrics.reconciles.with_label_values(&["error"]).inc();
            ctx.metrics.errors.with_label_values(&[e.label()]).inc();
            span.in_scope(
                || warn!(error = %e, reason = e.label(), "reconcile failed; retrying with backoff"),
            );
        }
    }
    result
}

/// Exponential backoff per AppBundle: 1 s, 2 s, 4 s, ... up to 5 minutes; reset by a success.
/// While the API server cannot be reached at all, retries stay at most this far apart, so that
/// kubundle catches up within seconds of its return (a refused connection costs the server nothing).
pub const UNREACHABLE_RETRY: Duration = Duration::from_secs(8);

fn error_policy(obj: Arc<CachedBundle>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*obj);
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(key).or_insert(0);
    *n = n.saturating_add(1);
    let delay = backoff(*n);
    Action::requeue(if error.is_unreachable() {
        delay.min(UNREACHABLE_RETRY)
    } else {
        delay
    })
}

/// The delay before retry number `n` (1-based).
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

/// Counts AppBundles in the cache by the status of their Ready condition: (True, False, Unknown).
pub fn count_ready(store: &Store<CachedBundle>) -> (i64, i64, i64) {
    let (mut t, mut f, mut u) = (0, 0, 0);
    for obj in store.state() {
        let ready = obj
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, READY));
        match ready.map(|c| c.status.as_str()) {
            Some("True") => t += 1,
            Some("False") => f += 1,
            _ => u += 1,
        }
    }
    (t, f, u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}

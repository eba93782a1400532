//! The controller: for each AppBundle, read -> parse -> render -> apply the children -> status.
//!
//! - AppBundles are cached parsed ([`CachedBundle`]); one whose spec does not fit the Rust types
//!   is reported (Stalled, a Warning Event) and does not break the watch.
//! - Children are watched as metadata only (labels `app.kubernetes.io/managed-by=kubundle`): any
//!   change or deletion of a child triggers its AppBundle's reconcile, and drift is undone.
//! - Writes are server-side apply with field manager `kubundle`, and only when a child differs from
//!   its rendering: a steady cluster sees no write from kubundle.
//! - An existing object of a child's name that the AppBundle does not control is never written.

mod cached;
pub mod status;

pub use cached::CachedBundle;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store, reflector};
use kube::runtime::{PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tracing::{Instrument, debug, info, warn};

use crate::api::{AppBundle, AppBundleStatus, READY, STALLED, TRUE, find_condition};
use crate::error::{Error, Result};
use crate::events::{EventType, Publisher};
use crate::metrics::Metrics;
use crate::render::{self, FIELD_MANAGER, labels};
use status::{Blocker, Observed};

/// Annotation on each child: a hash of kubundle's rendering of it. With the rendered fields
/// themselves, it tells whether the child is up to date without writing to it.
pub const RENDERED_HASH: &str = "kubundle.dev/rendered-hash";

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (None: all namespaces).
    pub namespace: Option<String>,
    /// AppBundles reconciled at the same time.
    pub concurrency: u16,
    /// The cluster's DNS domain, for `status.address.url`.
    pub cluster_domain: String,
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub events: Publisher,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Consecutive failures per AppBundle, for exponential backoff; reset on success.
    failures: Mutex<HashMap<ObjectRef<CachedBundle>, u32>>,
}

impl Context {
    pub fn new(client: Client, events: Publisher, metrics: Metrics, settings: Settings) -> Self {
        Context {
            client,
            events,
            metrics,
            settings,
            failures: Mutex::default(),
        }
    }
}

fn api_for<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Checks that the AppBundle CRD is installed (and readable), with a message saying what to do.
pub async fn check_crd(
    client: &Client,
    namespace: Option<&str>,
) -> std::result::Result<(), String> {
    let api: Api<CachedBundle> = api_for(client, namespace);
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(format!(
            "the AppBundle CustomResourceDefinition (appbundles.{}) is not installed in this cluster: \
             install it with `kubectl apply --server-side -f crds/` (or the Helm chart) and start kubundle again",
            crate::api::GROUP
        )),
        Err(e) => Err(format!("cannot list AppBundles: {e}")),
    }
}

/// The running controller's handles for the HTTP endpoints.
pub struct Handles {
    /// The controller's cache of AppBundles.
    pub store: Store<CachedBundle>,
    /// Set once the first list of AppBundles is in the cache.
    pub synced: Arc<AtomicBool>,
}

/// Builds the controller; the future drives it until SIGTERM/SIGINT.
pub fn controller(ctx: Arc<Context>) -> (impl futures::Future<Output = ()>, Handles) {
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.clone();
    let bundles: Api<CachedBundle> = api_for(&client, ns.as_deref());
    let ours =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let deployments = watcher(
        api_for::<PartialObjectMeta<Deployment>>(&client, ns.as_deref()),
        ours.clone(),
    )
    .touched_objects();
    let services = watcher(
        api_for::<PartialObjectMeta<Service>>(&client, ns.as_deref()),
        ours,
    )
    .touched_objects();

    // The AppBundle reflector is ours rather than the Controller's, so that readiness can be read
    // off its InitDone event: the store's own wait_until_ready wakes only one waiter (the
    // Controller), so a second waiter would never be woken.
    let writer = Writer::default();
    let store = writer.as_reader();
    let synced = Arc::new(AtomicBool::new(false));
    let flag = synced.clone();
    let main = reflector(
        writer,
        watcher(bundles, watcher::Config::default()).modify(CachedBundle::slim),
    )
    .inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) && !flag.swap(true, Ordering::Relaxed) {
            info!("AppBundle cache synced; reconciling");
        }
    })
    .applied_objects()
    // Only spec changes (a new generation) trigger a reconcile from the AppBundle itself: its
    // own status writes do not. Children's changes trigger through their watches.
    .predicate_filter(predicates::generation, PredicateConfig::default());

    let controller = Controller::for_stream(main, store.clone())
        .owns_stream_with(deployments, ())
        .owns_stream_with(services, ())
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        .shutdown_on_signal();
    let run = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "reconcile failed");
            }
        });
    (run, Handles { store, synced })
}

async fn reconcile(obj: Arc<CachedBundle>, ctx: Arc<Context>) -> Result<Action> {
    let span = tracing::info_span!("reconcile", namespace = %obj.namespace().unwrap_or_default(), name = %obj.name_any());
    let start = Instant::now();
    let result = reconcile_one(&obj, &ctx).instrument(span.clone()).await;
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
fn error_policy(obj: Arc<CachedBundle>, _error: &Error, ctx: Arc<Context>) -> Action {
    let key = ObjectRef::from_obj(&*obj);
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(key).or_insert(0);
    *n = n.saturating_add(1);
    Action::requeue(backoff(*n))
}

/// The delay before retry number `n` (1-based).
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

/// What happened to a child in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    None,
    Created,
    Updated,
}

/// The outcome of making one child match its rendering.
struct Child<K> {
    live: Option<K>,
    change: Change,
    blocker: Option<Blocker>,
}

async fn reconcile_one(obj: &CachedBundle, ctx: &Context) -> Result<Action> {
    let reference = obj.object_ref(&());
    let ns = obj.namespace().unwrap_or_default();
    // Status writes answer with the object, read as the cache reads it: even an AppBundle whose
    // spec this version cannot read gets its status written.
    let status_api: Api<CachedBundle> = Api::namespaced(ctx.client.clone(), &ns);
    let now = Time(k8s_openapi::jiff::Timestamp::now());

    let bundle = match obj.bundle() {
        Ok(bundle) => bundle,
        Err(e) => {
            // The stored spec does not fit this version's types (the schema let it through).
            let message = format!("the AppBundle cannot be read by this version of kubundle: {e}");
            let mut stub = AppBundle::new(
                &obj.name_any(),
                serde_json::from_value(serde_json::json!({"image": "-"})).unwrap(),
            );
            stub.metadata = obj.metadata.clone();
            stub.status = obj.status.clone();
            let blocker = Blocker::InvalidSpec { message };
            let status = status::compute(
                &stub,
                &Observed::default(),
                Some(&blocker),
                &ctx.settings.cluster_domain,
                &now,
            );
            write_status(ctx, &status_api, &stub, &status, &reference).await?;
            return Ok(Action::await_change());
        }
    };

    let (deployment, service) = match (render::deployment(&bundle), render::service(&bundle)) {
        (Ok(d), Ok(s)) => (d, s),
        (Err(e), _) | (_, Err(e)) => {
            let blocker = Blocker::InvalidSpec {
                message: e.to_string(),
            };
            let status = status::compute(
                &bundle,
                &Observed::default(),
                Some(&blocker),
                &ctx.settings.cluster_domain,
                &now,
            );
            write_status(ctx, &status_api, &bundle, &status, &reference).await?;
            return Ok(Action::await_change());
        }
    };
    let uid = bundle.metadata.uid.clone().unwrap_or_default();

    // The two children are independent: read and apply them concurrently.
    let (d, s) = futures::try_join!(
        ensure(
            ctx,
            Api::<Deployment>::namespaced(ctx.client.clone(), &ns),
            deployment,
            &uid,
            "Deployment",
        ),
        ensure(
            ctx,
            Api::<Service>::namespaced(ctx.client.clone(), &ns),
            service,
            &uid,
            "Service",
        ),
    )?;
    // One Event for what this reconcile wrote, naming each child it created or changed.
    let changes: Vec<String> = [("Deployment", d.change), ("Service", s.change)]
        .into_iter()
        .filter_map(|(kind, change)| match change {
            Change::None => None,
            Change::Created => Some(format!("created {kind} {}", bundle.name_any())),
            Change::Updated => Some(format!(
                "applied {kind} {} (it differed from the AppBundle)",
                bundle.name_any()
            )),
        })
        .collect();
    if !changes.is_empty() {
        let reason = if d.change == Change::Updated || s.change == Change::Updated {
            "Updated"
        } else {
            "Created"
        };
        publish(
            ctx,
            &reference,
            EventType::Normal,
            reason,
            changes.join("; "),
        );
    }

    let blocker = d.blocker.or(s.blocker);
    let observed = Observed {
        deployment: d.live.as_ref(),
        service: s.live.as_ref(),
    };
    let status = status::compute(
        &bundle,
        &observed,
        blocker.as_ref(),
        &ctx.settings.cluster_domain,
        &now,
    );
    write_status(ctx, &status_api, &bundle, &status, &reference).await?;

    Ok(match blocker {
        // A person has to act; look again now and then in case they did without touching a child.
        Some(_) => Action::requeue(Duration::from_secs(60)),
        // Changes of the children and of the AppBundle arrive through the watches.
        None => Action::await_change(),
    })
}

/// Makes one child match its rendering, unless an object of its name exists that the AppBundle
/// does not control: that one is left untouched and reported.
async fn ensure<K>(
    ctx: &Context,
    api: Api<K>,
    mut desired: K,
    owner_uid: &str,
    kind: &'static str,
) -> Result<Child<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let hash = rendering_hash(&desired, kind)?;
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(RENDERED_HASH.into(), hash.clone());

    let live = api.get_opt(&name).await?;
    let change = match &live {
        Some(live) if !controlled_by(live.meta(), owner_uid) => {
            let controller = live
                .meta()
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| format!(" (it is controlled by {} {})", o.kind, o.name))
                .unwrap_or_default();
            let ns = live.meta().namespace.clone().unwrap_or_default();
            let message = format!(
                "{kind} {ns}/{name} already exists and is not owned by this AppBundle{controller}; \
                 kubundle leaves it untouched: delete or rename it, or rename the AppBundle"
            );
            return Ok(Child {
                live: None,
                change: Change::None,
                blocker: Some(Blocker::NameConflict {
                    kind,
                    name,
                    message,
                }),
            });
        }
        Some(live) if up_to_date(live, &desired, &hash, kind)? => Change::None,
        Some(_) => Change::Updated,
        None => Change::Created,
    };
    if change == Change::None {
        return Ok(Child {
            live,
            change,
            blocker: None,
        });
    }

    // Force: kubundle is the controller of this object; fields it sets are its own, whoever last
    // edited them (that is how drift is undone). Fields it does not set stay with their owners.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    ctx.metrics.write(kind, "apply");
    match api.patch(&name, &params, &Patch::Apply(&desired)).await {
        Ok(applied) => {
            info!(kind, name, ?change, "applied");
            Ok(Child {
                live: Some(applied),
                change,
                blocker: None,
            })
        }
        Err(kube::Error::Api(s)) if matches!(s.code, 400 | 403 | 422) => Ok(Child {
            live,
            change: Change::None,
            blocker: Some(Blocker::WriteRefused {
                kind,
                message: s.message,
            }),
        }),
        Err(e) => Err(e.into()),
    }
}

fn controlled_by(meta: &kube::api::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

fn rendering_hash<K: Serialize>(desired: &K, what: &'static str) -> Result<String> {
    let bytes = serde_json::to_vec(desired).map_err(|source| Error::Serialize { what, source })?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Ok(format!("{:016x}", hasher.finish()))
}

/// A live child is up to date when it carries the hash of the current rendering (so no field was
/// dropped from the rendering since) and every rendered field has the rendered value (so nobody
/// changed one). Fields others added are not kubundle's business.
fn up_to_date<K: Serialize + Resource>(
    live: &K,
    desired: &K,
    hash: &str,
    what: &'static str,
) -> Result<bool> {
    let annotated = live
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(RENDERED_HASH))
        .map(String::as_str)
        == Some(hash);
    if !annotated {
        return Ok(false);
    }
    let live = serde_json::to_value(live).map_err(|source| Error::Serialize { what, source })?;
    let desired =
        serde_json::to_value(desired).map_err(|source| Error::Serialize { what, source })?;
    Ok(covers(&live, &desired))
}

/// Whether `live` has every field of `desired` with the same value (objects: a superset of keys;
/// arrays: the same length, element by element).
pub fn covers(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| covers(lv, dv))),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| covers(lv, dv))
        }
        (l, d) => l == d,
    }
}

/// Writes the status if it changed, and publishes the Events of condition transitions.
async fn write_status(
    ctx: &Context,
    api: &Api<CachedBundle>,
    bundle: &AppBundle,
    status: &AppBundleStatus,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
) -> Result<()> {
    let previous = bundle.status.clone().unwrap_or_default();
    if &previous == status {
        return Ok(());
    }
    let body = serde_json::json!({
        "apiVersion": AppBundle::api_version(&()),
        "kind": AppBundle::kind(&()),
        "status": status,
    });
    ctx.metrics.write("AppBundle", "apply_status");
    api.patch_status(
        &bundle.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;

    let was = |t: &str| find_condition(&previous.conditions, t).map(|c| c.status.clone());
    let now = |t: &str| find_condition(&status.conditions, t).cloned();
    if let Some(ready) = now(READY)
        && ready.status == TRUE
        && was(READY).as_deref() != Some(TRUE)
    {
        publish(
            ctx,
            reference,
            EventType::Normal,
            "RolledOut",
            ready.message,
        );
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
    Ok(())
}

/// Publishes an Event in the background: Events are for people, and must not slow a reconcile
/// (nor fail it: a lost Event is logged).
fn publish(
    ctx: &Context,
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
    use serde_json::json;

    #[test]
    fn covers_ignores_fields_others_added() {
        let live = json!({"metadata": {"labels": {"a": "1", "extra": "x"}}, "spec": {"replicas": 3, "strategy": {}}});
        let desired = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 3}});
        assert!(covers(&live, &desired));
    }

    #[test]
    fn covers_sees_a_changed_or_missing_field() {
        let desired = json!({"spec": {"containers": [{"image": "nginx:1"}]}});
        assert!(!covers(
            &json!({"spec": {"containers": [{"image": "nginx:2"}]}}),
            &desired
        ));
        assert!(!covers(&json!({"spec": {}}), &desired));
        assert!(!covers(
            &json!({"spec": {"containers": [{"image": "nginx:1"}, {"image": "x"}]}}),
            &desired
        ));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}

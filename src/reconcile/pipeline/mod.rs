//! One reconcile of one AppBundle, straight through:
//! deletion check -> parse -> render -> read the children -> apply what differs -> status.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, warn};

use super::children::{self, Change, Child, Stale, Writing, is_definite_refusal};
use super::report::{publish, write_status};
use super::status::{self, Blocker, Observed};
use super::{CachedBundle, Context};
use super::{handover, history, pods, routing};
use crate::api::{AppBundle, READY, STALLED, TRUE, find_condition, reason};
use crate::error::Result;
use crate::events::EventType;
use crate::render::{self, ChildKind};

/// How soon to look again while an object kubundle does not watch blocks the AppBundle (a name
/// conflict with an object that is not kubundle's, a child still terminating).
const BLOCKED_RECHECK: Duration = Duration::from_secs(5);

/// How soon to try again when the rollout history could not be recorded.
const HISTORY_RETRY: Duration = Duration::from_secs(10);
/// How soon a revision name held by another owner (or a missing IngressClass) is looked at again.
const BLOCKED_HISTORY_RETRY: Duration = Duration::from_secs(60);

/// How long reconciles wait for the children's watches to list at startup (counted from the first
/// reconcile) before they read the children of the kinds still unlisted from the API server.
const CACHE_SYNC_WAIT: Duration = Duration::from_secs(10);

pub async fn reconcile_one(obj: &CachedBundle, ctx: &Context) -> Result<Action> {
    // The cache may not have kubundle's own last status write yet: then that is the AppBundle.
    let newest = ctx.own_writes.newest(obj);
    let obj: &CachedBundle = &newest;
    // Being deleted (any propagation policy): the garbage collector takes the children away, and
    // kubundle must not put them back. Nothing to write, not even status.
    if obj.metadata.deletion_timestamp.is_some() {
        ctx.config
            .forget(&obj.namespace().unwrap_or_default(), &obj.name_any());
        debug!("being deleted; nothing to do");
        return Ok(Action::await_change());
    }
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
            return report_blocked(ctx, &status_api, &stub, blocker, &reference, &now).await;
        }
    };

    // The ConfigMaps and Secrets the pods use: which are missing, and with
    // spec.rolloutOnConfigChange the digest of their contents for the pod template.
    let config_refs = render::config::references(&bundle.spec);
    let config = ctx
        .config
        .resolve(
            &ctx.client,
            &ns,
            &bundle.name_any(),
            &config_refs,
            bundle.spec.rollout_on_config_change,
        )
        .await?;
    // A ConfigMap the pods need is newly missing: in a namespace being deleted that is the
    // namespace controller at work, and nothing is to be written or told.
    let newly_missing = !config.missing.is_empty()
        && bundle
            .status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, READY))
            .is_none_or(|c| c.reason != reason::CONFIG_MISSING);
    if newly_missing && ctx.namespaces.terminating(&ctx.client, &ns).await {
        debug!("the namespace is being deleted; nothing to do");
        return Ok(Action::await_change());
    }
    // The digest the running pods were made with. It stays while a ConfigMap they need is
    // missing (pods made now could not start; its re-creation with the same contents then rolls
    // nothing) and while the configuration is still changing (a burst of edits rolls once).
    let running_digest = config
        .digest
        .as_ref()
        .and_then(|_| {
            ctx.cache
                .get(ChildKind::Deployment, &ns, &bundle.name_any())
        })
        .and_then(|c| {
            c.object().data["spec"]["template"]["metadata"]["annotations"]
                [render::config::CONFIG_DIGEST]
                .as_str()
                .map(str::to_string)
        });
    let digest = match (&config.digest, &running_digest) {
        (Some(new), Some(running))
            if new != running && (!config.missing.is_empty() || config.settling.is_some()) =>
        {
            debug!(missing = config.missing.len(), settling = ?config.settling, "the configuration's new digest waits");
            Some(running.clone())
        }
        _ => config.digest.clone(),
    };
    let settle_again = config
        .settling
        .filter(|_| digest != config.digest)
        .map(|wait| wait + Duration::from_millis(100));
    let rendered = match render::children(&bundle, digest.as_deref()) {
        Ok(rendered) => rendered,
        Err(e) => {
            let blocker = Blocker::InvalidSpec {
                message: e.to_string(),
            };
            return report_blocked(ctx, &status_api, &bundle, blocker, &reference, &now).await;
        }
    };
    if !ctx.settings.gateway_api && rendered.iter().any(|r| r.kind == ChildKind::HttpRoute) {
        let blocker = Blocker::ApiMissing {
            message: "spec.http.gateway asks for an HTTPRoute, but this cluster does not serve the Gateway API \
                      (gateway.networking.k8s.io/v1 HTTPRoute) to kubundle: install the Gateway API CRDs (on GKE, \
                      enable the Gateway API on the cluster) and restart kubundle, or use spec.http.ingress"
                .into(),
        };
        return report_blocked(ctx, &status_api, &bundle, blocker, &reference, &now).await;
    }
    let uid = bundle.metadata.uid.clone().unwrap_or_default();
    let name = bundle.name_any();
    // kubundle has not written this AppBundle's status yet (it is the CRD's default,
    // observedGeneration 0): its children, if any exist, were made in this very rollout.
    let never_reported = bundle
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0)
        == 0;
    // Until every child kind has listed once, the cache cannot tell a missing child from one not
    // listed yet: wait a little (at startup), then read what is still unknown from the API server.
    if !ctx.cache.is_synced() {
        ctx.cache.wait_synced(CACHE_SYNC_WAIT).await;
    }
    // Children the spec no longer asks for, from the cache (no request).
    let stale: Vec<Stale> = ChildKind::ALL
        .into_iter()
        .filter(|k| k.optional() && !rendered.iter().any(|r| r.kind == *k))
        .filter_map(|k| {
            ctx.cache
                .get(k, &ns, &name)
                .map(|c| (k, c.object().metadata))
        })
        .filter(|(_, meta)| children::is_stale_child(meta, &uid, &name))
        .map(|(kind, meta)| Stale {
            kind,
            name: name.clone(),
            uid: meta.uid.unwrap_or_default(),
        })
        .collect();

    // Every child as the cache holds it, or as the API server has it where the cache cannot say:
    // a kind not listed yet, or a missing child whose name a foreign object held at the last look
    // (so that a conflict that lasts costs one read per look, not a refused write and a read).
    let blocked_by_foreign = matches!(
        bundle.status.as_ref().and_then(|s| find_condition(&s.conditions, STALLED)),
        Some(c) if c.status == TRUE && c.reason == reason::NAME_CONFLICT
    );
    let mut set: Vec<Child> = futures::future::try_join_all(rendered.into_iter().map(|r| {
        let kind = r.kind;
        let child_name = r.object.name_any();
        let cached = ctx
            .cache
            .is_kind_synced(kind)
            .then(|| ctx.cache.get(kind, &ns, &child_name));
        let (client, ns, uid, name) = (&ctx.client, &ns, &uid, &name);
        async move {
            match cached {
                Some(Some(live)) => children::cached(client, ns, r, Some(&live), uid, name),
                Some(None) if !blocked_by_foreign => {
                    children::cached(client, ns, r, None, uid, name)
                }
                _ => children::read(client, ns, r, uid, name).await,
            }
        }
    }))
    .await?;
    let mut blocker = set.iter().find_map(Child::blocker);
    // The configuration digest the running pods were made with, to tell a config-driven rollout.
    // (Only for AppBundles that follow their configuration: parsing the Deployment costs.)
    let live_digest: Option<String> = set
        .iter()
        .filter(|_| digest.is_some())
        .find(|c| c.kind == ChildKind::Deployment)
        .and_then(Child::live_as::<Deployment>)
        .and_then(|d| render::config::digest_of(&d).map(str::to_string));

    let mut changes: Vec<(&'static str, Change)> = Vec::new();
    // Stale routing children kept until their replacement routes.
    let mut held: Vec<ChildKind> = Vec::new();
    let mut drain_recheck: Option<Duration> = None;
    if blocker.is_none() {
        let needed = set
            .iter()
            .map(|c| c.needed(&ctx.settled))
            .collect::<Result<Vec<_>>>()?;
        // A child to create for an AppBundle seen before (it was deleted since): make sure the
        // AppBundle is not being deleted this very moment, which the cache may not show yet. A
        // create then would only hand the garbage collector more to delete.
        if needed.contains(&Change::Created) && !never_reported {
            let fresh = Api::<CachedBundle>::namespaced(ctx.client.clone(), &ns)
                .get_metadata_opt(&name)
                .await?;
            if fresh.is_none_or(|m| {
                m.metadata.deletion_timestamp.is_some() || m.metadata.uid.as_deref() != Some(&uid)
            }) {
                debug!("deleted meanwhile; nothing to do");
                return Ok(Action::await_change());
            }
            // The namespace controller deleting the children before the AppBundle: nothing may
            // be created there any more (the create would be refused).
            if ctx.namespaces.terminating(&ctx.client, &ns).await {
                debug!("the namespace is being deleted; nothing to do");
                return Ok(Action::await_change());
            }
        }
        let writing = Writing {
            metrics: &ctx.metrics,
            settled: &ctx.settled,
            cache: &ctx.cache,
            owner_uid: &uid,
            bundle_name: &name,
        };
        // The children change as a unit: while one is blocked (a foreign object of its name, a
        // refusal), no other is created or changed. So when an existing child is to change along
        // with another write, every write is first tried as a server-side dry run (the API
        // server's own admission, quota and name checks, nothing stored); a refusal there leaves
        // everything as it is. A new AppBundle's children (creates only) need no dry run: the
        // Deployment comes last, once every other child was created, so no pods run without
        // their Service. The writes then go in that order too: the other children, the
        // Deployment, and only then the deletion of children the spec no longer asks for.
        let writes = needed.iter().filter(|n| **n != Change::None).count();
        let changes_existing = needed
            .iter()
            .any(|n| matches!(n, Change::Updated | Change::Adopted));
        let mut results: Vec<Result<Change, kube::Error>> =
            (0..set.len()).map(|_| Ok(Change::None)).collect();
        let mut pruned: Vec<Result<Change, kube::Error>> =
            stale.iter().map(|_| Ok(Change::None)).collect();
        let mut passed = true;
        if writes >= 2 && changes_existing {
            let tried = futures::future::join_all(
                set.iter_mut()
                    .zip(&needed)
                    .map(|(c, n)| c.dry_run(*n, &writing)),
            )
            .await;
            passed = tried.iter().all(Result::is_ok) && set.iter().all(|c| c.blocker().is_none());
            if !passed {
                // The refusal is told as the real write's would be (below); nothing was written.
                results = tried
                    .into_iter()
                    .map(|r| r.map(|()| Change::None))
                    .collect();
            }
        }
        if passed {
            // The other children first, each request to completion whatever the others' fate.
            let others = futures::future::join_all(
                set.iter_mut()
                    .zip(&needed)
                    .enumerate()
                    .filter(|(_, (c, _))| c.kind != ChildKind::Deployment)
                    .map(|(i, (c, n))| {
                        let writing = &writing;
                        async move { (i, c.apply(*n, writing).await) }
                    }),
            )
            .await;
            for (i, result) in others {
                results[i] = result;
            }
            let others_ok =
                results.iter().all(Result::is_ok) && set.iter().all(|c| c.blocker().is_none());
            if others_ok {
                for (i, (c, n)) in set.iter_mut().zip(&needed).enumerate() {
                    if c.kind == ChildKind::Deployment {
                        // The replicas pass to the autoscaler, or to nobody, without a dip
                        // (handover.rs).
                        handover::release_replicas(&bundle, c, &ctx.metrics).await?;
                        results[i] = c.apply(*n, &writing).await;
                    }
                }
            }
            let all_ok =
                results.iter().all(Result::is_ok) && set.iter().all(|c| c.blocker().is_none());
            if all_ok {
                // The old way in stays until the new one routes (routing.rs).
                let route = set
                    .iter()
                    .find(|c| c.kind == ChildKind::HttpRoute)
                    .and_then(Child::live);
                let ingress: Option<Ingress> = set
                    .iter()
                    .find(|c| c.kind == ChildKind::Ingress)
                    .and_then(Child::live_as);
                let ns = &ns;
                let at = std::time::Instant::now();
                pruned = futures::future::join_all(stale.iter().map(|st| {
                    let verdict =
                        routing::replacement_ready(st.kind, &bundle, route, ingress.as_ref())
                            .map(|ready| ctx.handovers.verdict(&uid, ready, at));
                    match verdict {
                        Some(routing::Verdict::Hold) => held.push(st.kind),
                        Some(routing::Verdict::Drain(left)) => {
                            let after = left + Duration::from_millis(100);
                            drain_recheck = Some(drain_recheck.map_or(after, |d| d.min(after)));
                        }
                        _ => {}
                    }
                    let keep = matches!(
                        verdict,
                        Some(routing::Verdict::Hold | routing::Verdict::Drain(_))
                    );
                    async move {
                        if keep {
                            Ok(Change::None)
                        } else {
                            children::prune(&ctx.client, ns, st, &ctx.metrics, &ctx.cache).await
                        }
                    }
                }))
                .await;
            }
        }
        let kinds = set
            .iter()
            .map(|c| c.kind)
            .chain(stale.iter().map(|st| st.kind));
        let mut transient = None;
        let mut namespace_terminating = false;
        let outcomes = results.into_iter().chain(pruned);
        for (kind, result) in kinds.zip(outcomes) {
            match result {
                Ok(change) => changes.push((kind.name(), change)),
                Err(e) if children::is_namespace_terminating(&e) => namespace_terminating = true,
                Err(e) if is_definite_refusal(&e) => {
                    let retry = children::refusal_may_lift(&e);
                    let message = match e {
                        kube::Error::Api(s) => s.message,
                        other => other.to_string(),
                    };
                    // `spec.template.spec.initContainers[0]` is `spec.sidecars[0]` to the user.
                    let message = render::paths::in_bundle_terms(&message, &bundle.spec);
                    blocker.get_or_insert(Blocker::WriteRefused {
                        kind: kind.name(),
                        message,
                        retry,
                    });
                }
                Err(e) => transient = Some(e),
            }
        }
        // A create refused because an object of the child's name exists that kubundle must not
        // touch (its classification changed on reading it).
        if blocker.is_none() {
            blocker = set.iter().find_map(Child::blocker);
        }
        if namespace_terminating {
            // The namespace is being deleted, the AppBundle with it: the namespace controller
            // deletes the children first, and nothing may be created there any more. Nothing to
            // report either: the AppBundle is about to go.
            debug!("the namespace is being deleted; nothing to do");
            return Ok(Action::await_change());
        }
        if let Some(e) = transient {
            // Retried with backoff; the status stays as it was (nothing definite to say), and
            // what did change is told now.
            announce(ctx, &reference, &name, &changes);
            return Err(e.into());
        }
    }

    let live = |kind: ChildKind| set.iter().find(|c| c.kind == kind);
    let deployment: Option<Deployment> = live(ChildKind::Deployment).and_then(Child::live_as);
    let service: Option<Service> = live(ChildKind::Service).and_then(Child::live_as);
    let autoscaler: Option<HorizontalPodAutoscaler> =
        live(ChildKind::HorizontalPodAutoscaler).and_then(Child::live_as);
    let ingress: Option<Ingress> = live(ChildKind::Ingress).and_then(Child::live_as);
    let route = live(ChildKind::HttpRoute).and_then(Child::live);
    // A rollout that stopped making progress: its newest pods say why (read only then, so healthy
    // rollouts and steady state cost no pod reads).
    let progress = pods::progress(
        deployment.as_ref(),
        status::desired_replicas(&bundle, deployment.as_ref()),
        &now,
    );
    // A rollout that seems stuck may be a cache that missed the Deployment's changes (relist.rs).
    if matches!(progress, pods::Progress::Stuck)
        && blocker.is_none()
        && deployment_cache_behind(ctx, &ns, &name).await
    {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let problem = match progress {
        pods::Progress::Stuck if blocker.is_none() => read_pod_problem(ctx, &ns, &name).await,
        _ => None,
    };
    let gateway = match route {
        Some(_) => read_gateway(ctx, &bundle).await,
        None => None,
    };
    let observed = Observed {
        deployment: deployment.as_ref(),
        service: service.as_ref(),
        autoscaler: autoscaler.as_ref(),
        route,
        gateway: gateway.as_ref(),
        ingress: ingress.as_ref(),
        pods: problem.as_ref(),
        missing_config: &config.missing,
        unfollowed_config: &config.unfollowed,
    };
    let mut status = status::compute(
        &bundle,
        &observed,
        blocker.as_ref(),
        &ctx.settings.cluster_domain,
        &now,
    );
    // Children adopted (the AppBundle was deleted with --cascade=orphan and applied again): its
    // revisions come with them, and the next is numbered after theirs.
    if changes.iter().any(|(_, c)| *c == Change::Adopted) {
        match history::adopt_orphans(&ctx.client, &bundle, &ctx.metrics).await {
            Ok(Some(highest)) if status.revision.unwrap_or(0) < highest => {
                status.revision = Some(highest);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "cannot adopt the orphaned rollout history"),
        }
    }
    // Ready on the newest spec: it is the newest revision (recorded once; history.rs).
    let mut history_retry = None;
    if blocker.is_none()
        && find_condition(&status.conditions, READY).is_some_and(|c| c.status == TRUE)
        && history::unrecorded(&bundle)
        // A CRD older than kubundle cannot store the revision fields (crd_skew.rs).
        && !ctx.crd_skew.blocks_history()
    {
        let last = status.revision.unwrap_or(0);
        match history::record(&ctx.client, &bundle, last, &ctx.metrics).await {
            Ok((number, revision)) => {
                status.revision = Some(number);
                status.current_revision = Some(revision);
            }
            // A revision of that name that is not this AppBundle's: said in Ready's message
            // (Ready stays: the application is fine), looked at again every minute.
            Err(e) if e.to_string().contains(history::FOREIGN) => {
                warn!(error = %e, "cannot record the rollout history");
                status::note_on_ready(
                    &mut status,
                    &format!("rollout history is not recorded: {e} (delete or rename it)"),
                );
                history_retry = Some(BLOCKED_HISTORY_RETRY);
            }
            Err(e) => {
                warn!(error = %e, "cannot record the rollout history; trying again in 10 s");
                history_retry = Some(HISTORY_RETRY);
            }
        }
    }
    for kind in &held {
        status::note_on_ready(&mut status, &routing::held_note(*kind, &name));
    }
    // An Ingress waiting for an address from a class that does not exist waits for good: said.
    let mut class_recheck = None;
    if let Some(note) = missing_ingress_class(ctx, &bundle, &status).await {
        status::note_on_ready(&mut status, &note);
        class_recheck = Some(BLOCKED_HISTORY_RETRY);
    }
    let made_of = set
        .iter()
        .map(|c| format!("{} {name}", c.kind.name()))
        .collect::<Vec<_>>()
        .join(", ");
    // The children's changes, in one Event, unless an Event to come tells it: a new AppBundle's
    // first rollout names its children, and a new spec that starts a rollout is told by
    // RolledOut when it is done. Drift undone, a child re-created or pruned, and a new spec that
    // changes no pod are told now.
    let first_rollout = never_reported
        && changes
            .iter()
            .all(|(_, c)| matches!(c, Change::Created | Change::None));
    let new_spec =
        bundle.status.as_ref().and_then(|s| s.observed_generation) != bundle.metadata.generation;
    let rolling_out = blocker.is_none()
        && find_condition(&status.conditions, READY).is_none_or(|c| c.status != TRUE);
    let told_later = first_rollout || (new_spec && rolling_out);
    // The same spec with new configuration contents: the pods roll for that, which is no drift.
    let config_rollout = !new_spec
        && live_digest.is_some()
        && digest.is_some()
        && live_digest != digest
        && changes
            .iter()
            .any(|(kind, c)| *kind == ChildKind::Deployment.name() && *c == Change::Updated);
    if config_rollout {
        changes.retain(|(kind, _)| *kind != ChildKind::Deployment.name());
        let used = config_refs
            .iter()
            .filter(|r| {
                r.kind == render::config::ConfigKind::ConfigMap || ctx.config.follows_secrets()
            })
            .map(|r| format!("{} {}", r.kind.name(), r.name))
            .collect::<Vec<_>>()
            .join(", ");
        publish(
            ctx,
            &reference,
            EventType::Normal,
            "ConfigChanged",
            format!(
                "rolling the pods of Deployment {name}: the contents of the configuration they use changed ({used}; digest {} -> {})",
                live_digest.as_deref().unwrap_or_default(),
                digest.as_deref().unwrap_or_default()
            ),
        );
    }
    if !told_later {
        announce(ctx, &reference, &name, &changes);
    }
    let held_back = write_status(ctx, &status_api, &bundle, &status, &reference, &made_of).await?;

    // When to look again without a watch event (None: only on one).
    let again = match blocker {
        // Objects kubundle does not watch (a foreign object, a refusal that may depend on quota
        // or RBAC): look again soon. kubundle's own children's changes arrive through the watches.
        Some(Blocker::NameConflict { .. } | Blocker::Terminating { .. }) => Some(BLOCKED_RECHECK),
        // Forbidden, or denied by an admission policy: those may change without the AppBundle.
        Some(Blocker::WriteRefused { retry: true, .. }) => Some(Duration::from_secs(60)),
        // The object itself was refused: only a new spec can help, and it triggers a reconcile.
        Some(_) => None,
        // A rollout in progress: look at its pods once it stops making progress, and again while
        // it stays stuck (a crash loop or a pull back-off does not change the Deployment).
        None => match progress {
            pods::Progress::Moving(since) => {
                Some(pods::STUCK_AFTER.saturating_sub(since) + Duration::from_millis(500))
            }
            pods::Progress::Stuck => Some(pods::RECHECK),
            pods::Progress::Nothing => None,
        },
    };
    // Progress held back is written at the latest this soon (unless a new step comes first).
    Ok(
        match again
            .into_iter()
            .chain(held_back)
            .chain(history_retry)
            .chain(class_recheck)
            .chain(drain_recheck)
            .chain(settle_again)
            .min()
        {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        },
    )
}

/// Reads the Deployment `name` from the API server; true when the cache is behind it (a version
/// the API server had at an earlier look never arrived, see [`super::relist`]): then the fresh
/// object is cached and the Deployments' watch lists again. A failed read says nothing.
async fn deployment_cache_behind(ctx: &Context, ns: &str, name: &str) -> bool {
    let kind = ChildKind::Deployment;
    let Some(cached) = ctx.cache.get(kind, ns, name) else {
        return false;
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), ns, &kind.api_resource());
    let fresh = match api.get(name).await {
        Ok(fresh) => fresh,
        Err(e) => {
            debug!(error = %e, "cannot read the Deployment to check the cache");
            return false;
        }
    };
    let theirs = fresh.resource_version().unwrap_or_default();
    let behind = ctx.relists.behind(
        &format!("{ns}/{name}"),
        &cached.resource_version,
        &theirs,
        std::time::Instant::now(),
        crate::reconcile::cache::compare_versions,
    );
    if behind {
        warn!(
            cached = %cached.resource_version,
            api_server = %theirs,
            "kubundle's cached Deployment was behind the API server (its watch missed events): using the fresh one and listing Deployments again"
        );
        ctx.metrics
            .cache_stale
            .with_label_values(&[kind.plural()])
            .inc();
        ctx.cache.record(kind, &fresh);
        ctx.relists.request(kind.plural());
    }
    behind
}

/// The Gateway the HTTPRoute attaches to (for the URL's host, scheme and port, and to say when
/// it does not exist). A read kubundle may not make says nothing.
async fn read_gateway(ctx: &Context, bundle: &AppBundle) -> Option<status::http::GatewayLook> {
    let gateway = bundle.spec.http.as_ref()?.gateway.as_ref()?;
    let ns = gateway
        .namespace
        .clone()
        .or_else(|| bundle.namespace())
        .unwrap_or_default();
    let resource = kube::api::ApiResource {
        group: "gateway.networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "Gateway".into(),
        plural: "gateways".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &resource);
    match api.get_opt(&gateway.name).await {
        Ok(Some(found)) => Some(status::http::GatewayLook::Found(Box::new(found))),
        Ok(None) => Some(status::http::GatewayLook::Missing),
        Err(e) => {
            debug!(error = %e, "cannot read the Gateway");
            None
        }
    }
}

/// While Ready waits for the Ingress's address: the named IngressClass, when it does not exist
/// (one GET). GKE's classes are not IngressClass objects, and a read kubundle may not make says
/// nothing.
async fn missing_ingress_class(
    ctx: &Context,
    bundle: &AppBundle,
    status: &crate::api::AppBundleStatus,
) -> Option<String> {
    let waiting = find_condition(&status.conditions, READY)
        .is_some_and(|c| c.reason == reason::WAITING_FOR_INGRESS);
    let class = bundle
        .spec
        .http
        .as_ref()?
        .ingress
        .as_ref()?
        .class_name
        .as_deref()?;
    if !waiting || render::GKE_INGRESS_CLASSES.contains(&class) {
        return None;
    }
    let api: Api<k8s_openapi::api::networking::v1::IngressClass> = Api::all(ctx.client.clone());
    match api.get_metadata_opt(class).await {
        Ok(None) => Some(format!(
            "IngressClass {class} does not exist in this cluster, so no ingress controller will give the Ingress an address \
             (kubectl get ingressclass lists the classes; on GKE use gce or gce-internal)"
        )),
        Ok(Some(_)) => None,
        Err(e) => {
            debug!(error = %e, "cannot read the IngressClass");
            None
        }
    }
}

/// The problem of the AppBundle's newest pods, if any. A failed read (kubundle may lack the
/// permission to list pods) only loses the diagnosis: the status still says the rollout is stuck.
async fn read_pod_problem(ctx: &Context, ns: &str, name: &str) -> Option<pods::PodProblem> {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let params = ListParams::default().labels(&render::selector_string(name));
    match api.list(&params).await {
        Ok(list) => pods::diagnose(&list.items),
        Err(e) => {
            debug!(error = %e, "cannot read the pods to say why the rollout is stuck");
            None
        }
    }
}

/// Reports an AppBundle that cannot get as far as its children (its spec cannot be read or
/// rendered); only a new spec can change that.
async fn report_blocked(
    ctx: &Context,
    api: &Api<CachedBundle>,
    bundle: &AppBundle,
    blocker: Blocker,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    now: &Time,
) -> Result<Action> {
    let status = status::compute(
        bundle,
        &Observed::default(),
        Some(&blocker),
        &ctx.settings.cluster_domain,
        now,
    );
    let held_back = write_status(ctx, api, bundle, &status, reference, "").await?;
    Ok(match held_back {
        Some(wait) => Action::requeue(wait),
        None => Action::await_change(),
    })
}

/// One Event for what this reconcile changed, naming each child.
fn announce(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    name: &str,
    changes: &[(&str, Change)],
) {
    let notes: Vec<String> = changes
        .iter()
        .filter_map(|(kind, change)| match change {
            Change::None => None,
            Change::Created => Some(format!("created {kind} {name}")),
            Change::Adopted => Some(format!(
                "adopted {kind} {name} (made by kubundle earlier, left without an owner)"
            )),
            Change::Updated => Some(format!(
                "updated {kind} {name} (it differed from the AppBundle)"
            )),
            Change::Deleted => Some(format!(
                "deleted {kind} {name} (the AppBundle no longer asks for it)"
            )),
        })
        .collect();
    if notes.is_empty() {
        return;
    }
    let has = |c: Change| changes.iter().any(|(_, x)| *x == c);
    let reason = if has(Change::Updated) {
        "Updated"
    } else if has(Change::Deleted) && !has(Change::Created) && !has(Change::Adopted) {
        "Deleted"
    } else if has(Change::Adopted) {
        "Adopted"
    } else {
        "Created"
    };
    publish(ctx, reference, EventType::Normal, reason, notes.join("; "));
}

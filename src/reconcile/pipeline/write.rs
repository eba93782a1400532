//! The write step: the children change as a unit. While one is blocked (a foreign object of its
//! name, a refusal), no other is created or changed. So when an existing child is to change along
//! with another write, every write is first tried as a server-side dry run (the API server's own
//! admission, quota and name checks, nothing stored); a refusal there leaves everything as it is.
//! A new AppBundle's children (creates only) need no dry run: the Deployment comes last, once
//! every other child was created, so no pods run without their Service. The writes then go in
//! that order too: the other children, the Deployment, and only then the deletion of children
//! the spec no longer asks for (the old way in stays until the new one routes: children/routing.rs).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::Ingress;
use kube::Api;
use kube::runtime::controller::Action;
use tracing::debug;

use super::announce;
use super::read::Children;
use super::run::{Run, Step, never_reported};
use crate::api::AppBundle;
use crate::error::Result;
use crate::reconcile::children::{self, Change, Child, Writing, is_definite_refusal};
use crate::reconcile::children::{handover, routing};
use crate::reconcile::observe::cached_bundle::CachedBundle;
use crate::render::{self, ChildKind};
use crate::status::Blocker;

/// What the write step did.
#[derive(Default)]
pub(super) struct Written {
    /// Each child's change: its kind, its name (the AppBundle's, or the canary's) and what
    /// happened (the children the spec asks for, then the stale ones).
    pub changes: Vec<Changed>,
    /// Stale routing children kept until their replacement routes.
    pub held: Vec<ChildKind>,
    /// When a stale routing child whose replacement routes has drained.
    pub drain_recheck: Option<Duration>,
}

/// A child's kind, name and change.
pub(super) type Changed = (&'static str, String, Change);

/// One write's outcome.
type Outcome = Result<Change, kube::Error>;

pub(super) async fn as_a_unit(
    run: &Run<'_>,
    bundle: &AppBundle,
    children: &mut Children,
) -> Step<Written> {
    let mut written = Written::default();
    if children.blocker.is_some() {
        return Ok(ControlFlow::Continue(written));
    }
    let ctx = run.ctx;
    let needed = children
        .set
        .iter()
        .map(|c| c.needed(&ctx.settled))
        .collect::<Result<Vec<_>>>()?;
    if needed.contains(&Change::Created)
        && !never_reported(bundle)
        && !still_wanted(run, &children.uid, &children.name).await?
    {
        return Ok(ControlFlow::Break(Action::await_change()));
    }
    let writing = Writing {
        metrics: &ctx.metrics,
        settled: &ctx.settled,
        cache: &ctx.cache,
        owner_uid: &children.uid,
        bundle_name: &children.name,
    };
    let (results, pruned) = match dry_run(&mut children.set, &needed, &writing).await {
        // The refusal is told as the real write's would be (below); nothing was written.
        Some(refused) => (refused, unchanged(children.stale.len())),
        None => {
            let results = apply_in_order(bundle, &mut children.set, &needed, &writing).await?;
            let pruned = if all_ok(&results, &children.set) {
                prune_stale(run, bundle, children, &mut written).await
            } else {
                unchanged(children.stale.len())
            };
            (results, pruned)
        }
    };
    let sorted = sort_outcomes(bundle, children, results, pruned);
    written.changes = sorted.changes;
    if sorted.namespace_terminating {
        // The namespace is being deleted, the AppBundle with it: the namespace controller
        // deletes the children first, and nothing may be created there any more. Nothing to
        // report either: the AppBundle is about to go.
        debug!("the namespace is being deleted; nothing to do");
        return Ok(ControlFlow::Break(Action::await_change()));
    }
    if let Some(e) = sorted.transient {
        // Retried with backoff; the status stays as it was (nothing definite to say), and
        // what did change is told now.
        announce::announce(ctx, &run.reference, &written.changes);
        return Err(e.into());
    }
    Ok(ControlFlow::Continue(written))
}

/// A child to create for an AppBundle seen before (it was deleted since): whether the AppBundle
/// is still wanted, which the cache may not show yet: not being deleted this very moment (a
/// create then would only hand the garbage collector more to delete), and not in a namespace
/// being deleted (the namespace controller deletes the children before the AppBundle, and the
/// create would be refused).
async fn still_wanted(run: &Run<'_>, uid: &str, name: &str) -> Result<bool> {
    let fresh = Api::<CachedBundle>::namespaced(run.ctx.client.clone(), &run.ns)
        .get_metadata_opt(name)
        .await?;
    if fresh.is_none_or(|m| {
        m.metadata.deletion_timestamp.is_some() || m.metadata.uid.as_deref() != Some(uid)
    }) {
        debug!("deleted meanwhile; nothing to do");
        return Ok(false);
    }
    if run
        .ctx
        .namespaces
        .terminating(&run.ctx.client, &run.ns)
        .await
    {
        debug!("the namespace is being deleted; nothing to do");
        return Ok(false);
    }
    Ok(true)
}

/// When an existing child is to change along with another write: every write tried as a
/// server-side dry run. The outcomes when one was refused (nothing is then written), else None.
async fn dry_run(
    set: &mut [Child],
    needed: &[Change],
    writing: &Writing<'_>,
) -> Option<Vec<Outcome>> {
    let writes = needed.iter().filter(|n| **n != Change::None).count();
    let changes_existing = needed
        .iter()
        .any(|n| matches!(n, Change::Updated | Change::Adopted));
    if writes < 2 || !changes_existing {
        return None;
    }
    let tried = futures::future::join_all(
        set.iter_mut()
            .zip(needed)
            .map(|(c, n)| c.dry_run(*n, writing)),
    )
    .await;
    let passed = tried.iter().all(Result::is_ok) && set.iter().all(|c| c.blocker().is_none());
    (!passed).then(|| {
        tried
            .into_iter()
            .map(|r| r.map(|()| Change::None))
            .collect()
    })
}

/// `n` outcomes of no write.
fn unchanged(n: usize) -> Vec<Outcome> {
    (0..n).map(|_| Ok(Change::None)).collect()
}

/// Whether every write went through and no child turned out blocked.
fn all_ok(results: &[Outcome], set: &[Child]) -> bool {
    results.iter().all(Result::is_ok) && set.iter().all(|c| c.blocker().is_none())
}

/// The other children first, each request to completion whatever the others' fate; then, if
/// they all went through, the Deployment.
async fn apply_in_order(
    bundle: &AppBundle,
    set: &mut [Child],
    needed: &[Change],
    writing: &Writing<'_>,
) -> Result<Vec<Outcome>> {
    let mut results = unchanged(set.len());
    let others = futures::future::join_all(
        set.iter_mut()
            .zip(needed)
            .enumerate()
            .filter(|(_, (c, _))| c.kind != ChildKind::Deployment)
            .map(|(i, (c, n))| async move { (i, c.apply(*n, writing).await) }),
    )
    .await;
    for (i, result) in others {
        results[i] = result;
    }
    if !all_ok(&results, set) {
        return Ok(results);
    }
    for (i, (c, n)) in set.iter_mut().zip(needed).enumerate() {
        if c.kind == ChildKind::Deployment {
            // The replicas pass to the autoscaler, or to nobody, without a dip (children/handover.rs);
            // the canary's are always kubundle's.
            if c.desired.metadata.name.as_deref() == Some(writing.bundle_name) {
                handover::release_replicas(bundle, c, writing.metrics).await?;
            }
            results[i] = c.apply(*n, writing).await;
        }
    }
    Ok(results)
}

/// Deletes the children the spec no longer asks for, but a routing child whose replacement does
/// not route yet (held) or has only just begun to (draining).
async fn prune_stale(
    run: &Run<'_>,
    bundle: &AppBundle,
    children: &Children,
    written: &mut Written,
) -> Vec<Outcome> {
    let ctx = run.ctx;
    let route = children.live(ChildKind::HttpRoute).and_then(Child::live);
    let ingress: Option<Ingress> = children.live(ChildKind::Ingress).and_then(Child::live_as);
    let at = Instant::now();
    futures::future::join_all(children.stale.iter().map(|st| {
        // A canary's children (not of the AppBundle's name) stay until the route leaves them,
        // each drained on its own.
        let own = st.name == children.name;
        let (ready, key) = if own {
            let ready = routing::replacement_ready(st.kind, bundle, route, ingress.as_ref());
            (ready, children.uid.clone())
        } else {
            let ready = Some(routing::canary_unrouted(bundle, route));
            (
                ready,
                format!("{}/{}/{}", children.uid, st.kind.name(), st.name),
            )
        };
        let verdict = ready.map(|ready| ctx.handovers.verdict(&key, ready, at));
        match verdict {
            Some(routing::Verdict::Hold) if own => written.held.push(st.kind),
            Some(routing::Verdict::Drain(left)) => {
                let after = left + Duration::from_millis(100);
                written.drain_recheck = Some(written.drain_recheck.map_or(after, |d| d.min(after)));
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
                children::prune(&ctx.client, &run.ns, st, &ctx.metrics, &ctx.cache).await
            }
        }
    }))
    .await
}

/// The write outcomes, sorted: the changes made, a definite refusal (becomes the blocker), a
/// namespace being deleted, or a transient error to retry.
struct Sorted {
    changes: Vec<Changed>,
    transient: Option<kube::Error>,
    namespace_terminating: bool,
}

fn sort_outcomes(
    bundle: &AppBundle,
    children: &mut Children,
    results: Vec<Outcome>,
    pruned: Vec<Outcome>,
) -> Sorted {
    let mut sorted = Sorted {
        changes: Vec::new(),
        transient: None,
        namespace_terminating: false,
    };
    let kinds: Vec<(ChildKind, String)> = children
        .set
        .iter()
        .map(|c| (c.kind, c.desired.metadata.name.clone().unwrap_or_default()))
        .chain(children.stale.iter().map(|st| (st.kind, st.name.clone())))
        .collect();
    for ((kind, name), result) in kinds.into_iter().zip(results.into_iter().chain(pruned)) {
        match result {
            Ok(change) => sorted.changes.push((kind.name(), name, change)),
            Err(e) if children::is_namespace_terminating(&e) => sorted.namespace_terminating = true,
            Err(e) if is_definite_refusal(&e) => {
                let retry = children::refusal_may_lift(&e);
                let message = match e {
                    kube::Error::Api(s) => s.message,
                    other => other.to_string(),
                };
                // `spec.template.spec.initContainers[0]` is `spec.sidecars[0]` to the user.
                let message = render::paths::in_bundle_terms(&message, &bundle.spec);
                children.blocker.get_or_insert(Blocker::WriteRefused {
                    kind: kind.name(),
                    message,
                    retry,
                });
            }
            Err(e) => sorted.transient = Some(e),
        }
    }
    // A create refused because an object of the child's name exists that kubundle must not
    // touch (its classification changed on reading it).
    if children.blocker.is_none() {
        children.blocker = children.set.iter().find_map(Child::blocker);
    }
    sorted
}

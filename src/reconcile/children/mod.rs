//! The children of an AppBundle as a set, whatever their kind: read each, decide whether kubundle
//! may write it, apply the ones that differ from their rendering, delete the ones the spec no
//! longer asks for.
//!
//! Reading comes first for every child, and nothing is written unless every child may be: an
//! object of a child's name that kubundle must not touch blocks the whole AppBundle (no pods
//! without their Service, no Service without its pods). Then the children that need it are
//! applied concurrently, each to completion: one child's refusal never cancels another's
//! request halfway.

pub mod drift;
pub mod handover;
pub mod routing;

use std::collections::HashMap;
use std::sync::Mutex;

use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::reconcile::observe::children_cache::{
    Cached, ChildCache, MUST_NOT_EXIST, kubundle_owns_replicas,
};
use crate::render::{ChildKind, FIELD_MANAGER, Rendered, controlled_by, labels};
use crate::status::Blocker;
use drift::covers;

/// Annotation on each child: a hash of kubundle's rendering of it. With the rendered fields
/// themselves, it tells whether the child is up to date without writing to it.
pub const RENDERED_HASH: &str = "kubundle.dev/rendered-hash";

/// What happened to a child in this reconcile.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Change {
    None,
    Created,
    /// kubundle made it, lost track of it (`kubectl delete --cascade=orphan` of the AppBundle)
    /// and now controls it again.
    Adopted,
    Updated,
    /// The spec no longer asks for it: deleted.
    Deleted,
}

/// What reading a child found.
#[derive(Debug)]
pub enum Found {
    /// No object of the child's name.
    Missing,
    /// The child, controlled by this AppBundle.
    Ours(DynamicObject),
    /// An object kubundle made for an AppBundle of this name (its managed-by and instance
    /// labels) that has no controller: an orphan, adopted by applying the rendering.
    Orphan(DynamicObject),
    /// An object of the child's name that is being deleted: wait for it to go.
    Terminating,
    /// An object of the child's name that kubundle must not touch.
    Conflict(String),
}

/// One child of an AppBundle: its rendering and what is live.
pub struct Child {
    pub kind: ChildKind,
    pub api: Api<DynamicObject>,
    pub desired: DynamicObject,
    pub hash: String,
    pub found: Found,
    /// kubundle's own apply owns the live object's `spec.replicas` (for the autoscaler handover).
    pub owns_replicas: bool,
}

/// The API of a kind of child in a namespace.
pub fn api(client: &Client, ns: &str, kind: ChildKind) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kind.api_resource())
}

/// Most children [`Settled`] remembers (a few hundred bytes each).
const SETTLED_MAX: usize = 4096;

/// Objects whose last apply was a no-op although the comparison said they differ (a value the
/// API server stores in a form [`covers`] does not know): by child, the rendering hash and the
/// resourceVersion at that time. While both stay the same, the child is up to date: this bounds
/// any normalisation kubundle does not model to one no-op apply per change of the object.
#[derive(Default)]
pub struct Settled(Mutex<HashMap<String, (String, String)>>);

impl Settled {
    fn key(kind: &str, ns: &str, name: &str) -> String {
        format!("{kind}/{ns}/{name}")
    }
    fn is_settled(&self, key: &str, hash: &str, rv: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .get(key)
            .is_some_and(|(h, r)| h == hash && r == rv)
    }
    fn record(&self, key: String, hash: String, rv: String) {
        let mut memo = self.0.lock().unwrap();
        // Entries of deleted AppBundles are not removed one by one: the memo is bounded instead.
        // Forgetting costs at most one no-op apply per child.
        if memo.len() >= SETTLED_MAX && !memo.contains_key(&key) {
            memo.clear();
        }
        memo.insert(key, (hash, rv));
    }
    fn forget(&self, key: &str) {
        self.0.lock().unwrap().remove(key);
    }
}

/// A rendered child with the live object of its name as the cache holds it (no request). The
/// cache holds only objects with kubundle's label: a child missing from it is created with a
/// precondition that it does not exist ([`Child::apply`]).
pub fn cached(
    client: &Client,
    ns: &str,
    rendered: Rendered,
    cached: Option<&Cached>,
    owner_uid: &str,
    bundle_name: &str,
) -> Result<Child> {
    let mut child = prepare(client, ns, rendered)?;
    child.owns_replicas = cached.is_some_and(|c| c.owns_replicas);
    child.found = classify(
        child.kind,
        cached.map(Cached::object),
        owner_uid,
        bundle_name,
    );
    Ok(child)
}

/// A rendered child with the live object of its name read from the API server (a GET): where
/// the cache cannot say (a kind whose watch has not listed yet, a name a foreign object held).
pub async fn read(
    client: &Client,
    ns: &str,
    rendered: Rendered,
    owner_uid: &str,
    bundle_name: &str,
) -> Result<Child> {
    let mut child = prepare(client, ns, rendered)?;
    child.refresh(owner_uid, bundle_name).await?;
    Ok(child)
}

fn prepare(client: &Client, ns: &str, rendered: Rendered) -> Result<Child> {
    let Rendered {
        kind,
        object: mut desired,
    } = rendered;
    let hash = rendering_hash(&desired, kind.name())?;
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(RENDERED_HASH.into(), hash.clone());
    Ok(Child {
        kind,
        api: api(client, ns, kind),
        desired,
        hash,
        found: Found::Missing,
        owns_replicas: false,
    })
}

fn classify(
    kind: ChildKind,
    live: Option<DynamicObject>,
    owner_uid: &str,
    bundle_name: &str,
) -> Found {
    match live {
        None => Found::Missing,
        Some(live) if live.meta().deletion_timestamp.is_some() => Found::Terminating,
        Some(live) if controlled_by(live.meta(), owner_uid) => Found::Ours(live),
        Some(live) if is_orphan(live.meta(), bundle_name) => Found::Orphan(live),
        Some(live) => {
            let name = live.meta().name.clone().unwrap_or_default();
            Found::Conflict(conflict_message(kind.name(), &name, live.meta()))
        }
    }
}

fn conflict_message(kind: &str, name: &str, meta: &kube::api::ObjectMeta) -> String {
    let ns = meta.namespace.clone().unwrap_or_default();
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(o) => format!(
            "{kind} {ns}/{name} already exists and is controlled by {} {}; kubundle leaves it \
             untouched: rename the AppBundle, or delete the {kind} (or its controller)",
            o.kind, o.name
        ),
        None => format!(
            "{kind} {ns}/{name} already exists and was not made by kubundle for this AppBundle; \
             kubundle leaves it untouched: rename the AppBundle, or delete or rename the {kind}"
        ),
    }
}

/// kubundle made the object for an AppBundle of this name, and nothing controls it now.
fn is_orphan(meta: &kube::api::ObjectMeta, bundle_name: &str) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let uncontrolled = !meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    uncontrolled
        && label(labels::MANAGED_BY) == Some(labels::MANAGER)
        && label(labels::INSTANCE) == Some(bundle_name)
        && label(labels::NAME) == Some(bundle_name)
}

impl Child {
    /// The blocker this child puts on the whole AppBundle, if any.
    pub fn blocker(&self) -> Option<Blocker> {
        let name = self.desired.meta().name.clone().unwrap_or_default();
        match &self.found {
            Found::Conflict(message) => Some(Blocker::NameConflict {
                kind: self.kind.name(),
                name,
                message: message.clone(),
            }),
            Found::Terminating => Some(Blocker::Terminating {
                kind: self.kind.name(),
                name,
            }),
            _ => None,
        }
    }

    /// Whether the child must be written, and how that will count.
    pub fn needed(&self, settled: &Settled) -> Result<Change> {
        Ok(match &self.found {
            Found::Missing => Change::Created,
            Found::Orphan(_) => Change::Adopted,
            Found::Ours(live) if self.up_to_date(live, settled)? => Change::None,
            Found::Ours(_) => Change::Updated,
            Found::Terminating | Found::Conflict(_) => Change::None,
        })
    }

    fn settled_key(&self) -> String {
        let m = self.desired.meta();
        Settled::key(
            self.kind.name(),
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
        )
    }

    /// A live child is up to date when it carries the hash of the current rendering (so no field
    /// was dropped from the rendering since) and holds every rendered value as the API server
    /// stores it (so nobody changed one; see [`covers`]).
    fn up_to_date(&self, live: &DynamicObject, settled: &Settled) -> Result<bool> {
        let annotated = live
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(RENDERED_HASH))
            == Some(&self.hash);
        if !annotated {
            return Ok(false);
        }
        let rv = live.meta().resource_version.clone().unwrap_or_default();
        if settled.is_settled(&self.settled_key(), &self.hash, &rv) {
            return Ok(true);
        }
        let what = self.kind.name();
        let live =
            serde_json::to_value(live).map_err(|source| Error::Serialize { what, source })?;
        let desired = serde_json::to_value(&self.desired)
            .map_err(|source| Error::Serialize { what, source })?;
        Ok(covers(&live, &desired))
    }

    /// The live object after this reconcile (None while missing or not ours).
    pub fn live(&self) -> Option<&DynamicObject> {
        match &self.found {
            Found::Ours(live) | Found::Orphan(live) => Some(live),
            _ => None,
        }
    }

    /// The live object as its Kubernetes type (for readiness rules).
    pub fn live_as<K: DeserializeOwned>(&self) -> Option<K> {
        let live = self.live()?;
        serde_json::to_value(live)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
    }

    /// Reads the live object of the child's name from the API server and classifies it again.
    pub async fn refresh(&mut self, owner_uid: &str, bundle_name: &str) -> Result<(), kube::Error> {
        let name = self.desired.meta().name.clone().unwrap_or_default();
        let live = self.api.get_opt(&name).await?;
        self.owns_replicas = live.as_ref().is_some_and(kubundle_owns_replicas);
        self.found = classify(self.kind, live, owner_uid, bundle_name);
        Ok(())
    }

    /// Applies the rendering when `change` says it is needed (server-side apply, field manager
    /// `kubundle`, forced: fields kubundle sets are its own, whoever last edited them; fields it
    /// does not set stay with their owners). Returns what really changed: an apply the API server
    /// found to be a no-op (same resourceVersion) changed nothing, and is remembered in `settled`.
    ///
    /// A child to create is applied with the precondition that no object of its name exists
    /// ([`MUST_NOT_EXIST`]). If one does (an object without kubundle's label, which the cache does
    /// not hold, or one the cache has not seen yet), the child is read and classified again: an
    /// object kubundle must not touch is left as it is, and [`Child::blocker`] then says so.
    pub async fn apply(
        &mut self,
        change: Change,
        ctx: &Writing<'_>,
    ) -> Result<Change, kube::Error> {
        let name = self.desired.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let change = match change {
            Change::None => return Ok(Change::None),
            Change::Created => {
                let mut body = self.desired.clone();
                body.metadata.resource_version = Some(MUST_NOT_EXIST.into());
                ctx.metrics.write(self.kind.name(), "apply");
                match self.api.patch(&name, &params, &Patch::Apply(&body)).await {
                    Ok(created) => {
                        info!(kind = self.kind.name(), child = name, change = ?Change::Created, "applied");
                        ctx.cache.record(self.kind, &created);
                        ctx.settled.forget(&self.settled_key());
                        self.owns_replicas = kubundle_owns_replicas(&created);
                        self.found = Found::Ours(created);
                        return Ok(Change::Created);
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        self.refresh(ctx.owner_uid, ctx.bundle_name).await?;
                        match self.needed(ctx.settled) {
                            // Gone again meanwhile: try again later.
                            Ok(Change::Created) => return Err(kube::Error::Api(s)),
                            Ok(change) => change,
                            Err(Error::Serialize { source, .. }) => {
                                return Err(kube::Error::SerdeError(source));
                            }
                            Err(Error::Api(e)) => return Err(e),
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            other => other,
        };
        if change == Change::None {
            return Ok(Change::None);
        }
        let before = self.live().and_then(|l| l.meta().resource_version.clone());
        ctx.metrics.write(self.kind.name(), "apply");
        let applied = self
            .api
            .patch(&name, &params, &Patch::Apply(&self.desired))
            .await?;
        let after = applied.meta().resource_version.clone();
        let key = self.settled_key();
        let change = if change == Change::Updated && before.is_some() && before == after {
            ctx.settled
                .record(key, self.hash.clone(), after.unwrap_or_default());
            Change::None
        } else {
            ctx.settled.forget(&key);
            info!(kind = self.kind.name(), child = name, ?change, "applied");
            change
        };
        ctx.cache.record(self.kind, &applied);
        self.owns_replicas = kubundle_owns_replicas(&applied);
        self.found = Found::Ours(applied);
        Ok(change)
    }
}

impl Child {
    /// Tries the write `change` asks for as a server-side dry run: the API server admits (or
    /// refuses) it as it would the real one, and stores nothing. A create that finds an object of
    /// the child's name reads and classifies it, as [`Child::apply`] does, so that
    /// [`Child::blocker`] says whose it is.
    pub async fn dry_run(&mut self, change: Change, ctx: &Writing<'_>) -> Result<(), kube::Error> {
        let name = self.desired.meta().name.clone().unwrap_or_default();
        let params = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        let mut body = self.desired.clone();
        match change {
            Change::None | Change::Deleted => return Ok(()),
            Change::Created => body.metadata.resource_version = Some(MUST_NOT_EXIST.into()),
            Change::Updated | Change::Adopted => {}
        }
        ctx.metrics.write(self.kind.name(), "dry_run");
        match self.api.patch(&name, &params, &Patch::Apply(&body)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && change == Change::Created => {
                self.refresh(ctx.owner_uid, ctx.bundle_name).await?;
                match self.needed(ctx.settled) {
                    Ok(Change::Created) => Err(kube::Error::Api(s)),
                    _ if self.blocker().is_some() => Ok(()),
                    // Made meanwhile by kubundle itself: the next reconcile sees it.
                    _ => Err(kube::Error::Api(s)),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// What applying a child needs besides the child.
pub struct Writing<'a> {
    pub metrics: &'a Metrics,
    pub settled: &'a Settled,
    pub cache: &'a ChildCache,
    pub owner_uid: &'a str,
    pub bundle_name: &'a str,
}

/// A child the spec no longer asks for, found in the watch cache: kubundle made it for this
/// AppBundle (its labels) and the AppBundle controls it (its UID).
#[derive(Clone, Debug, PartialEq)]
pub struct Stale {
    pub kind: ChildKind,
    pub name: String,
    pub uid: String,
}

/// Whether an object seen in a child watch is a stale child of the AppBundle `bundle_name`
/// (UID `owner_uid`): controlled by it and labelled by kubundle for it.
pub fn is_stale_child(meta: &kube::api::ObjectMeta, owner_uid: &str, bundle_name: &str) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    controlled_by(meta, owner_uid)
        && meta.deletion_timestamp.is_none()
        && label(labels::MANAGED_BY) == Some(labels::MANAGER)
        && label(labels::INSTANCE) == Some(bundle_name)
}

/// Deletes a stale child: exactly the object seen (a UID precondition), so that an object of
/// the same name made since by someone else is never touched. Gone already counts as deleted.
pub async fn prune(
    client: &Client,
    ns: &str,
    stale: &Stale,
    metrics: &Metrics,
    cache: &ChildCache,
) -> Result<Change, kube::Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(stale.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    metrics.write(stale.kind.name(), "delete");
    let deleted = api(client, ns, stale.kind)
        .delete(&stale.name, &params)
        .await;
    // Deleted, gone already, or no longer the object seen (its UID): not a stale child any more.
    if deleted.is_ok()
        || matches!(&deleted, Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409))
    {
        cache.forget(stale.kind, ns, &stale.name, &stale.uid);
    }
    match deleted {
        Ok(_) => {
            info!(
                kind = stale.kind.name(),
                child = stale.name,
                "deleted: no longer in the spec"
            );
            Ok(Change::Deleted)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Change::None),
        Err(e) => Err(e),
    }
}

fn rendering_hash<K: Serialize>(desired: &K, what: &'static str) -> Result<String> {
    let bytes = serde_json::to_vec(desired).map_err(|source| Error::Serialize { what, source })?;
    Ok(crate::hash::fnv_hex(&bytes))
}

/// Whether the API server's refusal is definite: the same request will be refused again until
/// the AppBundle (or something else a person controls) changes. Transient failures (the server
/// unreachable, overloaded, timing out, a conflict) are retried with backoff instead.
pub fn is_definite_refusal(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => match s.code {
            408 | 409 | 429 => false,
            400..=499 => true,
            // Server-side apply reports an object it cannot merge (duplicate list keys, values
            // that do not parse) as an internal error; those are about the object, not the server.
            500 => is_invalid_object_message(&s.message),
            _ => false,
        },
        _ => false,
    }
}

/// A refusal that may lift without the AppBundle changing: RBAC (403), or a validating admission
/// policy or webhook (422 or 403 in the admission's words), which their owners may change. The API
/// server's own validation of the object (422 otherwise) only a new spec can answer.
pub fn refusal_may_lift(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 403
                || (s.code == 422
                    && ["ValidatingAdmissionPolicy", "admission webhook"]
                        .iter()
                        .any(|m| s.message.contains(m)))
        }
        _ => false,
    }
}

/// The API server refused to create an object because its namespace is being deleted.
pub fn is_namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

fn is_invalid_object_message(message: &str) -> bool {
    [
        "failed to create typed patch object",
        "failed to create typed live object",
        "duplicate entries for key",
        "quantities must match the regular expression",
        "unable to parse quantity",
        "cannot convert",
    ]
    .iter()
    .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn the_rendered_hash_is_pinned() {
        // FNV-1a over the rendering's JSON: the same across kubundle versions and toolchains, so
        // an upgrade does not see every child as changed.
        let hash = rendering_hash(&serde_json::json!({"a": 1}), "test").unwrap();
        assert_eq!(hash, "9c3e82dd6fcae8b1");
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure(message, "").with_code(code)))
    }

    #[test]
    fn refusals_are_told_from_transient_failures() {
        assert!(is_definite_refusal(&api_error(422, "invalid")));
        assert!(is_definite_refusal(&api_error(403, "forbidden")));
        assert!(is_definite_refusal(&api_error(
            500,
            "failed to create typed patch object (x/y; apps/v1, Kind=Deployment): .spec.template.spec.containers[name=\"y\"].env: duplicate entries for key [name=\"A\"]"
        )));
        assert!(!is_definite_refusal(&api_error(
            500,
            "etcdserver: request timed out"
        )));
        assert!(!is_definite_refusal(&api_error(429, "too many requests")));
        assert!(!is_definite_refusal(&api_error(409, "conflict")));
        assert!(!is_definite_refusal(&api_error(503, "unavailable")));
        assert!(!is_definite_refusal(&api_error(504, "timeout")));
    }

    #[test]
    fn a_terminating_namespace_is_told_from_other_refusals() {
        let mut status = Status::failure("forbidden", "Forbidden").with_code(403);
        assert!(!is_namespace_terminating(&kube::Error::Api(Box::new(
            status.clone()
        ))));
        status.details = Some(kube::core::response::StatusDetails {
            causes: vec![kube::core::response::StatusCause {
                reason: "NamespaceTerminating".into(),
                message: "namespace x is being terminated".into(),
                field: "metadata.namespace".into(),
            }],
            name: "web".into(),
            group: "apps".into(),
            kind: "deployments".into(),
            uid: String::new(),
            retry_after_seconds: 0,
        });
        assert!(is_namespace_terminating(&kube::Error::Api(Box::new(
            status
        ))));
    }

    #[test]
    fn settled_remembers_a_hash_and_resource_version_and_is_bounded() {
        let memo = Settled::default();
        memo.record("Deployment/ns/a".into(), "h1".into(), "10".into());
        assert!(memo.is_settled("Deployment/ns/a", "h1", "10"));
        assert!(
            !memo.is_settled("Deployment/ns/a", "h1", "11"),
            "the object changed since"
        );
        assert!(
            !memo.is_settled("Deployment/ns/a", "h2", "10"),
            "the rendering changed since"
        );
        memo.forget("Deployment/ns/a");
        assert!(!memo.is_settled("Deployment/ns/a", "h1", "10"));
        for i in 0..SETTLED_MAX + 10 {
            memo.record(format!("Deployment/ns/{i}"), "h".into(), "1".into());
        }
        assert!(memo.0.lock().unwrap().len() <= SETTLED_MAX);
    }

    #[test]
    fn orphans_are_kubundles_own_uncontrolled_objects() {
        let meta = |labels: &[(&str, &str)], controlled: bool| kube::api::ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            owner_references: controlled.then(|| {
                vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        controller: Some(true),
                        uid: "u".into(),
                        ..Default::default()
                    },
                ]
            }),
            ..Default::default()
        };
        let ours = [
            (labels::MANAGED_BY, "kubundle"),
            (labels::INSTANCE, "web"),
            (labels::NAME, "web"),
        ];
        assert!(is_orphan(&meta(&ours, false), "web"));
        assert!(!is_orphan(&meta(&ours, true), "web"));
        assert!(!is_orphan(&meta(&ours, false), "api"));
        assert!(!is_orphan(&meta(&ours[1..], false), "web"));
    }
}

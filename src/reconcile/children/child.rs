//! One child of an AppBundle: its rendering, what is live of its name (from the cache or a GET),
//! and what kubundle may do with it (create, adopt, update, leave; or block the whole AppBundle).

use kube::api::DynamicObject;
use kube::{Api, Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::drift::covers;
use super::settled::Settled;
use crate::error::{Error, Result};
use crate::reconcile::observe::children_cache::{Cached, kubundle_owns_replicas};
use crate::render::{ChildKind, Rendered, controlled_by, labels};
use crate::status::Blocker;

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
        Some(live) if from_an_earlier_life(live.meta(), owner_uid, bundle_name) => {
            Found::Orphan(live)
        }
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
pub(super) fn is_orphan(meta: &kube::api::ObjectMeta, bundle_name: &str) -> bool {
    let uncontrolled = !meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    uncontrolled && made_for(meta, bundle_name)
}

/// kubundle made the object for an earlier AppBundle of this name, deleted since: its controller
/// is an AppBundle of this name with another UID, which cannot exist beside the one of
/// `owner_uid` (names are unique). The garbage collector deletes such a child in time, and rolls
/// its pods by doing so; an AppBundle made again under the same name (`kubectl delete` then
/// `apply`, a GitOps prune and re-sync) takes it over instead, as it does an orphan. (A garbage
/// collector that missed the deletion, after an API server restart, would otherwise leave it,
/// and the AppBundle blocked by it, for good.)
pub(super) fn from_an_earlier_life(
    meta: &kube::api::ObjectMeta,
    owner_uid: &str,
    bundle_name: &str,
) -> bool {
    let earlier = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true))
        .any(|o| {
            o.kind == crate::api::KIND
                && o.api_version.split('/').next() == Some(crate::api::GROUP)
                && o.name == bundle_name
                && o.uid != owner_uid
        });
    earlier && made_for(meta, bundle_name)
}

/// kubundle's labels for the AppBundle `bundle_name` (or its canary).
fn made_for(meta: &kube::api::ObjectMeta, bundle_name: &str) -> bool {
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .map(String::as_str)
    };
    let canary = crate::render::canary::canary_name(bundle_name);
    label(labels::MANAGED_BY) == Some(labels::MANAGER)
        && (label(labels::INSTANCE) == Some(bundle_name)
            || label(labels::INSTANCE) == Some(canary.as_str()))
        && label(labels::NAME) == Some(bundle_name)
}

pub fn rendering_hash<K: Serialize>(desired: &K, what: &'static str) -> Result<String> {
    let bytes = serde_json::to_vec(desired).map_err(|source| Error::Serialize { what, source })?;
    Ok(crate::hash::fnv_hex(&bytes))
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

    pub(super) fn settled_key(&self) -> String {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rendered_hash_is_pinned() {
        // FNV-1a over the rendering's JSON: the same across kubundle versions and toolchains, so
        // an upgrade does not see every child as changed.
        let hash = rendering_hash(&serde_json::json!({"a": 1}), "test").unwrap();
        assert_eq!(hash, "9c3e82dd6fcae8b1");
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
        // The canary's children are the AppBundle's too; an AppBundle named `web-canary` is not.
        let canary = [
            (labels::MANAGED_BY, "kubundle"),
            (labels::INSTANCE, "web-canary"),
            (labels::NAME, "web"),
        ];
        assert!(is_orphan(&meta(&canary, false), "web"));
        assert!(!is_orphan(&meta(&canary, false), "web-canary"));
    }

    #[test]
    fn a_child_of_a_deleted_appbundle_of_the_same_name_is_taken_over() {
        let meta = |kind: &str, name: &str, uid: &str, labelled: bool| kube::api::ObjectMeta {
            labels: labelled.then(|| {
                [
                    (labels::MANAGED_BY, "kubundle"),
                    (labels::INSTANCE, "web"),
                    (labels::NAME, "web"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
            }),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "kubundle.dev/v1alpha1".into(),
                    kind: kind.into(),
                    name: name.into(),
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        // The AppBundle `web` of UID "new": a child of the deleted `web` of UID "old" is its own.
        assert!(from_an_earlier_life(
            &meta("AppBundle", "web", "old", true),
            "new",
            "web"
        ));
        // Its own already, another kind's, another name's, or not made by kubundle: not taken.
        assert!(!from_an_earlier_life(
            &meta("AppBundle", "web", "new", true),
            "new",
            "web"
        ));
        assert!(!from_an_earlier_life(
            &meta("Rollout", "web", "old", true),
            "new",
            "web"
        ));
        assert!(!from_an_earlier_life(
            &meta("AppBundle", "api", "old", true),
            "new",
            "web"
        ));
        assert!(!from_an_earlier_life(
            &meta("AppBundle", "web", "old", false),
            "new",
            "web"
        ));
        let found = classify(
            ChildKind::Deployment,
            Some(DynamicObject {
                types: None,
                metadata: meta("AppBundle", "web", "old", true),
                data: serde_json::Value::Null,
            }),
            "new",
            "web",
        );
        assert!(matches!(found, Found::Orphan(_)));
    }
}

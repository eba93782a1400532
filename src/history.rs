//! Rollout history: each spec an AppBundle fully rolled out is recorded in a ControllerRevision
//! owned by the AppBundle, as StatefulSets and DaemonSets record theirs. Pure: what a revision
//! holds, its name and how revisions are read. The operator records them
//! (reconcile/revisions.rs); `kubectl kubundle history` and `rollback` read them (src/plugin).
//!
//! - A revision holds the spec without `replicas`: scaling (kubectl scale, an autoscaler) is no
//!   new revision, and a rollback leaves the number of pods alone, as `kubectl rollout undo`
//!   does for a Deployment.
//! - Its name is the AppBundle's name and a hash of that spec, so the same spec is the same
//!   revision: rolling back to it renumbers it as the newest (its number moves, as
//!   `kubectl rollout history` shows for Deployments) instead of recording a copy.
//! - Numbers count from 1 in the order the specs were rolled out.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::Value;

use crate::api::{AppBundle, AppBundleSpec};
use crate::hash::fnv_hex;
use crate::render::{RenderError, identity, selector_labels};

/// Revisions kept per AppBundle when `spec.revisionHistoryLimit` is not set.
pub const DEFAULT_LIMIT: i32 = 10;

/// Hex digits of the spec hash in a revision's name.
const HASH_DIGITS: usize = 10;

/// The part of a spec a revision records: all of it but `replicas`.
pub fn recorded_spec(spec: &AppBundleSpec) -> Value {
    let mut value = serde_json::to_value(spec).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("replicas");
    }
    value
}

/// The name of the revision of `spec` for the AppBundle `name`.
pub fn revision_name(name: &str, spec: &AppBundleSpec) -> String {
    let canonical = serde_json::to_vec(&canonical(&recorded_spec(spec))).unwrap_or_default();
    format!("{name}-{}", &fnv_hex(&canonical)[..HASH_DIGITS])
}

/// `value` with every object's keys in order (so that equal specs hash equally whatever order
/// their fields were written in).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The ControllerRevision recording `bundle`'s spec as revision `number`.
pub fn controller_revision(
    bundle: &AppBundle,
    number: i64,
) -> Result<ControllerRevision, RenderError> {
    let (name, namespace, owner) = identity(bundle)?;
    Ok(ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&name, &bundle.spec)),
            namespace: Some(namespace),
            labels: Some(selector_labels(&name)),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(
            serde_json::json!({"spec": recorded_spec(&bundle.spec)}),
        )),
        revision: number,
    })
}

/// One recorded revision, as `history` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    pub number: i64,
    pub name: String,
    /// When it was first recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Time>,
    /// The recorded spec (without replicas).
    pub spec: Value,
}

impl Revision {
    /// The image of the recorded spec.
    pub fn image(&self) -> &str {
        self.spec
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The revisions of the AppBundle `uid` among `list` (its controller must be that AppBundle),
/// oldest first.
pub fn revisions(list: Vec<ControllerRevision>, uid: &str) -> Vec<Revision> {
    let mut out: Vec<Revision> = list
        .into_iter()
        .filter(|r| crate::render::controlled_by(&r.metadata, uid))
        .map(|r| Revision {
            number: r.revision,
            name: r.metadata.name.unwrap_or_default(),
            recorded: r.metadata.creation_timestamp,
            spec: r
                .data
                .map(|d| d.0)
                .and_then(|mut d| d.get_mut("spec").map(Value::take))
                .unwrap_or(Value::Null),
        })
        .collect();
    out.sort_by_key(|r| r.number);
    out
}

/// The spec a rollback to `target` writes: the recorded spec with the replicas that run now (a
/// rollback does not scale). That is the current `replicas`, except across autoscaling: from an
/// autoscaled spec to one without autoscaling, `running` (the Deployment's count, the
/// autoscaler's last choice), since the current `replicas` was not in use and may be anything.
pub fn rollback_spec(current: &Value, target: &Revision, running: Option<i64>) -> Value {
    let mut spec = target.spec.clone();
    let autoscaled = |s: &Value| s.get("autoscaling").is_some_and(|a| !a.is_null());
    let replicas = if autoscaled(current) && !autoscaled(&spec) {
        running
            .map(Value::from)
            .or_else(|| current.get("replicas").cloned())
    } else {
        current.get("replicas").cloned()
    };
    if let (Some(map), Some(replicas)) = (spec.as_object_mut(), replicas) {
        map.insert("replicas".into(), replicas);
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle(spec: Value) -> AppBundle {
        let mut b = AppBundle::new("web", serde_json::from_value(spec).unwrap());
        b.metadata.namespace = Some("shop".into());
        b.metadata.uid = Some("u1".into());
        b
    }

    #[test]
    fn replicas_are_not_part_of_a_revision() {
        let a = bundle(json!({"image": "app:1", "replicas": 2, "ports": [{"containerPort": 80}]}));
        let b = bundle(json!({"image": "app:1", "replicas": 5, "ports": [{"containerPort": 80}]}));
        let c = bundle(json!({"image": "app:2", "replicas": 2, "ports": [{"containerPort": 80}]}));
        assert_eq!(revision_name("web", &a.spec), revision_name("web", &b.spec));
        assert_ne!(revision_name("web", &a.spec), revision_name("web", &c.spec));
        let name = revision_name("web", &a.spec);
        assert!(
            name.starts_with("web-") && name.len() == 4 + HASH_DIGITS,
            "{name}"
        );
        let rev = controller_revision(&a, 3).unwrap();
        assert_eq!(rev.revision, 3);
        assert_eq!(rev.metadata.name.as_deref(), Some(name.as_str()));
        assert!(rev.data.unwrap().0["spec"].get("replicas").is_none());
        let owner = &rev.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("u1", Some(true)));
    }

    #[test]
    fn revisions_are_read_oldest_first_and_a_rollback_keeps_the_replicas() {
        let a = bundle(json!({"image": "app:1", "ports": [{"containerPort": 80}]}));
        let c = bundle(json!({"image": "app:2", "ports": [{"containerPort": 80}]}));
        let mut foreign = controller_revision(&a, 9).unwrap();
        foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "other".into();
        let list = vec![
            controller_revision(&c, 2).unwrap(),
            controller_revision(&a, 1).unwrap(),
            foreign,
        ];
        let revs = revisions(list, "u1");
        let summary: Vec<(i64, &str)> = revs.iter().map(|r| (r.number, r.image())).collect();
        assert_eq!(summary, [(1, "app:1"), (2, "app:2")]);
        let back = rollback_spec(&json!({"image": "app:2", "replicas": 7}), &revs[0], Some(3));
        assert_eq!(back["image"], "app:1");
        assert_eq!(back["replicas"], 7);
        // Without replicas (the autoscaler set them, or nobody declared them): none written, so
        // the Deployment keeps what it runs.
        let back = rollback_spec(&json!({"image": "app:2"}), &revs[0], Some(3));
        assert!(back.get("replicas").is_none());
    }

    #[test]
    fn a_rollback_out_of_autoscaling_keeps_the_pods_that_run() {
        let a = bundle(json!({"image": "app:1", "replicas": 4, "ports": [{"containerPort": 80}]}));
        let revs = revisions(vec![controller_revision(&a, 1).unwrap()], "u1");
        // The spec while autoscaled still holds a replicas nobody uses (an old CRD defaulted it
        // to 1): the rollback writes what runs, 5, not 1.
        let autoscaled = json!({"image": "app:2", "replicas": 1,
                                "autoscaling": {"minReplicas": 2, "maxReplicas": 6}});
        let back = rollback_spec(&autoscaled, &revs[0], Some(5));
        assert_eq!(back["replicas"], 5);
        assert!(back.get("autoscaling").is_none());
        // Into autoscaling: the replicas stay as they are (not used while autoscaled).
        let b = bundle(json!({"image": "app:1", "ports": [{"containerPort": 80}],
                              "autoscaling": {"maxReplicas": 6}}));
        let revs = revisions(vec![controller_revision(&b, 1).unwrap()], "u1");
        let back = rollback_spec(&json!({"image": "app:2", "replicas": 3}), &revs[0], Some(3));
        assert_eq!(back["replicas"], 3);
    }
}

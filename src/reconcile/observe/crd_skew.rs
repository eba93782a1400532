//! The AppBundle CRD installed in the cluster against the one this kubundle was built with.
//!
//! `helm upgrade` does not upgrade CRDs, so a new kubundle can run against the previous
//! version's CRD. Its status then carries fields that the installed schema does not declare, and
//! the API server refuses every status write of it (server-side apply: "field not declared in
//! schema"): the AppBundle would stay in the state of its last successful write for good.
//!
//! kubundle finds the gap at startup (the CRD's schema as the API server publishes it at
//! `/openapi/v3`, readable by any authenticated client, against its own) and on any refusal of
//! that kind (the paths the server names). Until the CRD is applied it writes the status without
//! the fields the cluster cannot store, so Ready and the other conditions stay true for `kubectl
//! wait`, Flux and Argo CD; records no rollout history (the revision fields are among the gap's);
//! and says so where people look: `/readyz` answers 503 with the fields and the fix, a Warning
//! Event `CRDOutdated` on each AppBundle it writes, one ERROR log line, and the gauge
//! `kubundle_crd_missing_fields`. While the gap lasts the schema is read again every 30 s; once
//! the CRD is applied every AppBundle is reconciled again and all is as usual, without a restart.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use kube::{Client, CustomResourceExt};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::api::{AppBundle, AppBundleStatus};

/// How often the published schema is read again while the CRD lacks fields.
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// What the API server answers for a field its schema does not declare.
const NOT_DECLARED: &str = "field not declared in schema";

/// The gap between the installed CRD and this kubundle's, shared by the reconciles and `/readyz`.
#[derive(Debug, Default)]
pub struct CrdSkew {
    inner: Mutex<Inner>,
    /// Told when the gap closes: every AppBundle is reconciled again (the status fields and the
    /// history it could not write).
    closed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Paths this kubundle writes or reads that the installed CRD does not declare
    /// (`.status.revision`), sorted.
    missing: BTreeSet<String>,
    /// AppBundles (UIDs) told with a Warning Event.
    warned: HashSet<String>,
    logged: bool,
}

impl CrdSkew {
    /// Compares the installed CRD's published schema with this kubundle's. A failed read changes
    /// nothing (a refused status write still finds the gap).
    pub async fn check(&self, client: &Client) {
        let request = http::Request::get(format!(
            "/openapi/v3/apis/{}/{}",
            crate::api::GROUP,
            crate::api::VERSION
        ))
        .body(Vec::new())
        .expect("a valid request");
        let published = match client.request_text(request).await {
            Ok(text) => text,
            Err(e) => {
                warn!(error = %e, "cannot read the AppBundle schema the API server publishes; a CRD older than this kubundle is found on the first status write instead");
                return;
            }
        };
        let Some(installed) = serde_json::from_str::<Value>(&published)
            .ok()
            .and_then(|doc| appbundle_schema(&doc).cloned())
        else {
            warn!("the published OpenAPI document has no AppBundle schema");
            return;
        };
        let own = own_schema();
        // The status only: it is what kubundle writes. (A spec field the CRD lacks cannot be set by
        // anyone; `kubectl apply` says so to whoever tries.)
        let mut missing = Vec::new();
        gaps(
            &own["properties"]["status"],
            &installed["properties"]["status"],
            ".status",
            &mut missing,
        );
        let mut inner = self.inner.lock().unwrap();
        let had_gap = !inner.missing.is_empty();
        inner.missing = missing.into_iter().collect();
        if inner.missing.is_empty() {
            if had_gap {
                inner.warned.clear();
                inner.logged = false;
                info!(
                    "the AppBundle CRD in the cluster now declares every status field this kubundle writes"
                );
                self.closed.notify_one();
            }
        } else if !inner.logged {
            inner.logged = true;
            error!(missing = %join(&inner.missing), "{}", advice(&inner.missing));
        }
    }

    /// While there is a gap, looks again every [`RECHECK_EVERY`] (one read of the published
    /// schema): the CRD may be applied meanwhile.
    pub async fn recheck(&self, client: &Client) {
        loop {
            tokio::time::sleep(RECHECK_EVERY).await;
            if self.problem().is_some() {
                self.check(client).await;
            }
        }
    }

    /// Resolves when the gap closed.
    pub async fn closed(&self) {
        self.closed.notified().await;
    }

    /// The status without what the installed CRD cannot store.
    pub fn fit(&self, status: &AppBundleStatus) -> AppBundleStatus {
        let Ok(mut value) = serde_json::to_value(status) else {
            return status.clone();
        };
        self.prune_status(&mut value);
        serde_json::from_value(value).unwrap_or_else(|_| status.clone())
    }

    /// Learns the paths an API server's refusal names; true when the message was one of these.
    pub fn learn_from_refusal(&self, message: &str) -> bool {
        let paths = declared_nowhere(message);
        if paths.is_empty() {
            return false;
        }
        self.learn(paths);
        true
    }

    fn learn(&self, paths: Vec<String>) {
        let mut inner = self.inner.lock().unwrap();
        let before = inner.missing.len();
        inner.missing.extend(paths);
        if inner.missing.len() != before && !inner.logged {
            inner.logged = true;
            error!(missing = %join(&inner.missing), "{}", advice(&inner.missing));
        }
    }

    /// The paths missing from the installed CRD (empty: it is up to date).
    pub fn missing(&self) -> Vec<String> {
        self.inner.lock().unwrap().missing.iter().cloned().collect()
    }

    /// What `/readyz` and the Warning Events say, while the CRD lacks fields.
    pub fn problem(&self) -> Option<String> {
        let inner = self.inner.lock().unwrap();
        (!inner.missing.is_empty()).then(|| advice(&inner.missing))
    }

    /// Rollout history needs the revision fields in the status.
    pub fn blocks_history(&self) -> bool {
        let inner = self.inner.lock().unwrap();
        inner
            .missing
            .iter()
            .any(|p| p == ".status.revision" || p == ".status.currentRevision")
    }

    /// Removes from a status (as JSON, rooted at the status) what the installed CRD cannot store.
    pub fn prune_status(&self, status: &mut Value) {
        let inner = self.inner.lock().unwrap();
        for path in &inner.missing {
            if let Some(rest) = path.strip_prefix(".status.") {
                remove_path(status, rest);
            }
        }
    }

    /// True the first time it is asked for an AppBundle while the CRD lacks fields.
    pub fn first_warning_for(&self, uid: &str) -> bool {
        let mut inner = self.inner.lock().unwrap();
        !inner.missing.is_empty() && inner.warned.insert(uid.to_string())
    }
}

fn join(paths: &BTreeSet<String>) -> String {
    paths.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn advice(missing: &BTreeSet<String>) -> String {
    format!(
        "the AppBundle CRD installed in the cluster is older than this kubundle {}: its schema lacks {}. \
         Status is written without those fields and rollout history is not recorded until the CRD of this \
         version is applied (helm upgrade does not upgrade CRDs): kubectl apply --server-side --force-conflicts -f charts/kubundle/crds/",
        env!("CARGO_PKG_VERSION"),
        join(missing)
    )
}

/// This kubundle's own schema of the AppBundle (the CRD `crdgen` writes).
fn own_schema() -> Value {
    let crd = AppBundle::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema).unwrap_or_default()
}

/// The AppBundle's schema in a published OpenAPI v3 document of the group version.
fn appbundle_schema(doc: &Value) -> Option<&Value> {
    doc["components"]["schemas"]
        .as_object()?
        .values()
        .find(|s| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .is_some_and(|gvks| {
                    gvks.iter()
                        .any(|g| g["group"] == crate::api::GROUP && g["kind"] == "AppBundle")
                })
        })
}

/// The properties `own` declares (recursively, through objects and list items) that `installed`
/// does not, as paths under `path`. A schema that keeps unknown fields declares everything.
fn gaps(own: &Value, installed: &Value, path: &str, out: &mut Vec<String>) {
    if installed.is_null() {
        out.push(path.to_string());
        return;
    }
    if installed["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    if let Some(props) = own["properties"].as_object() {
        for (key, schema) in props {
            gaps(
                schema,
                &installed["properties"][key],
                &format!("{path}.{key}"),
                out,
            );
        }
    }
    if own["items"].is_object() {
        gaps(
            &own["items"],
            &installed["items"],
            &format!("{path}[]"),
            out,
        );
    }
    if own["additionalProperties"].is_object() {
        gaps(
            &own["additionalProperties"],
            &installed["additionalProperties"],
            &format!("{path}.*"),
            out,
        );
    }
}

/// The paths an API server's message says are declared nowhere in the schema
/// (`... .status.revision: field not declared in schema`, one or several).
fn declared_nowhere(message: &str) -> Vec<String> {
    message
        .match_indices(NOT_DECLARED)
        .filter_map(|(at, _)| {
            let before = message[..at].trim_end().strip_suffix(':')?;
            let token = before.rsplit(|c: char| c.is_whitespace()).next()?;
            token.starts_with('.').then(|| token.to_string())
        })
        .collect()
}

/// Removes `a.b.c` from a JSON object; `[]` steps into every item of a list, `*` into every
/// value of a map.
fn remove_path(value: &mut Value, path: &str) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    let (key, into_items) = match head.strip_suffix("[]") {
        Some(k) => (k, true),
        None => (head, false),
    };
    let children: Vec<&mut Value> = if key == "*" {
        value
            .as_object_mut()
            .map(|m| m.values_mut().collect())
            .unwrap_or_default()
    } else {
        match (rest, into_items, value.as_object_mut()) {
            (None, false, Some(m)) => {
                m.remove(key);
                return;
            }
            (_, _, Some(m)) => m.get_mut(key).into_iter().collect(),
            _ => return,
        }
    };
    for child in children {
        let targets: Vec<&mut Value> = if into_items {
            child
                .as_array_mut()
                .map(|a| a.iter_mut().collect())
                .unwrap_or_default()
        } else {
            vec![child]
        };
        if let Some(rest) = rest {
            for t in targets {
                remove_path(t, rest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_paths_of_a_refusal_are_read_from_its_message() {
        let one = "failed to create typed patch object (kubundle.dev/v1alpha1, Kind=AppBundle): \
                   .status.revision: field not declared in schema";
        assert_eq!(declared_nowhere(one), vec![".status.revision"]);
        let several = "failed to create typed patch object (kubundle.dev/v1alpha1, Kind=AppBundle): errors:\n  \
                       .status.currentRevision: field not declared in schema\n  \
                       .status.revision: field not declared in schema";
        assert_eq!(
            declared_nowhere(several),
            vec![".status.currentRevision", ".status.revision"]
        );
        assert!(declared_nowhere("the server could not find the requested resource").is_empty());
    }

    #[test]
    fn gaps_are_what_the_installed_schema_does_not_declare() {
        let own = json!({"properties": {
            "a": {"type": "integer"},
            "b": {"properties": {"c": {}, "d": {}}},
            "l": {"items": {"properties": {"x": {}, "y": {}}}},
            "free": {"properties": {"z": {}}},
        }});
        let installed = json!({"properties": {
            "b": {"properties": {"c": {}}},
            "l": {"items": {"properties": {"x": {}}}},
            "free": {"x-kubernetes-preserve-unknown-fields": true},
        }});
        let mut out = Vec::new();
        gaps(&own, &installed, ".status", &mut out);
        assert_eq!(out, vec![".status.a", ".status.b.d", ".status.l[].y"]);
        // kubundle's own schema against itself: no gap.
        let mut none = Vec::new();
        gaps(&own_schema(), &own_schema(), "", &mut none);
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn pruning_removes_only_the_missing_fields() {
        let skew = CrdSkew::default();
        skew.learn(vec![
            ".status.revision".into(),
            ".status.address.external".into(),
            ".status.conditions[].extra".into(),
        ]);
        let mut status = json!({"revision": 3, "image": "nginx",
            "address": {"url": "http://x", "external": ["a"]},
            "conditions": [{"type": "Ready", "extra": 1}, {"type": "Stalled"}]});
        skew.prune_status(&mut status);
        assert_eq!(
            status,
            json!({"image": "nginx", "address": {"url": "http://x"},
                "conditions": [{"type": "Ready"}, {"type": "Stalled"}]})
        );
        assert!(skew.blocks_history());
        assert!(skew.problem().unwrap().contains(".status.revision"));
        assert!(skew.first_warning_for("u1"));
        assert!(!skew.first_warning_for("u1"));
    }
}

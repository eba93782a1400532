//! The controller's cached form of an AppBundle.
//!
//! The cache holds every AppBundle for the life of the process, so its form decides the operator's
//! memory: parsed into the Rust types it is a few compact structs, where an untyped JSON tree of
//! the same object takes several times the space. Parsing must still never fail for one object (a
//! failed list page would break the watch for all of them), so the spec is parsed on its own and a
//! spec that does not fit this version's types is kept as the reason it could not be read: that
//! AppBundle is reported (Stalled, a Warning Event) and the others are reconciled as usual.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::NamespaceResourceScope;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::slim::slim_metadata;
use crate::api::{AppBundle, AppBundleSpec, AppBundleStatus};

/// An AppBundle as the controller stores it.
#[derive(Clone, Debug)]
pub struct CachedBundle {
    pub metadata: ObjectMeta,
    /// The spec, or why this version of kubundle cannot read it.
    pub spec: Result<AppBundleSpec, String>,
    /// The status, when it fits this version's types (one that does not is rewritten).
    pub status: Option<AppBundleStatus>,
}

impl CachedBundle {
    /// The typed AppBundle, when its spec could be read.
    pub fn bundle(&self) -> Result<AppBundle, &str> {
        match &self.spec {
            Ok(spec) => Ok(AppBundle {
                metadata: self.metadata.clone(),
                spec: spec.clone(),
                status: self.status.clone(),
            }),
            Err(message) => Err(message),
        }
    }

    /// Drops what reconciling never reads and what is often the largest part of an object:
    /// managedFields and kubectl's last-applied copy.
    pub fn slim(&mut self) {
        slim_metadata(&mut self.metadata);
    }
}

impl<'de> Deserialize<'de> for CachedBundle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            metadata: ObjectMeta,
            #[serde(default)]
            spec: Value,
            #[serde(default)]
            status: Option<Value>,
        }
        let raw = Raw::deserialize(deserializer)?;
        Ok(CachedBundle {
            metadata: raw.metadata,
            spec: serde_json::from_value(raw.spec).map_err(|e| format!("spec: {e}")),
            status: raw.status.and_then(|s| serde_json::from_value(s).ok()),
        })
    }
}

impl Resource for CachedBundle {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        AppBundle::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        AppBundle::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        AppBundle::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        AppBundle::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(spec: Value) -> Value {
        json!({
            "apiVersion": "kubundle.dev/v1alpha1", "kind": "AppBundle",
            "metadata": {"name": "web", "namespace": "shop", "generation": 2,
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                         "team": "shop"}},
            "spec": spec,
            "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True",
                "reason": "RolledOut", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": 1}]},
        })
    }

    #[test]
    fn a_readable_bundle_is_parsed_whole() {
        let cached: CachedBundle =
            serde_json::from_value(object(json!({"image": "nginx:1.27", "replicas": 2}))).unwrap();
        let bundle = cached.bundle().unwrap();
        assert_eq!(bundle.spec.image, "nginx:1.27");
        assert_eq!(bundle.spec.replicas, Some(2));
        assert_eq!(bundle.metadata.generation, Some(2));
        assert_eq!(bundle.status.unwrap().observed_generation, Some(1));
    }

    #[test]
    fn an_unreadable_spec_is_kept_as_its_reason_with_metadata_and_status() {
        let cached: CachedBundle =
            serde_json::from_value(object(json!({"image": "nginx", "replicas": "three"}))).unwrap();
        let message = cached.bundle().unwrap_err();
        assert!(message.starts_with("spec: "), "{message}");
        assert!(message.contains("three"), "{message}");
        assert_eq!(cached.metadata.name.as_deref(), Some("web"));
        assert!(cached.status.is_some());
    }

    #[test]
    fn slim_drops_managed_fields_and_the_last_applied_copy_only() {
        let mut cached: CachedBundle =
            serde_json::from_value(object(json!({"image": "nginx"}))).unwrap();
        cached.slim();
        assert!(cached.metadata.managed_fields.is_none());
        let annotations = cached.metadata.annotations.unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["team"], "shop");
    }
}

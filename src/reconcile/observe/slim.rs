//! What the caches drop from every object they keep: what reconciling never reads and what is
//! often the largest part of an object, managedFields and kubectl's last-applied copy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The annotation client-side `kubectl apply` keeps its last applied copy in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops managedFields and the last-applied annotation from `meta`.
pub fn slim_metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

//! The AppBundle CustomResourceDefinition as `crdgen` writes it: what the derive generates from
//! the types in this module, plus what a derive cannot say.
//!
//! - `status` defaults to `{observedGeneration: 0}`. kstatus (Flux, Helm 4's `--wait`) counts a
//!   custom resource without any status as Current, so a just-created AppBundle would look healthy
//!   before kubundle has even seen it. With the default, the API server hands out
//!   `observedGeneration: 0` until kubundle writes the real status, and kstatus reads that as
//!   InProgress (not yet observed).
//! - Quantities (`resources.requests`, `limits`, `emptyDir.sizeLimit`, ...) accept what core/v1
//!   accepts: strings (`500m`, `1Gi`, `1e9`) and plain numbers (`cpu: 0.5`, `memory: 1e9`). The
//!   generated int-or-string schema refused `cpu: 0.5`. A structural schema cannot say "number
//!   or string" (nor can CEL type an untyped value), so the value is left untyped with the
//!   quantity pattern, which JSON Schema applies to strings only: `memory: lots` is refused at
//!   apply time naming the field, numbers pass.
//! - Volume and mount names are bounded (DNS labels, 63 characters), which keeps the CEL rule
//!   "every mount names a declared volume" inside the API server's cost budget; volume names
//!   must be DNS labels, as the pod's volumes must.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSON, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use super::AppBundle;

/// The form of a quantity string, as the API server's parser checks it.
pub const QUANTITY_PATTERN: &str = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Entries a requests/limits map may hold (cpu, memory, ephemeral-storage, extended resources).
const MAX_RESOURCE_NAMES: i64 = 32;

pub fn crd() -> CustomResourceDefinition {
    let mut crd = AppBundle::crd();
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(status) = root.properties.as_mut().and_then(|p| p.get_mut("status")) {
            status.default = Some(JSON(serde_json::json!({"observedGeneration": 0})));
        }
        let pod_template = root
            .properties
            .as_mut()
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("podTemplate"))
            .and_then(|s| s.properties.as_mut());
        if let Some(pod_template) = pod_template {
            for list in ["volumes", "volumeMounts"] {
                let name = pod_template
                    .get_mut(list)
                    .and_then(|l| l.items.as_mut())
                    .and_then(|i| match i {
                        JSONSchemaPropsOrArray::Schema(s) => s.properties.as_mut(),
                        _ => None,
                    })
                    .and_then(|p| p.get_mut("name"));
                if let Some(name) = name {
                    name.max_length = Some(63);
                    if list == "volumes" {
                        // a DNS label, as the pod's volumes need
                        name.pattern = Some("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$".into());
                    }
                }
            }
        }
        accept_numeric_quantities(root, "");
    }
    crd
}

/// Quantity fields whose own description replaces the type's.
const QUANTITY_FIELDS: &[&str] = &["sizeLimit"];

/// Whether a schema node (of the field `key`) is the generated schema of `resource.Quantity`.
fn is_quantity(key: &str, schema: &JSONSchemaProps) -> bool {
    schema.x_kubernetes_int_or_string == Some(true)
        && (QUANTITY_FIELDS.contains(&key)
            || schema
                .description
                .as_deref()
                .is_some_and(|d| d.starts_with("Quantity is a fixed-point representation")))
}

/// Rewrites every quantity schema under `schema` (the field `key`) to accept numbers too.
fn accept_numeric_quantities(schema: &mut JSONSchemaProps, key: &str) {
    if is_quantity(key, schema) {
        schema.x_kubernetes_int_or_string = None;
        schema.any_of = None;
        schema.x_kubernetes_preserve_unknown_fields = Some(true);
        // Checked on strings only (JSON Schema patterns ignore numbers): the API server's own
        // quantity expression. Objects and arrays have no business here: only empty ones pass.
        schema.pattern = Some(QUANTITY_PATTERN.into());
        schema.max_properties = Some(0);
        schema.max_items = Some(0);
        return;
    }
    if let Some(props) = schema.properties.as_mut() {
        for (k, v) in props.iter_mut() {
            accept_numeric_quantities(v, k);
        }
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        accept_numeric_quantities(items, "");
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = schema.additional_properties.as_mut() {
        if is_quantity("", values) {
            // a map of quantities (requests, limits): bounded
            schema.max_properties = Some(MAX_RESOURCE_NAMES);
        }
        accept_numeric_quantities(values, "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_defaults_to_not_observed() {
        let crd = crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap();
        let status = &schema.properties.as_ref().unwrap()["status"];
        assert_eq!(
            status.default.as_ref().unwrap().0,
            serde_json::json!({"observedGeneration": 0})
        );
    }
}

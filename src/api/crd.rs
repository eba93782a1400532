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
//! - Sidecar and init container names are DNS labels of at most 63 characters, as a pod's
//!   container names must be: refused at apply time rather than by the Deployment's validation.

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
        let spec = root.properties.as_mut().and_then(|p| p.get_mut("spec"));
        let Some(spec) = spec.and_then(|s| s.properties.as_mut()) else {
            continue;
        };
        let mut pod_template = spec
            .get_mut("podTemplate")
            .and_then(|s| s.properties.as_mut());
        for list in ["volumes", "volumeMounts"] {
            let items = pod_template
                .as_deref_mut()
                .and_then(|p| item_fields(p, list));
            if let Some(name) = items.and_then(|p| p.get_mut("name")) {
                name.max_length = Some(63);
                if list == "volumes" {
                    // a DNS label, as the pod's volumes need
                    name.pattern = Some(DNS_LABEL.into());
                }
            }
        }
        for list in ["sidecars", "initContainers"] {
            let Some(fields) = item_fields(spec, list) else {
                continue;
            };
            if let Some(name) = fields.get_mut("name") {
                // a DNS label, as a pod's container names must be (and bounded, for CEL's cost)
                name.max_length = Some(63);
                name.pattern = Some(DNS_LABEL.into());
            }
            for field in fields.values_mut() {
                shorten_descriptions(field);
            }
        }
        accept_numeric_quantities(root, "");
    }
    crd
}

const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// The fields of the items of the list `list` among `properties`.
fn item_fields<'a>(
    properties: &'a mut std::collections::BTreeMap<String, JSONSchemaProps>,
    list: &str,
) -> Option<&'a mut std::collections::BTreeMap<String, JSONSchemaProps>> {
    match properties.get_mut(list)?.items.as_mut()? {
        JSONSchemaPropsOrArray::Schema(s) => s.properties.as_mut(),
        _ => None,
    }
}

/// The CRD as JSON must stay under 256 KiB: `kubectl apply` without `--server-side` (and Argo CD's
/// default sync) stores the whole object in an annotation of at most 262,144 bytes. Two copies of
/// core/v1 Container's documentation would take the CRD over it, so a sidecar's or an init
/// container's fields keep the first sentence of their own description and none below it:
/// `kubectl explain pod.spec.containers` documents every field in full.
fn shorten_descriptions(field: &mut JSONSchemaProps) {
    if let Some(description) = field.description.as_mut()
        && let Some(end) = description.find(". ")
    {
        description.truncate(end + 1);
    }
    strip_descriptions_below(field);
}

fn strip_descriptions_below(schema: &mut JSONSchemaProps) {
    let strip = |s: &mut JSONSchemaProps| {
        s.description = None;
        strip_descriptions_below(s);
    };
    for s in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip(s);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        strip(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(values)) = schema.additional_properties.as_mut() {
        strip(values);
    }
    for s in schema
        .any_of
        .iter_mut()
        .chain(schema.one_of.iter_mut())
        .flatten()
    {
        strip(s);
    }
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

    /// Client-side `kubectl apply` (and Argo CD's default sync) keeps the whole object in the
    /// last-applied-configuration annotation, which holds at most 262,144 bytes. Room is left for
    /// the fields still to come.
    #[test]
    fn the_crd_fits_in_a_client_side_apply_annotation() {
        let bytes = serde_json::to_vec(&crd()).unwrap().len();
        assert!(
            bytes < 240 * 1024,
            "the CRD is {bytes} bytes as JSON: `kubectl apply` without --server-side refuses it above 262144"
        );
    }
}

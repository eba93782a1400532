//! The HTTP routing child (`spec.http`): a Gateway API HTTPRoute, or an Ingress. Both send the
//! path prefix on the host names to the AppBundle's Service, on its first port.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec as CoreIngressSpec, IngressTLS, ServiceBackendPort,
};
use kube::api::{DynamicObject, TypeMeta};

use super::scaling::metadata;
use super::{RenderError, identity};
use crate::api::AppBundle;

/// The Service port routes send traffic to: the first port's.
/// The classes of GKE's own Ingress controller (external and internal Application Load
/// Balancers), which it reads from [`INGRESS_CLASS_ANNOTATION`] only.
pub const GKE_INGRESS_CLASSES: [&str; 2] = ["gce", "gce-internal"];

/// The Ingress class annotation that came before `spec.ingressClassName`.
pub const INGRESS_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

fn backend_port(bundle: &AppBundle) -> Option<i32> {
    let p = bundle.spec.ports.first()?;
    Some(p.service_port.unwrap_or(p.container_port))
}

/// The HTTPRoute of an AppBundle with `spec.http.gateway` (gateway.networking.k8s.io/v1; the
/// Gateway API has no Rust types in k8s-openapi, so it is rendered as a dynamic object).
pub fn http_route(bundle: &AppBundle) -> Result<Option<DynamicObject>, RenderError> {
    let Some(http) = bundle.spec.http.as_ref() else {
        return Ok(None);
    };
    let Some(gateway) = http.gateway.as_ref() else {
        return Ok(None);
    };
    let (name, namespace, owner) = identity(bundle)?;
    let port = backend_port(bundle).ok_or(RenderError::MissingMetadata("spec.ports[0]"))?;
    let mut parent = serde_json::json!({
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": gateway.name,
    });
    if let Some(ns) = &gateway.namespace {
        parent["namespace"] = ns.clone().into();
    }
    if let Some(section) = &gateway.section_name {
        parent["sectionName"] = section.clone().into();
    }
    let mut spec = serde_json::json!({
        "parentRefs": [parent],
        "rules": [{
            "matches": [{"path": {"type": "PathPrefix", "value": http.path()}}],
            "backendRefs": [{"group": "", "kind": "Service", "name": name, "port": port, "weight": 1}],
        }],
    });
    if let Some(hosts) = http.hostnames.as_ref().filter(|h| !h.is_empty()) {
        spec["hostnames"] = serde_json::json!(hosts);
    }
    let mut route = DynamicObject {
        types: Some(TypeMeta {
            api_version: "gateway.networking.k8s.io/v1".into(),
            kind: "HTTPRoute".into(),
        }),
        metadata: metadata(bundle, &name, namespace, owner),
        data: serde_json::json!({}),
    };
    route.data["spec"] = spec;
    Ok(Some(route))
}

/// The Ingress of an AppBundle with `spec.http.ingress`: one rule per host name (or one for every
/// host), the path prefix to the Service, TLS for the host names with the named Secret.
pub fn ingress(bundle: &AppBundle) -> Result<Option<Ingress>, RenderError> {
    let Some(http) = bundle.spec.http.as_ref() else {
        return Ok(None);
    };
    let Some(settings) = http.ingress.as_ref() else {
        return Ok(None);
    };
    let (name, namespace, owner) = identity(bundle)?;
    let port = backend_port(bundle).ok_or(RenderError::MissingMetadata("spec.ports[0]"))?;
    let paths = HTTPIngressRuleValue {
        paths: vec![HTTPIngressPath {
            path: Some(http.path().to_string()),
            path_type: "Prefix".into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: name.clone(),
                    port: Some(ServiceBackendPort {
                        number: Some(port),
                        name: None,
                    }),
                }),
                resource: None,
            },
        }],
    };
    let hosts = http.hostnames.clone().unwrap_or_default();
    let rules = if hosts.is_empty() {
        vec![IngressRule {
            host: None,
            http: Some(paths),
        }]
    } else {
        hosts
            .iter()
            .map(|h| IngressRule {
                host: Some(h.clone()),
                http: Some(paths.clone()),
            })
            .collect()
    };
    // GKE's own Ingress controller reads only the old annotation, and takes no action on an
    // Ingress with `ingressClassName` and without it: its classes are said the way it reads them
    // (the API server refuses the two together).
    let (class_name, gke_class) = match settings.class_name.as_deref() {
        Some(class) if GKE_INGRESS_CLASSES.contains(&class) => (None, Some(class)),
        other => (other.map(str::to_string), None),
    };
    let mut meta = metadata(bundle, &name, namespace, owner);
    if let Some(class) = gke_class {
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(INGRESS_CLASS_ANNOTATION.into(), class.into());
    }
    Ok(Some(Ingress {
        metadata: meta,
        spec: Some(CoreIngressSpec {
            ingress_class_name: class_name,
            rules: Some(rules),
            tls: settings.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(hosts.clone()),
                    secret_name: Some(secret.clone()),
                }]
            }),
            default_backend: None,
        }),
        status: None,
    }))
}

//! `spec.http`: the Service exposed over HTTP, through a Gateway API HTTPRoute attached to a named
//! Gateway (the GKE Gateway, say) or through an Ingress (GKE Ingress, or any ingress controller).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// HTTP routing to the AppBundle's Service (its first port): kubundle renders a
/// gateway.networking.k8s.io/v1 HTTPRoute (with `gateway`) or a networking.k8s.io/v1 Ingress
/// (with `ingress`) of the AppBundle's name. `status.address.external` gains the URL once the
/// route is accepted or the Ingress has an address.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.gateway) != has(self.ingress)")
        .message("spec.http needs exactly one of gateway (a Gateway API HTTPRoute) and ingress (an Ingress)"),
    validation = Rule::new("!has(self.ingress) || !has(self.ingress.tlsSecretName) || (has(self.hostnames) && self.hostnames.size() > 0)")
        .message("spec.http.ingress.tlsSecretName needs spec.http.hostnames: the certificate is served for those hosts"),
)]
pub struct HttpSpec {
    /// Host names the route answers for, e.g. `shop.example.com` (a leading `*.` matches any one
    /// label). Without any, every host the Gateway or the ingress controller serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    #[x_kube(validation = Rule::new("self.all(h, h.matches('^(\\\\*\\\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$'))")
        .message("spec.http.hostnames must be DNS names in lowercase (an optional leading '*.'), without scheme, port or path"))]
    pub hostnames: Option<Vec<String>>,

    /// The path prefix routed to the Service, default `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^/[^\s?#]*$"))]
    pub path: Option<String>,

    /// Attach an HTTPRoute to this Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRef>,

    /// Expose through an Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
}

impl HttpSpec {
    /// The path prefix, defaulted.
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

/// The Gateway an HTTPRoute attaches to (a parentRef).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRef {
    /// The Gateway's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The Gateway's namespace, default the AppBundle's (the Gateway must allow routes from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,

    /// One listener of the Gateway, by name; default all that accept the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub section_name: Option<String>,
}

/// The Ingress's settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// The IngressClass (e.g. `gce`, `gce-internal`, `nginx`); default the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class_name: Option<String>,

    /// A Secret of type kubernetes.io/tls in the AppBundle's namespace: HTTPS for the hostnames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub tls_secret_name: Option<String>,
}

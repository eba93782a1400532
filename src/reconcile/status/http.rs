//! Readiness of the HTTP routing child (`spec.http`), pure: an HTTPRoute is ready once its Gateway
//! accepted it, an Ingress once the ingress controller gave it an address. Either then has an
//! external URL for `status.address.external`.

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::DynamicObject;

use crate::api::{AppBundle, reason};

/// Ready: the external URL (when one can be told). Not ready: (reason, message).
pub type HttpReadiness = Result<Option<String>, (&'static str, String)>;

fn first_host(bundle: &AppBundle) -> Option<&str> {
    bundle
        .spec
        .http
        .as_ref()
        .and_then(|h| h.hostnames.as_ref())
        .and_then(|h| h.first())
        .map(String::as_str)
        .filter(|h| !h.starts_with('*'))
}

/// The routing child's readiness, or None when the spec asks for no routing.
pub fn readiness(
    bundle: &AppBundle,
    route: Option<&DynamicObject>,
    ingress: Option<&Ingress>,
) -> Option<HttpReadiness> {
    let http = bundle.spec.http.as_ref()?;
    let path = http.path();
    if let Some(gateway) = &http.gateway {
        let ns = bundle.metadata.namespace.clone().unwrap_or_default();
        let gateway_ns = gateway.namespace.clone().unwrap_or(ns);
        let who = format!("Gateway {gateway_ns}/{}", gateway.name);
        let Some(route) = route else {
            return Some(Err((
                reason::WAITING_FOR_ROUTE,
                format!("creating the HTTPRoute for the {who}"),
            )));
        };
        // The Gateway's report on this route: status.parents[] entry whose parentRef is it.
        let ours = route.data["status"]["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| {
                let r = &p["parentRef"];
                r["name"] == gateway.name.as_str()
                    && r["namespace"].as_str().is_none_or(|n| n == gateway_ns)
            });
        let accepted = ours.and_then(|p| {
            p["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Accepted")
        });
        return Some(match accepted {
            None => Err((
                reason::WAITING_FOR_ROUTE,
                format!("all pods are available; waiting for the {who} to accept the HTTPRoute"),
            )),
            Some(c) if c["status"] != "True" => Err((
                reason::ROUTE_NOT_ACCEPTED,
                format!(
                    "the {who} did not accept the HTTPRoute: {}: {}",
                    c["reason"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                ),
            )),
            Some(_) => Ok(first_host(bundle).map(|h| format!("http://{h}{path}"))),
        });
    }
    let tls = http
        .ingress
        .as_ref()
        .is_some_and(|i| i.tls_secret_name.is_some());
    let Some(ingress) = ingress else {
        return Some(Err((
            reason::WAITING_FOR_INGRESS,
            "creating the Ingress".into(),
        )));
    };
    let address = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
        .and_then(|i| i.ip.clone().or_else(|| i.hostname.clone()));
    Some(match address {
        None => Err((
            reason::WAITING_FOR_INGRESS,
            "all pods are available; waiting for the ingress controller to give the Ingress an address".into(),
        )),
        Some(address) => {
            let host = first_host(bundle).map(str::to_string).unwrap_or(address);
            let scheme = if tls { "https" } else { "http" };
            Ok(Some(format!("{scheme}://{host}{path}")))
        }
    })
}

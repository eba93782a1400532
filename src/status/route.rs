//! Readiness of the HTTP routing child (`spec.http`), pure: an HTTPRoute is ready once its Gateway
//! accepted it, an Ingress once the ingress controller gave it an address. Either then has an
//! external URL for `status.address.external`.

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::DynamicObject;

use crate::api::{AppBundle, reason};

/// Ready: the external URL (when one can be told). Not ready: (reason, message).
pub type HttpReadiness = Result<Option<String>, (&'static str, String)>;

/// What kubundle read of the Gateway an HTTPRoute attaches to (one GET per reconcile of a routed
/// AppBundle; nothing when it may not read Gateways).
#[derive(Clone, Debug)]
pub enum GatewayLook {
    Found(Box<DynamicObject>),
    Missing,
}

/// The route's URL through `gateway`: the first hostname or else the Gateway's address; the scheme
/// and port of the listener the route attaches to (its `sectionName`, or else the Gateway's HTTPS
/// listener if it has one, else its HTTP one).
fn gateway_url(
    host: Option<&str>,
    gateway: &DynamicObject,
    section: Option<&str>,
    path: &str,
) -> Option<String> {
    let listeners = gateway.data["spec"]["listeners"].as_array()?;
    let listener = |protocol: &str| {
        listeners
            .iter()
            .filter(|l| section.is_none_or(|s| l["name"] == s))
            .find(|l| l["protocol"] == protocol)
    };
    let (scheme, listener) = match listener("HTTPS") {
        Some(l) => ("https", l),
        None => ("http", listener("HTTP")?),
    };
    let host = match host {
        Some(h) => h.to_string(),
        None => gateway.data["status"]["addresses"].as_array()?.first()?["value"]
            .as_str()?
            .to_string(),
    };
    let port = listener["port"].as_i64()?;
    let default = if scheme == "https" { 443 } else { 80 };
    Some(if port == default {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}:{port}{path}")
    })
}

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
    gateway_look: Option<&GatewayLook>,
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
        let condition = |kind: &str| {
            ours.and_then(|p| {
                p["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == kind)
            })
        };
        // A report on an earlier version of the route says nothing about this one.
        let generation = route.metadata.generation.unwrap_or(0);
        let current = |c: &&serde_json::Value| {
            c["observedGeneration"]
                .as_i64()
                .is_none_or(|g| g >= generation)
        };
        let missing = matches!(gateway_look, Some(GatewayLook::Missing));
        let accepted = condition("Accepted");
        return Some(match accepted {
            None if missing => Err((
                reason::WAITING_FOR_ROUTE,
                format!("the {who} does not exist: create it, or change spec.http.gateway"),
            )),
            None => Err((
                reason::WAITING_FOR_ROUTE,
                format!("all pods are available; waiting for the {who} to accept the HTTPRoute"),
            )),
            Some(c) if !current(&c) => Err((
                reason::WAITING_FOR_ROUTE,
                format!(
                    "all pods are available; waiting for the {who} to accept the HTTPRoute's generation {generation}"
                ),
            )),
            Some(c) if c["status"] != "True" => Err((
                reason::ROUTE_NOT_ACCEPTED,
                format!(
                    "the {who} did not accept the HTTPRoute: {}: {}",
                    c["reason"].as_str().unwrap_or_default(),
                    c["message"].as_str().unwrap_or_default()
                ),
            )),
            Some(_) => match condition("ResolvedRefs").filter(current) {
                Some(r) if r["status"] == "False" => Err((
                    reason::ROUTE_NOT_ACCEPTED,
                    format!(
                        "the {who} accepted the HTTPRoute but cannot route to the Service: {}: {}",
                        r["reason"].as_str().unwrap_or_default(),
                        r["message"].as_str().unwrap_or_default()
                    ),
                )),
                _ => Ok(match gateway_look {
                    Some(GatewayLook::Found(g)) => {
                        gateway_url(first_host(bundle), g, gateway.section_name.as_deref(), path)
                    }
                    _ => first_host(bundle).map(|h| format!("http://{h}{path}")),
                }),
            },
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
    let address = ingress_addresses(ingress).into_iter().next();
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

/// The addresses an ingress controller gave an Ingress (IPs or hostnames), in its order.
pub fn ingress_addresses(ingress: &Ingress) -> Vec<String> {
    ingress
        .status
        .iter()
        .filter_map(|s| s.load_balancer.as_ref())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|a| a.ip.clone().or_else(|| a.hostname.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle(http: serde_json::Value) -> AppBundle {
        let mut b: AppBundle = serde_json::from_value(json!({
            "apiVersion": "kubundle.dev/v1alpha1", "kind": "AppBundle",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"image": "nginx", "ports": [{"containerPort": 80}], "http": http},
        }))
        .unwrap();
        b.metadata.namespace = Some("shop".into());
        b
    }

    fn route(generation: i64, conditions: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "generation": generation},
            "status": {"parents": [{
                "parentRef": {"name": "gw", "namespace": "infra"},
                "controllerName": "example.com/gateway",
                "conditions": conditions,
            }]},
        }))
        .unwrap()
    }

    fn gateway(listeners: serde_json::Value) -> GatewayLook {
        GatewayLook::Found(Box::new(
            serde_json::from_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "gw", "namespace": "infra"},
                "spec": {"gatewayClassName": "x", "listeners": listeners},
                "status": {"addresses": [{"type": "IPAddress", "value": "203.0.113.7"}]},
            }))
            .unwrap(),
        ))
    }

    fn accepted(generation: i64) -> serde_json::Value {
        json!([
            {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": generation},
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "observedGeneration": generation},
        ])
    }

    const HTTP: &str = r#"[{"name": "http", "protocol": "HTTP", "port": 80}]"#;

    #[test]
    fn the_url_comes_from_the_gateway_when_there_is_no_hostname() {
        let b = bundle(json!({"gateway": {"name": "gw", "namespace": "infra"}}));
        let gw = gateway(serde_json::from_str(HTTP).unwrap());
        let got = readiness(&b, Some(&route(1, accepted(1))), Some(&gw), None).unwrap();
        assert_eq!(got, Ok(Some("http://203.0.113.7/".into())));
        // Not read (no permission): no URL rather than a guess.
        let got = readiness(&b, Some(&route(1, accepted(1))), None, None).unwrap();
        assert_eq!(got, Ok(None));
    }

    #[test]
    fn the_scheme_and_port_come_from_the_listener() {
        let b = bundle(json!({"hostnames": ["shop.example.com"], "path": "/app",
                              "gateway": {"name": "gw", "namespace": "infra"}}));
        let both = gateway(json!([
            {"name": "http", "protocol": "HTTP", "port": 8080},
            {"name": "https", "protocol": "HTTPS", "port": 443},
        ]));
        let r = route(1, accepted(1));
        assert_eq!(
            readiness(&b, Some(&r), Some(&both), None).unwrap(),
            Ok(Some("https://shop.example.com/app".into()))
        );
        let b = bundle(json!({"hostnames": ["shop.example.com"],
                              "gateway": {"name": "gw", "namespace": "infra", "sectionName": "http"}}));
        assert_eq!(
            readiness(&b, Some(&r), Some(&both), None).unwrap(),
            Ok(Some("http://shop.example.com:8080/".into()))
        );
    }

    #[test]
    fn an_acceptance_of_an_earlier_generation_is_not_ready() {
        let b = bundle(json!({"gateway": {"name": "gw", "namespace": "infra"}}));
        let got = readiness(&b, Some(&route(2, accepted(1))), None, None).unwrap();
        let (reason, message) = got.unwrap_err();
        assert_eq!(reason, reason::WAITING_FOR_ROUTE);
        assert!(message.contains("generation 2"), "{message}");
    }

    #[test]
    fn refusals_and_unresolved_backends_carry_the_controllers_words() {
        let b = bundle(json!({"gateway": {"name": "gw", "namespace": "infra"}}));
        let refused = route(
            1,
            json!([{"type": "Accepted", "status": "False", "observedGeneration": 1,
            "reason": "NotAllowedByListeners", "message": "no listener allows routes from shop"}]),
        );
        let (reason, message) = readiness(&b, Some(&refused), None, None)
            .unwrap()
            .unwrap_err();
        assert_eq!(reason, reason::ROUTE_NOT_ACCEPTED);
        assert!(message.contains("NotAllowedByListeners: no listener allows routes from shop"));
        let unresolved = route(
            1,
            json!([
            {"type": "Accepted", "status": "True", "observedGeneration": 1},
            {"type": "ResolvedRefs", "status": "False", "observedGeneration": 1,
             "reason": "BackendNotFound", "message": "service shop/web not found"}]),
        );
        let (reason, message) = readiness(&b, Some(&unresolved), None, None)
            .unwrap()
            .unwrap_err();
        assert_eq!(reason, reason::ROUTE_NOT_ACCEPTED);
        assert!(
            message.contains("BackendNotFound: service shop/web not found"),
            "{message}"
        );
    }

    #[test]
    fn a_missing_gateway_is_named() {
        let b = bundle(json!({"gateway": {"name": "gw", "namespace": "infra"}}));
        let unanswered = route(1, json!([]));
        let got = readiness(&b, Some(&unanswered), Some(&GatewayLook::Missing), None).unwrap();
        let (_, message) = got.unwrap_err();
        assert!(
            message.contains("Gateway infra/gw does not exist"),
            "{message}"
        );
    }
}

//! Make before break when the way in changes. When `spec.http` switches between a Gateway (an
//! HTTPRoute) and an Ingress, the old routing child keeps carrying the requests until the new one
//! does: first until the new one is ready (the HTTPRoute accepted by its Gateway for its current
//! generation, the Ingress given an address by its controller: Ready's own judgement,
//! status/route.rs), then for [`DRAIN`] more, because a controller reports before its proxies have
//! loaded the route (Traefik publishes a provider's changes at most every 2 s). Deleting the old
//! child at once, or as soon as the new one was accepted, left a gap in which neither routed:
//! with Traefik, 2 requests of 194 got a 404 in either case.
//!
//! The same holds for a canary's Service and Deployment once `spec.rollout` is removed: they stay
//! until the route without them is ready, and [`DRAIN`] more.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::DynamicObject;

use crate::api::AppBundle;
use crate::render::ChildKind;
use crate::status::route;

/// How long the old routing child stays once the new one is ready.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Whether the route no longer sends the canary of `bundle` anything, as its Gateway has it (no
/// backendRef to `NAME-canary`, accepted at its current generation; no route at all routes
/// nothing): then the canary's children may go after the drain.
pub fn canary_unrouted(bundle: &AppBundle, route: Option<&DynamicObject>) -> bool {
    let Some(r) = route else { return true };
    let name = bundle.metadata.name.as_deref().unwrap_or_default();
    let canary = crate::render::canary::canary_name(name);
    let refers = r.data["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["backendRefs"].as_array().into_iter().flatten())
        .any(|b| b["name"] == canary.as_str());
    !refers && matches!(route::readiness(bundle, Some(r), None, None), Some(Ok(_)))
}

/// Whether the routing child that replaces the stale child of kind `stale` (`route` or `ingress`,
/// as the API server has it) is ready; None when `stale` is not a replaced routing child (it goes
/// at once: the section was removed, or it is not a routing child).
pub fn replacement_ready(
    stale: ChildKind,
    bundle: &AppBundle,
    route: Option<&DynamicObject>,
    ingress: Option<&Ingress>,
) -> Option<bool> {
    let replaced = match stale {
        ChildKind::HttpRoute => ingress.is_some(),
        ChildKind::Ingress => route.is_some(),
        _ => false,
    };
    replaced.then(|| matches!(route::readiness(bundle, route, None, ingress), Some(Ok(_))))
}

/// What becomes of a replaced routing child now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Its replacement is not ready: it stays (and Ready's message says so).
    Hold,
    /// Its replacement is ready: it stays this long still.
    Drain(Duration),
    /// Deleted now.
    Delete,
}

/// Since when each AppBundle's new routing child is ready (by the AppBundle's UID), while the old
/// one drains. Lost on a restart: the drain then starts again, which only keeps the old child 5 s
/// longer.
#[derive(Debug, Default)]
pub struct Handovers(Mutex<HashMap<String, Instant>>);

impl Handovers {
    /// The verdict on the AppBundle `uid`'s replaced routing child, whose replacement is `ready`.
    pub fn verdict(&self, uid: &str, ready: bool, now: Instant) -> Verdict {
        let mut since = self.0.lock().unwrap();
        if !ready {
            since.remove(uid);
            return Verdict::Hold;
        }
        if since.len() >= 1024 {
            since.retain(|_, t| now.saturating_duration_since(*t) < 10 * DRAIN);
        }
        let elapsed = now.saturating_duration_since(*since.entry(uid.to_string()).or_insert(now));
        if elapsed >= DRAIN {
            since.remove(uid);
            Verdict::Delete
        } else {
            Verdict::Drain(DRAIN - elapsed)
        }
    }
}

/// What Ready's message says while the old routing child is held.
pub fn held_note(stale: ChildKind, name: &str) -> String {
    format!(
        "the {} {name} carries the requests until then",
        stale.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle(http: serde_json::Value) -> AppBundle {
        serde_json::from_value(json!({
            "apiVersion": "kubundle.dev/v1alpha1", "kind": "AppBundle",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"image": "nginx", "ports": [{"containerPort": 80}], "http": http},
        }))
        .unwrap()
    }

    fn route(generation: i64, accepted: Option<(&str, i64)>) -> DynamicObject {
        let parents = match accepted {
            None => json!([]),
            Some((status, observed)) => json!([{
                "parentRef": {"name": "gw"},
                "controllerName": "example.com/gw",
                "conditions": [{"type": "Accepted", "status": status, "reason": "R",
                                "message": "", "observedGeneration": observed}],
            }]),
        };
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop", "generation": generation},
            "spec": {}, "status": {"parents": parents},
        }))
        .unwrap()
    }

    fn ingress(address: Option<&str>) -> Ingress {
        let status = match address {
            Some(ip) => json!({"loadBalancer": {"ingress": [{"ip": ip}]}}),
            None => json!({"loadBalancer": {}}),
        };
        serde_json::from_value(json!({"metadata": {"name": "web"}, "status": status})).unwrap()
    }

    #[test]
    fn an_ingress_stays_until_the_gateway_accepts_the_route_for_its_generation() {
        let b = bundle(json!({"gateway": {"name": "gw"}}));
        let ready = |r: &DynamicObject| replacement_ready(ChildKind::Ingress, &b, Some(r), None);
        assert_eq!(ready(&route(1, None)), Some(false), "no verdict yet");
        assert_eq!(
            ready(&route(2, Some(("True", 1)))),
            Some(false),
            "a verdict on generation 1"
        );
        assert_eq!(ready(&route(1, Some(("False", 1)))), Some(false), "refused");
        assert_eq!(ready(&route(2, Some(("True", 2)))), Some(true));
    }

    #[test]
    fn a_canarys_children_stay_until_the_accepted_route_leaves_them() {
        let b = bundle(json!({"gateway": {"name": "gw"}}));
        let with_refs = |mut r: DynamicObject, refs: serde_json::Value| {
            r.data["spec"] = json!({"rules": [{"backendRefs": refs}]});
            r
        };
        let split = json!([{"name": "web", "weight": 100}, {"name": "web-canary", "weight": 0}]);
        let plain = json!([{"name": "web"}]);
        assert!(!canary_unrouted(
            &b,
            Some(&with_refs(route(3, Some(("True", 3))), split))
        ));
        assert!(!canary_unrouted(
            &b,
            Some(&with_refs(route(3, Some(("True", 2))), plain.clone()))
        ));
        assert!(canary_unrouted(
            &b,
            Some(&with_refs(route(3, Some(("True", 3))), plain))
        ));
        assert!(canary_unrouted(&b, None), "no route routes nothing");
    }

    #[test]
    fn a_route_stays_until_the_ingress_has_an_address() {
        let b = bundle(json!({"ingress": {"className": "traefik"}}));
        let ready = |i: &Ingress| replacement_ready(ChildKind::HttpRoute, &b, None, Some(i));
        assert_eq!(ready(&ingress(None)), Some(false));
        assert_eq!(ready(&ingress(Some("10.0.0.1"))), Some(true));
    }

    #[test]
    fn only_a_replaced_routing_child_is_held() {
        // The section removed: nothing replaces the route, it goes at once.
        let none = bundle(json!(null));
        assert_eq!(
            replacement_ready(ChildKind::HttpRoute, &none, None, None),
            None
        );
        assert_eq!(
            replacement_ready(ChildKind::Ingress, &none, None, None),
            None
        );
        // Other kinds never wait for routing.
        let b = bundle(json!({"gateway": {"name": "gw"}}));
        let r = route(1, None);
        assert_eq!(
            replacement_ready(ChildKind::HorizontalPodAutoscaler, &b, Some(&r), None),
            None
        );
    }

    #[test]
    fn the_old_child_drains_after_its_replacement_is_ready() {
        let handovers = Handovers::default();
        let t = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(handovers.verdict("a", false, t), Verdict::Hold);
        assert_eq!(
            handovers.verdict("a", true, t + s(1)),
            Verdict::Drain(DRAIN)
        );
        assert_eq!(
            handovers.verdict("a", true, t + s(3)),
            Verdict::Drain(DRAIN - s(2))
        );
        // Not ready again (the Gateway changed its mind): held, and the drain starts anew.
        assert_eq!(handovers.verdict("a", false, t + s(4)), Verdict::Hold);
        assert_eq!(
            handovers.verdict("a", true, t + s(5)),
            Verdict::Drain(DRAIN)
        );
        assert_eq!(handovers.verdict("a", true, t + s(10)), Verdict::Delete);
        // Each AppBundle on its own clock.
        assert_eq!(
            handovers.verdict("b", true, t + s(10)),
            Verdict::Drain(DRAIN)
        );
    }
}

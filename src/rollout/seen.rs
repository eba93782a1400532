//! What a canary's [`super::Seen`] is made of, read from the live children, pure: the canary's
//! ready pods at its current spec, whether a Deployment's rollout is done, and the weight the
//! Gateway has.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::DynamicObject;

use crate::api::AppBundle;
use crate::render::canary::route_weight;
use crate::status::all_pods_current;
use crate::status::route::{GatewayLook, readiness};

/// Whether the Deployment controller has seen the Deployment's current spec.
fn observed(d: &Deployment) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    d.status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .is_some_and(|g| g >= generation)
}

/// Ready pods that surely run the Deployment's current template: its ready pods, less every pod
/// that does not run that template (old pods may be the ready ones). 0 while the Deployment
/// controller has not seen the current spec.
pub fn ready_at_current(d: Option<&Deployment>) -> i32 {
    let Some(d) = d.filter(|d| observed(d)) else {
        return 0;
    };
    let Some(s) = d.status.as_ref() else { return 0 };
    let old = s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
    (s.ready_replicas.unwrap_or(0) - old.max(0)).max(0)
}

/// The Deployment's rollout is done: its current spec seen, and `desired` pods, all of them on
/// its current template and available, no old pod left.
pub fn rollout_done(d: Option<&Deployment>, desired: i32) -> bool {
    d.filter(|d| observed(d))
        .and_then(|d| d.status.as_ref())
        .is_some_and(|s| all_pods_current(s, desired))
}

/// The canary's weight the Gateway has: the weight on the live route, once the Gateway reports
/// it accepted at the route's current generation with its references resolved; None before.
pub fn gateway_weight(
    bundle: &AppBundle,
    route: Option<&DynamicObject>,
    gateway: Option<&GatewayLook>,
) -> Option<i32> {
    let route = route?;
    let name = bundle.metadata.name.as_deref()?;
    matches!(readiness(bundle, Some(route), gateway, None), Some(Ok(_)))
        .then(|| route_weight(route, name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::AppBundleSpec;

    fn deployment(generation: i64, observed: i64, counts: [i32; 4]) -> Deployment {
        let [replicas, updated, ready, available] = counts;
        serde_json::from_value(json!({
            "metadata": {"name": "web-canary", "generation": generation},
            "status": {"observedGeneration": observed, "replicas": replicas,
                       "updatedReplicas": updated, "readyReplicas": ready,
                       "availableReplicas": available},
        }))
        .unwrap()
    }

    #[test]
    fn ready_pods_count_only_where_they_surely_run_the_current_template() {
        assert_eq!(ready_at_current(Some(&deployment(2, 2, [3, 3, 3, 3]))), 3);
        // 3 pods, 1 of them old, 2 ready: the ready ones may include the old one.
        assert_eq!(ready_at_current(Some(&deployment(2, 2, [3, 2, 2, 2]))), 1);
        assert_eq!(ready_at_current(Some(&deployment(2, 2, [3, 1, 1, 1]))), 0);
        assert_eq!(
            ready_at_current(Some(&deployment(3, 2, [3, 3, 3, 3]))),
            0,
            "not seen yet"
        );
        assert_eq!(ready_at_current(None), 0);
    }

    #[test]
    fn a_rollout_is_done_with_every_pod_current_and_available() {
        assert!(rollout_done(Some(&deployment(2, 2, [4, 4, 4, 4])), 4));
        assert!(
            !rollout_done(Some(&deployment(2, 2, [5, 4, 4, 4])), 4),
            "an old pod left"
        );
        assert!(!rollout_done(Some(&deployment(2, 2, [4, 4, 4, 3])), 4));
        assert!(!rollout_done(Some(&deployment(3, 2, [4, 4, 4, 4])), 4));
    }

    fn bundle() -> AppBundle {
        let spec: AppBundleSpec = serde_json::from_value(json!({
            "image": "web:1",
            "ports": [{"name": "http", "containerPort": 80}],
            "http": {"gateway": {"name": "local", "namespace": "gateway-system"}},
        }))
        .unwrap();
        let mut b = AppBundle::new("web", spec);
        b.metadata.namespace = Some("shop".into());
        b
    }

    fn route(generation: i64, accepted_at: i64, accepted: &str, weight: i32) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "web", "namespace": "shop", "generation": generation},
            "spec": {"rules": [{"backendRefs": [
                {"name": "web", "port": 80, "weight": 100 - weight},
                {"name": "web-canary", "port": 80, "weight": weight}]}]},
            "status": {"parents": [{
                "parentRef": {"name": "local", "namespace": "gateway-system"},
                "controllerName": "traefik.io/gateway-controller",
                "conditions": [
                    {"type": "Accepted", "status": accepted, "observedGeneration": accepted_at, "reason": "Accepted", "message": ""},
                    {"type": "ResolvedRefs", "status": "True", "observedGeneration": accepted_at, "reason": "ResolvedRefs", "message": ""}]}]},
        }))
        .unwrap()
    }

    #[test]
    fn the_gateway_has_a_weight_once_it_accepted_the_routes_current_generation() {
        let b = bundle();
        assert_eq!(
            gateway_weight(&b, Some(&route(4, 4, "True", 30)), None),
            Some(30)
        );
        assert_eq!(
            gateway_weight(&b, Some(&route(5, 4, "True", 30)), None),
            None,
            "an older generation"
        );
        assert_eq!(
            gateway_weight(&b, Some(&route(4, 4, "False", 30)), None),
            None
        );
        assert_eq!(gateway_weight(&b, None, None), None);
    }
}

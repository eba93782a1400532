//! The canary's children (`spec.rollout.canary`, see [`crate::rollout`]): a Deployment and a
//! Service of the name `NAME-canary`, and the HTTPRoute with a weight for each Service. Pure, like
//! the rest of rendering; [`super::children_with`] puts them in the set while a canary is under
//! way (or has been: a finished canary keeps its Deployment at 0 pods and its Service).
//!
//! The stable children keep their names, selectors and pods: the Deployment's selector is
//! immutable and shared with the Service, the PodDisruptionBudget and the scale subresource. The
//! canary's pods differ only in their instance label (`NAME-canary`) and carry
//! [`TRACK_LABEL`]`: canary`, so neither Service selects the other's pods, while
//! `app.kubernetes.io/name=NAME` (and the user's own labels) finds them all.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::DynamicObject;

use super::{RenderError, deployment, http_route, labels, service};
use crate::api::{AppBundle, AppBundleSpec};
use crate::hash::fnv_hex;

/// The annotation on the canary Deployment naming the pod revision it runs ([`pod_revision`]):
/// its ready pods count for a canary only when it names that canary's.
pub const POD_REVISION: &str = "kubundle.dev/pod-revision";

/// What a canary asks of the children (the controller's plan, from [`crate::rollout::Plan`]).
#[derive(Clone, Copy, Debug)]
pub struct CanaryChildren<'a> {
    /// The spec the stable Deployment runs when it is not the AppBundle's: the stable revision's,
    /// while the canary runs the new one.
    pub stable: Option<&'a AppBundleSpec>,
    /// The canary's share of the requests, in percent.
    pub weight: i32,
    /// Pods of the canary Deployment.
    pub replicas: i32,
    /// The canary Deployment is left as it is (its share is going to 0 first).
    pub frozen: bool,
}

/// `bundle` with the pods of `stable`: the stable Deployment's rendering while a canary runs.
/// The number of pods (and the autoscaler) stay the AppBundle's: scaling needs no canary.
pub fn with_stable_pods(bundle: &AppBundle, stable: &AppBundleSpec) -> AppBundle {
    let mut spec = stable.clone();
    spec.replicas = bundle.spec.replicas;
    spec.autoscaling = bundle.spec.autoscaling.clone();
    spec.progress_deadline_seconds = bundle.spec.progress_deadline_seconds;
    let mut out = AppBundle::new(bundle.metadata.name.as_deref().unwrap_or_default(), spec);
    out.metadata = bundle.metadata.clone();
    out
}

/// The label on a canary's pods: `canary`. (The stable pods have none: adding one would roll them
/// all when kubundle is upgraded.)
pub const TRACK_LABEL: &str = "kubundle.dev/track";

/// The name of the canary's Deployment and Service.
pub fn canary_name(name: &str) -> String {
    format!("{name}-canary")
}

/// The canary's selector: the stable one's, but for the instance label.
pub fn canary_selector_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = super::selector_labels(name);
    labels.insert(labels::INSTANCE.to_string(), canary_name(name));
    labels
}

/// What the pods of `bundle` run, as a short stable hash of the pod template kubundle renders
/// for its stable Deployment: a change of replicas, of the Service or of the route is no new
/// pod revision (it needs no canary).
pub fn pod_revision(bundle: &AppBundle) -> Result<String, RenderError> {
    let template = deployment(bundle)?.spec.map(|s| s.template);
    let bytes = serde_json::to_vec(&template)
        .map_err(|e| RenderError::Encode("pod template", e.to_string()))?;
    Ok(fnv_hex(&bytes)[..10].to_string())
}

/// The canary Deployment: the AppBundle's Deployment (its spec's pods) under the canary's name,
/// selector and instance label, with `replicas` pods (never the autoscaler's: the autoscaler
/// scales the stable Deployment, and the canary follows its share of it).
pub fn canary_deployment(bundle: &AppBundle, replicas: i32) -> Result<Deployment, RenderError> {
    let mut d = deployment(bundle)?;
    let name = d.metadata.name.clone().unwrap_or_default();
    let canary = canary_name(&name);
    let relabel = |labels: &mut Option<BTreeMap<String, String>>| {
        let labels = labels.get_or_insert_with(BTreeMap::new);
        labels.extend(canary_selector_labels(&name));
        labels.insert(TRACK_LABEL.to_string(), "canary".to_string());
    };
    d.metadata.name = Some(canary);
    relabel(&mut d.metadata.labels);
    d.metadata.annotations = Some(BTreeMap::from([(
        POD_REVISION.to_string(),
        pod_revision(bundle)?,
    )]));
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas = Some(replicas);
        spec.selector.match_labels = Some(canary_selector_labels(&name));
        relabel(
            &mut spec
                .template
                .metadata
                .get_or_insert_with(Default::default)
                .labels,
        );
    }
    Ok(d)
}

/// The canary Service: the AppBundle's Service under the canary's name and selector, always of
/// type ClusterIP (the canary is reached through the route only; no second load balancer).
pub fn canary_service(bundle: &AppBundle) -> Result<Service, RenderError> {
    let mut s = service(bundle)?;
    let name = s.metadata.name.clone().unwrap_or_default();
    s.metadata.name = Some(canary_name(&name));
    s.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(canary_selector_labels(&name));
    if let Some(spec) = s.spec.as_mut() {
        spec.type_ = Some("ClusterIP".into());
        spec.cluster_ip = None;
        spec.selector = Some(canary_selector_labels(&name));
        spec.load_balancer_source_ranges = None;
        spec.external_traffic_policy = None;
        for port in spec.ports.iter_mut().flatten() {
            port.node_port = None;
        }
    }
    Ok(s)
}

/// The HTTPRoute during a canary: its one rule sends `weight` percent of the requests to the
/// canary Service and the rest to the stable one (both on the first port). `None` without
/// `spec.http.gateway` (a canary needs it: the schema refuses a canary without one).
pub fn weighted_route(
    bundle: &AppBundle,
    weight: i32,
) -> Result<Option<DynamicObject>, RenderError> {
    let Some(mut route) = http_route(bundle)? else {
        return Ok(None);
    };
    let weight = weight.clamp(0, 100);
    let refs = &mut route.data["spec"]["rules"][0]["backendRefs"];
    let stable = refs[0].clone();
    let mut canary = stable.clone();
    canary["name"] = canary_name(stable["name"].as_str().unwrap_or_default()).into();
    canary["weight"] = weight.into();
    let mut stable = stable;
    stable["weight"] = (100 - weight).into();
    *refs = serde_json::json!([stable, canary]);
    Ok(Some(route))
}

/// The canary's weight on a live HTTPRoute's spec: the weight of the backendRef named
/// `NAME-canary` in its first rule (0 if it has none).
pub fn route_weight(route: &DynamicObject, name: &str) -> i32 {
    let canary = canary_name(name);
    route.data["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["name"] == canary.as_str())
        .and_then(|r| r["weight"].as_i64())
        .and_then(|w| i32::try_from(w).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AppBundleSpec;

    fn bundle(extra: serde_json::Value) -> AppBundle {
        let mut spec = serde_json::json!({
            "image": "web:1",
            "replicas": 4,
            "ports": [{"name": "http", "containerPort": 8080, "servicePort": 80}],
            "http": {"gateway": {"name": "public"}, "hostnames": ["shop.example.com"]},
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let spec: AppBundleSpec = serde_json::from_value(spec).unwrap();
        let mut b = AppBundle::new("web", spec);
        b.metadata.namespace = Some("shop".into());
        b.metadata.uid = Some("0b5a3c1e-0000-4000-8000-000000000002".into());
        b.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
        b
    }

    #[test]
    fn the_canary_deployment_runs_the_spec_under_its_own_name_and_selector() {
        let b = bundle(serde_json::json!({"autoscaling": {"maxReplicas": 10}}));
        let stable = deployment(&b).unwrap();
        let canary = canary_deployment(&b, 2).unwrap();
        assert_eq!(canary.metadata.name.as_deref(), Some("web-canary"));
        let (s, c) = (stable.spec.unwrap(), canary.spec.unwrap());
        assert_eq!(
            c.replicas,
            Some(2),
            "the canary's count, never the autoscaler's"
        );
        let pods = c.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pods[labels::INSTANCE], "web-canary");
        assert_eq!(pods[TRACK_LABEL], "canary");
        assert_eq!(pods["app"], "web", "the user's labels find both");
        assert_eq!(pods[labels::NAME], "web");
        // Neither selector selects the other's pods.
        let stable_pods = s.template.metadata.unwrap().labels.unwrap();
        let selects = |sel: &BTreeMap<String, String>, pods: &BTreeMap<String, String>| {
            sel.iter().all(|(k, v)| pods.get(k) == Some(v))
        };
        let (ss, cs) = (
            s.selector.match_labels.unwrap(),
            c.selector.match_labels.unwrap(),
        );
        assert!(selects(&ss, &stable_pods) && selects(&cs, &pods));
        assert!(!selects(&ss, &pods) && !selects(&cs, &stable_pods));
        assert_eq!(s.template.spec, c.template.spec, "the same pods");
    }

    #[test]
    fn the_canary_service_is_cluster_internal_and_selects_the_canary() {
        let b = bundle(serde_json::json!({
            "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            "ports": [{"name": "http", "containerPort": 8080, "servicePort": 80, "nodePort": 30080}],
        }));
        let s = canary_service(&b).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("web-canary"));
        let spec = s.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.selector, Some(canary_selector_labels("web")));
        assert_eq!(spec.external_traffic_policy, None);
        assert_eq!(spec.ports.unwrap()[0].node_port, None);
    }

    #[test]
    fn the_route_splits_by_weight_and_the_weight_reads_back() {
        let b = bundle(serde_json::json!({}));
        let route = weighted_route(&b, 30).unwrap().unwrap();
        let refs = &route.data["spec"]["rules"][0]["backendRefs"];
        assert_eq!(refs[0]["name"], "web");
        assert_eq!(refs[0]["weight"], 70);
        assert_eq!(refs[1]["name"], "web-canary");
        assert_eq!(refs[1]["weight"], 30);
        assert_eq!(refs[1]["port"], 80);
        assert_eq!(route_weight(&route, "web"), 30);
        assert_eq!(route_weight(&http_route(&b).unwrap().unwrap(), "web"), 0);
        let without_gateway = bundle(serde_json::json!({"http": {"ingress": {}}}));
        assert!(weighted_route(&without_gateway, 30).unwrap().is_none());
    }

    #[test]
    fn only_a_change_of_the_pods_is_a_new_pod_revision() {
        let base = pod_revision(&bundle(serde_json::json!({}))).unwrap();
        assert_eq!(base.len(), 10);
        for same in [
            serde_json::json!({"replicas": 9}),
            serde_json::json!({"service": {"type": "NodePort"}}),
            serde_json::json!({"http": {"gateway": {"name": "other"}}}),
        ] {
            assert_eq!(pod_revision(&bundle(same.clone())).unwrap(), base, "{same}");
        }
        for new in [
            serde_json::json!({"image": "web:2"}),
            serde_json::json!({"env": [{"name": "A", "value": "1"}]}),
        ] {
            assert_ne!(pod_revision(&bundle(new.clone())).unwrap(), base, "{new}");
        }
    }
}

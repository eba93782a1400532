use super::*;
use crate::api::{AppBundleSpec, PodTemplateSpec as BundlePod, ServiceSpec};
use proptest::prelude::*;

fn bundle(spec: AppBundleSpec) -> AppBundle {
    let mut b = AppBundle::new("frontend", spec);
    b.metadata.namespace = Some("guestbook".into());
    b.metadata.uid = Some("0b5a3c1e-0000-4000-8000-000000000001".into());
    b
}

fn spec(image: &str) -> AppBundleSpec {
    serde_json::from_value(serde_json::json!({
        "image": image,
        "ports": [{"name": "http", "containerPort": 80}],
    }))
    .unwrap()
}

#[test]
fn deployment_carries_the_container_as_declared() {
    let mut s = spec("gb-frontend:v5");
    s.replicas = Some(3);
    s.env = Some(vec![
        serde_json::from_value(serde_json::json!({"name": "GET_HOSTS_FROM", "value": "dns"}))
            .unwrap(),
    ]);
    s.resources = Some(
        serde_json::from_value(serde_json::json!({"requests": {"cpu": "100m", "memory": "100Mi"}}))
            .unwrap(),
    );
    let d = deployment(&bundle(s)).unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "frontend");
    assert_eq!(c.image.as_deref(), Some("gb-frontend:v5"));
    assert_eq!(c.env.as_ref().unwrap()[0].value.as_deref(), Some("dns"));
    let requests = c.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "100m");
    let ports = c.ports.as_ref().unwrap();
    assert_eq!(
        (
            ports[0].name.as_deref(),
            ports[0].container_port,
            ports[0].protocol.as_deref()
        ),
        (Some("http"), 80, Some("TCP"))
    );
    // Fields kubundle does not set are left to the API server's defaults (and so not owned).
    assert!(spec.strategy.is_none());
    assert!(pod.restart_policy.is_none());
}

#[test]
fn children_are_controlled_by_the_bundle() {
    let b = bundle(spec("nginx"));
    for owners in [
        deployment(&b).unwrap().metadata.owner_references.unwrap(),
        service(&b).unwrap().metadata.owner_references.unwrap(),
    ] {
        assert_eq!(owners.len(), 1);
        let o = &owners[0];
        assert_eq!(
            (o.api_version.as_str(), o.kind.as_str(), o.name.as_str()),
            ("kubundle.dev/v1alpha1", "AppBundle", "frontend")
        );
        assert_eq!(o.uid, "0b5a3c1e-0000-4000-8000-000000000001");
        assert_eq!(o.controller, Some(true));
        assert_eq!(o.block_owner_deletion, Some(true));
    }
}

#[test]
fn service_ports_default_to_the_container_port() {
    let mut s = spec("redis");
    s.ports = serde_json::from_value(serde_json::json!([
        {"name": "redis", "containerPort": 6379},
        {"name": "metrics", "containerPort": 9121, "servicePort": 80, "protocol": "TCP"},
    ]))
    .unwrap();
    let svc = service(&bundle(s)).unwrap().spec.unwrap();
    let ports = svc.ports.unwrap();
    assert_eq!(ports[0].port, 6379);
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(6379)));
    assert_eq!(ports[1].port, 80);
    assert_eq!(ports[1].target_port, Some(IntOrString::Int(9121)));
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc.selector.unwrap(), selector_labels("frontend"));
}

#[test]
fn headless_is_a_clusterip_service_without_a_cluster_ip() {
    let mut s = spec("redis");
    s.service = Some(ServiceSpec {
        type_: Some("Headless".into()),
        ..ServiceSpec::default()
    });
    let svc = service(&bundle(s)).unwrap().spec.unwrap();
    assert_eq!(svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(svc.cluster_ip.as_deref(), Some("None"));
}

#[test]
fn load_balancer_settings_apply_only_where_they_mean_something() {
    let mut s = spec("nginx");
    s.ports[0].node_port = Some(30080);
    s.service = Some(ServiceSpec {
        type_: Some("LoadBalancer".into()),
        annotations: Some(BTreeMap::from([(
            "cloud.google.com/load-balancer-type".into(),
            "Internal".into(),
        )])),
        load_balancer_source_ranges: Some(vec!["10.0.0.0/8".into()]),
        external_traffic_policy: Some("Local".into()),
        ..ServiceSpec::default()
    });
    let b = bundle(s.clone());
    let svc = service(&b).unwrap();
    assert_eq!(
        svc.metadata.annotations.unwrap()["cloud.google.com/load-balancer-type"],
        "Internal"
    );
    let sp = svc.spec.unwrap();
    assert_eq!(sp.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(sp.ports.unwrap()[0].node_port, Some(30080));
    assert_eq!(sp.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        sp.load_balancer_source_ranges.unwrap(),
        vec!["10.0.0.0/8".to_string()]
    );

    s.service.as_mut().unwrap().type_ = Some("ClusterIP".into());
    let sp = service(&bundle(s)).unwrap().spec.unwrap();
    assert_eq!(sp.ports.unwrap()[0].node_port, None);
    assert_eq!(sp.external_traffic_policy, None);
    assert_eq!(sp.load_balancer_source_ranges, None);
}

#[test]
fn kubundle_labels_win_over_user_labels() {
    let mut s = spec("nginx");
    s.pod_template = Some(BundlePod {
        labels: Some(BTreeMap::from([
            ("team".into(), "web".into()),
            (labels::MANAGED_BY.into(), "someone-else".into()),
        ])),
        ..BundlePod::default()
    });
    let d = deployment(&bundle(s)).unwrap();
    let pod_labels = d.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(pod_labels["team"], "web");
    assert_eq!(pod_labels[labels::MANAGED_BY], "kubundle");
}

#[test]
fn a_bundle_without_uid_is_not_rendered() {
    let mut b = bundle(spec("nginx"));
    b.metadata.uid = None;
    assert_eq!(
        deployment(&b).unwrap_err(),
        RenderError::MissingMetadata("metadata.uid")
    );
}

#[test]
fn selector_string_matches_the_selector_labels() {
    assert_eq!(
        selector_string("web"),
        "app.kubernetes.io/instance=web,app.kubernetes.io/managed-by=kubundle,app.kubernetes.io/name=web"
    );
}

// ---- properties

/// A DNS-1035 label: what the CRD admits as an AppBundle name.
#[test]
fn the_child_set_follows_the_optional_sections() {
    let kinds = |b: &AppBundle| {
        children(b, None)
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect::<Vec<_>>()
    };
    let plain = bundle(spec("web:1"));
    assert_eq!(kinds(&plain), [ChildKind::Deployment, ChildKind::Service]);
    let mut s = spec("web:1");
    s.autoscaling = Some(serde_json::from_value(serde_json::json!({"maxReplicas": 5})).unwrap());
    s.disruption_budget =
        Some(serde_json::from_value(serde_json::json!({"maxUnavailable": "25%"})).unwrap());
    let full = bundle(s);
    assert_eq!(
        kinds(&full),
        [
            ChildKind::Deployment,
            ChildKind::Service,
            ChildKind::HorizontalPodAutoscaler,
            ChildKind::PodDisruptionBudget
        ]
    );
    for r in children(&full, None).unwrap() {
        assert_eq!(
            r.object.metadata.name.as_deref(),
            Some("frontend"),
            "{:?}",
            r.kind
        );
        let owner = &r.object.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("AppBundle", Some(true))
        );
        let labels = r.object.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[labels::MANAGED_BY], "kubundle");
        assert_eq!(labels[labels::INSTANCE], "frontend");
        let types = r.object.types.as_ref().unwrap();
        assert_eq!(types.kind, r.kind.name());
    }
    assert!(!ChildKind::Deployment.optional() && !ChildKind::Service.optional());
    assert!(
        ChildKind::HorizontalPodAutoscaler.optional() && ChildKind::PodDisruptionBudget.optional()
    );
}

#[test]
fn autoscaling_leaves_the_replicas_to_the_autoscaler() {
    let mut s = spec("web:1");
    s.replicas = Some(4);
    assert_eq!(
        deployment(&bundle(s.clone()))
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(4)
    );
    s.autoscaling = Some(
        serde_json::from_value(serde_json::json!({"minReplicas": 2, "maxReplicas": 6, "targetMemoryUtilizationPercentage": 75}))
            .unwrap(),
    );
    let b = bundle(s);
    assert_eq!(deployment(&b).unwrap().spec.unwrap().replicas, None);
    let hpa = autoscaler(&b).unwrap().unwrap().spec.unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 6));
    assert_eq!(hpa.scale_target_ref.kind, "Deployment");
    assert_eq!(hpa.scale_target_ref.name, "frontend");
    let metrics: Vec<_> = hpa
        .metrics
        .unwrap()
        .into_iter()
        .map(|m| {
            let r = m.resource.unwrap();
            (r.name, r.target.average_utilization)
        })
        .collect();
    assert_eq!(
        metrics,
        [("memory".to_string(), Some(75))],
        "memory only: no CPU default"
    );
    let mut s = spec("web:1");
    s.autoscaling = Some(serde_json::from_value(serde_json::json!({"maxReplicas": 3})).unwrap());
    let hpa = autoscaler(&bundle(s)).unwrap().unwrap().spec.unwrap();
    assert_eq!(hpa.min_replicas, Some(1));
    let cpu = hpa.metrics.unwrap().remove(0).resource.unwrap();
    assert_eq!(
        (cpu.name.as_str(), cpu.target.average_utilization),
        ("cpu", Some(DEFAULT_CPU_TARGET))
    );
}

#[test]
fn the_disruption_budget_selects_the_pods() {
    let mut s = spec("web:1");
    s.disruption_budget =
        Some(serde_json::from_value(serde_json::json!({"minAvailable": "50%"})).unwrap());
    let b = bundle(s);
    let pdb = disruption_budget(&b).unwrap().unwrap().spec.unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::String("50%".into())));
    assert_eq!(pdb.max_unavailable, None);
    assert_eq!(
        pdb.selector.unwrap().match_labels.unwrap(),
        selector_labels("frontend")
    );
    assert!(disruption_budget(&bundle(spec("web:1"))).unwrap().is_none());
}

fn bundle_name() -> impl Strategy<Value = String> {
    "[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
}

fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map("[a-z]{1,10}(/[a-z]{1,10})?", "[a-z0-9]{0,10}", 0..5)
}

fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && (v.is_empty()
            || (v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

fn ports() -> impl Strategy<Value = Vec<PortSpec>> {
    prop::collection::btree_set(1..=65535i32, 1..8).prop_map(|numbers| {
        numbers
            .into_iter()
            .enumerate()
            .map(|(i, n)| PortSpec {
                name: Some(format!("p{i}")),
                container_port: n,
                service_port: (n % 2 == 0).then_some(65536 - n),
                protocol: None,
                node_port: None,
                app_protocol: None,
            })
            .collect()
    })
}

proptest! {
    /// The selector depends on the name alone: labels, image and replicas never change it.
    #[test]
    fn selector_never_changes(name in bundle_name(), labels_a in label_map(), labels_b in label_map(),
                              image_a in "[a-z]{1,8}:v[0-9]", image_b in "[a-z]{1,8}:v[0-9]",
                              replicas_a in 0..100i32, replicas_b in 0..100i32) {
        let make = |labels: BTreeMap<String, String>, image: &str, replicas: i32| {
            let mut s = spec(image);
            s.replicas = Some(replicas);
            s.pod_template = Some(BundlePod { labels: Some(labels), ..BundlePod::default() });
            let mut b = bundle(s);
            b.metadata.name = Some(name.clone());
            b
        };
        let a = make(labels_a, &image_a, replicas_a);
        let b = make(labels_b, &image_b, replicas_b);
        let sel = |b: &AppBundle| deployment(b).unwrap().spec.unwrap().selector;
        prop_assert_eq!(sel(&a), sel(&b));
        prop_assert_eq!(service(&a).unwrap().spec.unwrap().selector, service(&b).unwrap().spec.unwrap().selector);
        // and the pods always match their own selector
        let d = deployment(&a).unwrap().spec.unwrap();
        let pod_labels = d.template.metadata.unwrap().labels.unwrap();
        for (k, v) in d.selector.match_labels.unwrap() {
            prop_assert_eq!(pod_labels.get(&k), Some(&v));
        }
    }

    /// Every name and label value kubundle renders is valid for the API server.
    #[test]
    fn rendered_names_and_label_values_are_valid(name in bundle_name(), user in label_map()) {
        let mut s = spec("nginx");
        s.pod_template = Some(BundlePod { labels: Some(user), ..BundlePod::default() });
        let mut b = bundle(s);
        b.metadata.name = Some(name.clone());
        let d = deployment(&b).unwrap();
        let svc = service(&b).unwrap();
        prop_assert_eq!(d.metadata.name.as_deref(), Some(name.as_str()));
        prop_assert_eq!(svc.metadata.name.as_deref(), Some(name.as_str()));
        prop_assert!(name.len() <= 63);
        let pod = d.spec.unwrap().template;
        prop_assert!(pod.spec.unwrap().containers[0].name.len() <= 63);
        for map in [d.metadata.labels.unwrap(), svc.metadata.labels.unwrap(), pod.metadata.unwrap().labels.unwrap()] {
            for (k, v) in &map {
                prop_assert!(is_label_value(v), "label {}={:?} is not a valid label value", k, v);
            }
        }
    }

    /// Ports map one-to-one: one container port and one Service port per declared port, in order,
    /// each Service port targeting its container port.
    #[test]
    fn ports_map_one_to_one(ports in ports()) {
        let mut s = spec("nginx");
        s.ports = ports.clone();
        let b = bundle(s);
        let cports = deployment(&b).unwrap().spec.unwrap().template.spec.unwrap().containers[0].ports.clone().unwrap();
        let sports = service(&b).unwrap().spec.unwrap().ports.unwrap();
        prop_assert_eq!(cports.len(), ports.len());
        prop_assert_eq!(sports.len(), ports.len());
        for ((p, c), s) in ports.iter().zip(&cports).zip(&sports) {
            prop_assert_eq!(c.container_port, p.container_port);
            prop_assert_eq!(&c.name, &p.name);
            prop_assert_eq!(&s.name, &p.name);
            prop_assert_eq!(s.port, p.service_port.unwrap_or(p.container_port));
            prop_assert_eq!(s.target_port.clone(), Some(IntOrString::Int(p.container_port)));
        }
    }
}

#[test]
fn http_renders_a_route_to_the_gateway_or_an_ingress() {
    let with_http = |http: serde_json::Value| {
        let mut s = spec("web:1");
        s.ports[0].service_port = Some(8080);
        s.http = Some(serde_json::from_value(http).unwrap());
        bundle(s)
    };
    let b = with_http(
        serde_json::json!({"hostnames": ["a.example.com"], "path": "/api",
        "gateway": {"name": "gw", "namespace": "infra", "sectionName": "https"}}),
    );
    let route = http_route(&b).unwrap().unwrap();
    assert!(ingress(&b).unwrap().is_none());
    let spec = &route.data["spec"];
    assert_eq!(
        spec["parentRefs"][0],
        serde_json::json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw",
            "namespace": "infra", "sectionName": "https"})
    );
    assert_eq!(spec["hostnames"], serde_json::json!(["a.example.com"]));
    assert_eq!(spec["rules"][0]["matches"][0]["path"]["value"], "/api");
    assert_eq!(spec["rules"][0]["backendRefs"][0]["port"], 8080);
    assert_eq!(route.types.as_ref().unwrap().kind, "HTTPRoute");

    let b = with_http(serde_json::json!({"ingress": {"className": "gce"}}));
    assert!(http_route(&b).unwrap().is_none());
    // GKE's classes go in the annotation GKE reads (it ignores an Ingress with ingressClassName).
    let gke = ingress(&b).unwrap().unwrap();
    assert_eq!(
        gke.metadata.annotations.as_ref().unwrap()["kubernetes.io/ingress.class"],
        "gce"
    );
    let spec = gke.spec.unwrap();
    assert_eq!(spec.ingress_class_name, None);
    let other = with_http(serde_json::json!({"ingress": {"className": "traefik"}}));
    let other = ingress(&other).unwrap().unwrap();
    assert_eq!(
        other.spec.unwrap().ingress_class_name.as_deref(),
        Some("traefik")
    );
    assert!(
        !other
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("kubernetes.io/ingress.class")
    );
    let rules = spec.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].host, None, "no host names: every host");
    let path = &rules[0].http.as_ref().unwrap().paths[0];
    assert_eq!(path.path.as_deref(), Some("/"));
    let backend = path.backend.service.as_ref().unwrap();
    assert_eq!(
        (backend.name.as_str(), backend.port.as_ref().unwrap().number),
        ("frontend", Some(8080))
    );
    assert_eq!(spec.tls, None);

    let b = with_http(
        serde_json::json!({"hostnames": ["a.example.com", "b.example.com"],
        "ingress": {"tlsSecretName": "certs"}}),
    );
    let spec = ingress(&b).unwrap().unwrap().spec.unwrap();
    assert_eq!(spec.rules.unwrap().len(), 2);
    let tls = &spec.tls.unwrap()[0];
    assert_eq!(tls.secret_name.as_deref(), Some("certs"));
    assert_eq!(tls.hosts.as_ref().unwrap().len(), 2);
}

/// The pod spec of `b`'s Deployment.
fn pod_spec(b: &AppBundle) -> k8s_openapi::api::core::v1::PodSpec {
    deployment(b).unwrap().spec.unwrap().template.spec.unwrap()
}

#[test]
fn sidecars_run_as_native_sidecars_before_the_init_containers() {
    let mut s: AppBundleSpec = serde_json::from_value(serde_json::json!({
        "image": "app:1",
        "ports": [{"containerPort": 80}],
        "sidecars": [
            {"name": "proxy", "image": "cloud-sql-proxy:2"},
            {"name": "logs", "image": "fluent-bit:3", "restartPolicy": "Always",
             "securityContext": {"runAsUser": 7}}
        ],
        "initContainers": [{"name": "migrate", "image": "app:1", "args": ["migrate"]}],
    }))
    .unwrap();
    s.pod_template = Some(BundlePod {
        container_security_context: Some(
            serde_json::from_value(serde_json::json!({"allowPrivilegeEscalation": false})).unwrap(),
        ),
        ..BundlePod::default()
    });
    let pod = pod_spec(&bundle(s));
    let init = pod.init_containers.unwrap();
    let summary: Vec<(&str, Option<&str>)> = init
        .iter()
        .map(|c| (c.name.as_str(), c.restart_policy.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("proxy", Some("Always")),
            ("logs", Some("Always")),
            ("migrate", None)
        ]
    );
    // the main container's security context, where a container has none of its own
    let escalation = |c: &Container| {
        c.security_context
            .as_ref()
            .and_then(|s| s.allow_privilege_escalation)
    };
    assert_eq!(escalation(&init[0]), Some(false));
    assert_eq!(escalation(&init[2]), Some(false));
    assert_eq!(
        init[1].security_context.as_ref().unwrap().run_as_user,
        Some(7)
    );
    assert_eq!(escalation(&init[1]), None);
    assert_eq!(pod.containers.len(), 1);
    assert_eq!(pod.containers[0].name, "frontend");
}

#[test]
fn without_sidecars_or_init_containers_the_pod_has_no_init_containers() {
    let pod = pod_spec(&bundle(spec("nginx")));
    assert!(pod.init_containers.is_none());
}

/// A spec with every optional section, for the pinned rendering below.
fn full_spec() -> AppBundleSpec {
    serde_json::from_value(serde_json::json!({
        "image": "web:1",
        "replicas": 3,
        "ports": [{"name": "http", "containerPort": 8080, "servicePort": 80}],
        "env": [{"name": "A", "value": "1"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
        "resources": {"requests": {"cpu": "100m"}},
        "sidecars": [{"name": "proxy", "image": "proxy:1"}],
        "initContainers": [{"name": "migrate", "image": "migrate:1"}],
        "disruptionBudget": {"maxUnavailable": 1},
        "http": {"hostnames": ["web.example.com"], "gateway": {"name": "gw"}},
        "podTemplate": {"labels": {"team": "a"}, "serviceAccountName": "web"},
    }))
    .unwrap()
}

/// The rendering of AppBundles without `spec.rollout` is byte for byte what kubundle rendered
/// before canaries existed (these hashes were taken from that version, 895566f): an upgrade
/// writes no child and rolls no pod.
#[test]
fn without_a_canary_the_children_render_exactly_as_before_canaries() {
    let hashes = |b: &AppBundle| {
        children(b, Some("cafe"))
            .unwrap()
            .iter()
            .map(|r| crate::hash::fnv_hex(&serde_json::to_vec(&r.object).unwrap()))
            .collect::<Vec<_>>()
    };
    let b = bundle(full_spec());
    assert_eq!(hashes(&b), PINNED);
    // spec.rollout set, before any canary ran (no status.rollout): the same children.
    let mut with_rollout = full_spec();
    with_rollout.rollout = Some(
        serde_json::from_value(serde_json::json!({"canary": {"steps": [{"weight": 10}]}})).unwrap(),
    );
    assert_eq!(hashes(&bundle(with_rollout)), PINNED);
}

const PINNED: [&str; 4] = [
    "72b42756e0692096",
    "8083692f2d0fcd7e",
    "72942c808cddfe34",
    "c6226c4ded32ebd5",
];

/// During a canary: the stable Deployment runs the stable spec's pods with the AppBundle's
/// replicas, the route splits by the weight, the canary's Deployment (unless frozen) and Service
/// come last.
#[test]
fn a_canary_renders_the_stable_pods_the_split_and_its_own_children() {
    let mut next = full_spec();
    next.image = "web:2".into();
    next.replicas = Some(5);
    let b = bundle(next);
    let stable = full_spec();
    let plan = canary::CanaryChildren {
        stable: Some(&stable),
        weight: 20,
        replicas: 1,
        frozen: false,
    };
    let set = children_with(&b, None, Some(&plan)).unwrap();
    let names: Vec<(ChildKind, String)> = set
        .iter()
        .map(|r| (r.kind, r.object.metadata.name.clone().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            (ChildKind::Deployment, "frontend".to_string()),
            (ChildKind::Service, "frontend".into()),
            (ChildKind::PodDisruptionBudget, "frontend".into()),
            (ChildKind::HttpRoute, "frontend".into()),
            (ChildKind::Deployment, "frontend-canary".into()),
            (ChildKind::Service, "frontend-canary".into()),
        ]
    );
    let d = &set[0].object.data["spec"];
    assert_eq!(d["replicas"], 5, "the AppBundle's replicas");
    assert_eq!(d["template"]["spec"]["containers"][0]["image"], "web:1");
    let c = &set[4].object.data["spec"];
    assert_eq!(c["replicas"], 1);
    assert_eq!(c["template"]["spec"]["containers"][0]["image"], "web:2");
    assert_eq!(
        set[3].object.data["spec"]["rules"][0]["backendRefs"][1]["weight"],
        20
    );
    // Frozen: no canary Deployment rendered (it keeps what it runs), its Service stays.
    let frozen = canary::CanaryChildren {
        frozen: true,
        ..plan
    };
    let set = children_with(&b, None, Some(&frozen)).unwrap();
    assert_eq!(set.len(), 5);
    assert_eq!(
        set[4].object.metadata.name.as_deref(),
        Some("frontend-canary")
    );
    assert_eq!(set[4].kind, ChildKind::Service);
}

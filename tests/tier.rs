//! The optional children of a tier, end to end on the local cluster with the operator tests/run.sh
//! started: a PodDisruptionBudget (`spec.disruptionBudget`) and a HorizontalPodAutoscaler
//! (`spec.autoscaling`). Each is created, updated, repaired after drift, deleted when its section
//! goes, collected with the AppBundle, and never takes over an object it does not own; the
//! autoscaler takes the replicas over from kubundle without a dip and without a fight.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DeleteParams;
use kube::{Api, Client, ResourceExt};
use kubundle::api::AppBundle;
use kubundle::reconcile::children::handover::HANDOVER_MANAGER;

use support::*;

const MINUTE: Duration = Duration::from_secs(60);

fn bundles(client: &Client, ns: &str) -> Api<AppBundle> {
    Api::namespaced(client.clone(), ns)
}

fn bundle_yaml(name: &str, replicas: i32, extra: &str) -> String {
    format!(
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {name}}}\n\
         spec:\n  image: nginx:1.27\n  replicas: {replicas}\n  ports: [{{containerPort: 80}}]\n\
         {extra}"
    )
}

/// The managers that own `spec.replicas` of a Deployment, with each entry's time.
fn replicas_owners(d: &Deployment) -> Vec<(String, String)> {
    d.managed_fields()
        .iter()
        .filter(|e| {
            e.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .is_some_and(|s| s.get("f:replicas").is_some())
        })
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits until the object `name` is gone or being deleted.
async fn deleted<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(timeout, &format!("{name} deleted"), || async {
        match api.get_opt(name).await.map_err(|e| e.to_string())? {
            Some(o) if o.meta().deletion_timestamp.is_none() => Err("still there".to_string()),
            _ => Ok(()),
        }
    })
    .await
}

/// kubundle's own managed-fields entry (its last apply): its time and the fields it holds.
fn kubundle_entry(obj: &impl ResourceExt) -> Option<String> {
    obj.managed_fields()
        .iter()
        .find(|e| {
            e.manager.as_deref() == Some("kubundle") && e.operation.as_deref() == Some("Apply")
        })
        .map(|e| serde_json::to_string(&e).unwrap())
}

/// A disruption budget: created, updated, repaired, deleted with its section, collected with the
/// AppBundle; an unowned budget of the same name is never touched.
#[tokio::test]
async fn a_disruption_budget_follows_its_section() {
    let client = client().await;
    let ns = create_namespace(&client, "pdb").await;
    let api = bundles(&client, &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    apply_yaml(
        &ns,
        &bundle_yaml("web", 3, "  disruptionBudget: {minAvailable: 2}\n"),
    );
    wait_bundle(&api, "web", MINUTE, "Ready", is_ready).await;
    let pdb = pdbs.get("web").await.unwrap();
    let spec = pdb.spec.clone().unwrap();
    assert_eq!(serde_json::to_value(&spec.min_available).unwrap(), 2);
    assert_eq!(
        spec.selector.unwrap().match_labels.unwrap()["app.kubernetes.io/instance"],
        "web"
    );
    assert!(
        pdb.owner_references()
            .iter()
            .any(|o| o.kind == "AppBundle" && o.controller == Some(true))
    );

    // Updated with the spec.
    apply_yaml(
        &ns,
        &bundle_yaml("web", 3, "  disruptionBudget: {maxUnavailable: 50%}\n"),
    );
    eventually(MINUTE, "maxUnavailable 50%", || async {
        let spec = pdbs
            .get("web")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .unwrap();
        match (spec.min_available, spec.max_unavailable) {
            (None, Some(m)) if serde_json::to_value(&m).unwrap() == "50%" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Drift is undone.
    run_ok(kubectl(&[
        "patch",
        "pdb",
        "web",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":3}}"#,
    ]));
    eventually(Duration::from_secs(15), "the drift undone", || async {
        let spec = pdbs
            .get("web")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .unwrap();
        let m = serde_json::to_value(&spec.max_unavailable).unwrap();
        if m == "50%" {
            Ok(())
        } else {
            Err(m.to_string())
        }
    })
    .await;

    // Deleted when the section goes, with an Event saying so.
    apply_yaml(&ns, &bundle_yaml("web", 3, ""));
    deleted(&pdbs, "web", Duration::from_secs(15)).await;
    let events = run_ok(kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        &ns,
        "-o",
        "jsonpath={.items[*].note}",
    ]));
    assert!(
        events.contains("deleted PodDisruptionBudget web"),
        "{events}"
    );

    // A budget kubundle did not make is never taken over, nor deleted when the section goes.
    run_ok(kubectl(&[
        "create",
        "pdb",
        "other",
        "-n",
        &ns,
        "--selector=app=x",
        "--min-available=1",
    ]));
    apply_yaml(
        &ns,
        &bundle_yaml("other", 2, "  disruptionBudget: {maxUnavailable: 1}\n"),
    );
    wait_bundle(&api, "other", MINUTE, "Stalled NameConflict", |b| {
        condition_of(b, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "NameConflict")
    })
    .await;
    apply_yaml(&ns, &bundle_yaml("other", 2, ""));
    wait_bundle(&api, "other", MINUTE, "Ready without the section", is_ready).await;
    let foreign = pdbs.get("other").await.unwrap();
    assert!(
        kubundle_entry(&foreign).is_none(),
        "kubundle wrote the foreign budget"
    );
    assert!(foreign.metadata.deletion_timestamp.is_none());

    // Collected with the AppBundle.
    apply_yaml(
        &ns,
        &bundle_yaml("gone", 2, "  disruptionBudget: {maxUnavailable: 1}\n"),
    );
    eventually(MINUTE, "the budget of gone", || async {
        pdbs.get_opt("gone")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("missing".to_string())
    })
    .await;
    api.delete("gone", &DeleteParams::foreground())
        .await
        .unwrap();
    deleted(&pdbs, "gone", MINUTE).await;
    delete_namespace(&client, &ns).await;
}

/// Budgets that would block every eviction (and so every node drain and GKE upgrade) are refused
/// at apply time with a message naming the field.
#[tokio::test]
async fn budgets_that_block_every_eviction_are_refused() {
    let client = client().await;
    let ns = create_namespace(&client, "pdb-refused").await;
    for (replicas, budget, says) in [
        (
            2,
            "{minAvailable: 2}",
            "minAvailable must leave at least one pod",
        ),
        (
            1,
            "{minAvailable: 50%}",
            "minAvailable must leave at least one pod",
        ),
        (3, "{minAvailable: 100%}", "100% would block every eviction"),
        // At zero pods too: scaled up again, the budget would block every eviction.
        (0, "{minAvailable: 100%}", "100% would block every eviction"),
        (0, "{maxUnavailable: 0}", "0 would block every eviction"),
        (3, "{maxUnavailable: 0}", "0 would block every eviction"),
        (3, "{maxUnavailable: 0%}", "0 would block every eviction"),
        (
            3,
            "{minAvailable: 1, maxUnavailable: 1}",
            "exactly one of minAvailable and maxUnavailable",
        ),
        (
            3,
            "{maxUnavailable: 150%}",
            "spec.disruptionBudget.maxUnavailable",
        ),
    ] {
        let yaml = bundle_yaml("web", replicas, &format!("  disruptionBudget: {budget}\n"));
        let out = kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "admitted: replicas {replicas}, {budget}"
        );
        assert!(
            stderr.contains(says),
            "replicas {replicas}, {budget}: {stderr}"
        );
    }
    // At zero pods the fewest-pods rule is waived (nothing to evict).
    let out = kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-", "--dry-run=server"],
        &bundle_yaml("web", 0, "  disruptionBudget: {minAvailable: 2}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With autoscaling, the fewest pods is minReplicas.
    let yaml = bundle_yaml(
        "web",
        1,
        "  autoscaling: {minReplicas: 3, maxReplicas: 6}\n  disruptionBudget: {minAvailable: 2}\n",
    );
    let out = kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    delete_namespace(&client, &ns).await;
}

/// Autoscaling: the HorizontalPodAutoscaler is created for the Deployment; turning it on hands the
/// replicas over without a dip; the autoscaler scaling the Deployment meets no kubundle write and
/// changes nothing in the AppBundle (no GitOps drift); `kubectl scale` says why it cannot; the
/// status shows the autoscaler's counts; removing the section deletes the autoscaler and gives the
/// replicas back to spec.replicas.
#[tokio::test]
async fn the_autoscaler_takes_the_replicas_over_without_a_fight() {
    let client = client().await;
    let ns = create_namespace(&client, "hpa").await;
    let api = bundles(&client, &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let resources = "  resources: {requests: {cpu: 100m, memory: 64Mi}}\n";
    apply_yaml(&ns, &bundle_yaml("web", 3, resources));
    wait_bundle(&api, "web", MINUTE, "Ready with 3", is_ready).await;

    // Turn autoscaling on (2 to 5): the Deployment must keep its 3 pods all along.
    let autoscaled = format!(
        "{resources}  autoscaling: {{minReplicas: 2, maxReplicas: 5, targetCPUUtilizationPercentage: 70}}\n"
    );
    let watch_from = Instant::now();
    apply_yaml(&ns, &bundle_yaml("web", 3, &autoscaled));
    let hpa = eventually(MINUTE, "the autoscaler", || async {
        hpas.get_opt("web")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("missing".to_string())
    })
    .await;
    let spec = hpa.spec.unwrap();
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 5));
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(spec.scale_target_ref.name, "web");
    let metric = spec.metrics.unwrap().remove(0).resource.unwrap();
    assert_eq!(
        (metric.name.as_str(), metric.target.average_utilization),
        ("cpu", Some(70))
    );
    let mut lowest = i32::MAX;
    while watch_from.elapsed() < Duration::from_secs(8) {
        let d = deployments.get("web").await.unwrap();
        lowest = lowest.min(d.spec.unwrap().replicas.unwrap_or(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        lowest, 3,
        "the Deployment dipped while the autoscaler took over"
    );
    let d = deployments.get("web").await.unwrap();
    let owners = replicas_owners(&d);
    assert!(
        !owners.iter().any(|(m, _)| m == "kubundle"),
        "kubundle still owns spec.replicas: {owners:?}"
    );
    assert!(
        owners.iter().any(|(m, _)| m == HANDOVER_MANAGER),
        "{owners:?}"
    );

    // The autoscaler (played by a scale of the Deployment, as the HPA controller does it)
    // changes the replicas: no kubundle write, no change to the AppBundle.
    let generation = api.get("web").await.unwrap().metadata.generation;
    let before = kubundle_entry(&deployments.get("web").await.unwrap());
    run_ok(kubectl(&[
        "scale",
        "deployment",
        "web",
        "-n",
        &ns,
        "--replicas=4",
    ]));
    wait_bundle(&api, "web", MINUTE, "Ready with 4 pods", |b| ready_at(b, 4)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(
        d.spec.as_ref().unwrap().replicas,
        Some(4),
        "kubundle fought the scale"
    );
    assert_eq!(kubundle_entry(&d), before, "kubundle wrote the Deployment");
    let b = api.get("web").await.unwrap();
    assert_eq!(
        b.metadata.generation, generation,
        "the AppBundle's spec changed (GitOps drift)"
    );
    let autoscaling = b.status.unwrap().autoscaling.expect("status.autoscaling");
    assert!(autoscaling.desired_replicas.is_some(), "{autoscaling:?}");

    // kubectl scale on the AppBundle says why it cannot.
    let out = run(kubectl(&[
        "scale",
        "appbundle",
        "web",
        "-n",
        &ns,
        "--replicas=7",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("cannot be set or changed while spec.autoscaling is set"),
        "{stderr}"
    );

    // Drift of the autoscaler is undone.
    run_ok(kubectl(&[
        "patch",
        "hpa",
        "web",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"maxReplicas":9}}"#,
    ]));
    eventually(Duration::from_secs(15), "maxReplicas back to 5", || async {
        let max = hpas
            .get("web")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .unwrap()
            .max_replicas;
        if max == 5 {
            Ok(())
        } else {
            Err(max.to_string())
        }
    })
    .await;

    // Autoscaling off: the autoscaler is deleted and spec.replicas rules again.
    apply_yaml(&ns, &bundle_yaml("web", 3, resources));
    deleted(&hpas, "web", Duration::from_secs(15)).await;
    wait_bundle(&api, "web", MINUTE, "Ready with 3 again", |b| {
        ready_at(b, 3)
    })
    .await;
    let d = deployments.get("web").await.unwrap();
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    assert!(replicas_owners(&d).iter().any(|(m, _)| m == "kubundle"));
    delete_namespace(&client, &ns).await;
}

/// An AppBundle created with autoscaling starts at the autoscaler's minimum, and an unowned
/// autoscaler of its name is never taken over.
#[tokio::test]
async fn an_autoscaled_bundle_starts_at_the_minimum_and_takes_over_nothing() {
    let client = client().await;
    let ns = create_namespace(&client, "hpa-new").await;
    let api = bundles(&client, &ns);
    apply_yaml(
        &ns,
        &bundle_yaml(
            "web",
            1,
            "  autoscaling: {minReplicas: 2, maxReplicas: 4}\n",
        ),
    );
    // The autoscaler controller enforces the minimum even without metrics.
    wait_bundle(
        &api,
        "web",
        Duration::from_secs(90),
        "Ready with 2 pods",
        |b| ready_at(b, 2),
    )
    .await;

    run_ok(kubectl(&[
        "create",
        "deployment",
        "theirs",
        "-n",
        &ns,
        "--image=nginx:1.27",
    ]));
    run_ok(kubectl(&[
        "autoscale",
        "deployment",
        "theirs",
        "-n",
        &ns,
        "--min=1",
        "--max=2",
        "--name=other",
    ]));
    apply_yaml(
        &ns,
        &bundle_yaml("other", 1, "  autoscaling: {maxReplicas: 3}\n"),
    );
    wait_bundle(&api, "other", MINUTE, "Stalled NameConflict", |b| {
        condition_of(b, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "NameConflict")
    })
    .await;
    let theirs: HorizontalPodAutoscaler = Api::namespaced(client.clone(), &ns)
        .get("other")
        .await
        .unwrap();
    assert!(kubundle_entry(&theirs).is_none());
    assert_eq!(theirs.spec.unwrap().scale_target_ref.name, "theirs");
    delete_namespace(&client, &ns).await;
}

/// A tier scaled to 0 pods (`replicas: 0`) that turns to autoscaling gets the autoscaler's
/// minimum: an autoscaler that finds its Deployment at 0 is off (ScalingDisabled) and would never
/// start a pod. (Found by the chaos soak: before, the Deployment stayed at 0 and the AppBundle
/// said RollingOut, 0 of 1 pods, for good.)
#[tokio::test]
async fn a_tier_at_zero_pods_that_turns_to_autoscaling_starts_at_the_minimum() {
    let client = client().await;
    let ns = create_namespace(&client, "hpa-zero").await;
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle_yaml("web", 0, ""));
    wait_bundle(&api, "web", MINUTE, "Ready with 0 pods", |b| ready_at(b, 0)).await;
    apply_yaml(
        &ns,
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: web}\n\
         spec:\n  image: nginx:1.27\n  ports: [{containerPort: 80}]\n  \
         autoscaling: {minReplicas: 2, maxReplicas: 4}\n",
    );
    wait_bundle(
        &api,
        "web",
        Duration::from_secs(90),
        "Ready with 2 pods",
        |b| ready_at(b, 2),
    )
    .await;
    delete_namespace(&client, &ns).await;
}

/// Writes an HTTPRoute's status as a Gateway controller does: its Accepted condition for `gw`.
fn gateway_reports(ns: &str, accepted: bool, reason: &str, message: &str) {
    let status = serde_json::json!({"status": {"parents": [{
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
        "controllerName": "example.com/gateway-controller",
        "conditions": [{
            "type": "Accepted",
            "status": if accepted { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }],
    }]}});
    run_ok(kubectl(&[
        "patch",
        "httproute",
        "web",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        &format!("-p={status}"),
    ]));
}

/// HTTP routing: an HTTPRoute attached to the named Gateway waits for the Gateway's verdict, shows
/// a rejection in the Gateway's words and the URL once accepted, and is repaired after drift;
/// switching to an Ingress makes the Ingress, which waits for its address, and deletes the route
/// only once the Ingress has one; removing the section deletes the Ingress.
#[tokio::test]
async fn http_routes_and_ingresses_follow_their_section() {
    let client = client().await;
    let ns = create_namespace(&client, "http").await;
    let api = bundles(&client, &ns);
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kubundle::render::ChildKind::HttpRoute.api_resource(),
    );
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(client.clone(), &ns);
    let gateway = "  http: {hostnames: [shop.example.com], path: /shop, gateway: {name: gw}}\n";
    apply_yaml(&ns, &bundle_yaml("web", 2, gateway));
    wait_bundle(&api, "web", MINUTE, "waiting for the Gateway", |b| {
        condition_of(b, "Ready").is_some_and(|c| c.0 == "False" && c.1 == "WaitingForRoute")
    })
    .await;
    let route = routes.get("web").await.unwrap();
    assert_eq!(route.data["spec"]["parentRefs"][0]["name"], "gw");
    assert_eq!(route.data["spec"]["hostnames"][0], "shop.example.com");
    let rule = &route.data["spec"]["rules"][0];
    assert_eq!(rule["matches"][0]["path"]["value"], "/shop");
    assert_eq!(rule["backendRefs"][0]["name"], "web");
    assert_eq!(rule["backendRefs"][0]["port"], 80);

    gateway_reports(
        &ns,
        false,
        "NotAllowedByListeners",
        "no listener allows routes from this namespace",
    );
    let b = wait_bundle(
        &api,
        "web",
        Duration::from_secs(15),
        "RouteNotAccepted",
        |b| condition_of(b, "Ready").is_some_and(|c| c.1 == "RouteNotAccepted"),
    )
    .await;
    let (_, _, message) = condition_of(&b, "Ready").unwrap();
    assert!(
        message.contains("NotAllowedByListeners: no listener allows routes from this namespace"),
        "{message}"
    );
    assert_eq!(
        condition_of(&b, "Stalled").unwrap().0,
        "False",
        "the Gateway may change its mind"
    );

    gateway_reports(&ns, true, "Accepted", "");
    let b = wait_bundle(
        &api,
        "web",
        Duration::from_secs(15),
        "Ready once accepted",
        is_ready,
    )
    .await;
    let external = b.status.unwrap().address.unwrap().external;
    assert!(
        external.contains(&"http://shop.example.com/shop".to_string()),
        "{external:?}"
    );

    run_ok(kubectl(&[
        "patch",
        "httproute",
        "web",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"hostnames":["evil.example.com"]}}"#,
    ]));
    eventually(Duration::from_secs(15), "the route repaired", || async {
        let r = routes.get("web").await.map_err(|e| e.to_string())?;
        if r.data["spec"]["hostnames"][0] == "shop.example.com" {
            Ok(())
        } else {
            Err(r.data["spec"].to_string())
        }
    })
    .await;

    // From the Gateway to an Ingress: make before break, the route carries the requests until
    // the Ingress has an address.
    let ingress = "  http: {hostnames: [shop.example.com], path: /shop, ingress: {className: nginx, tlsSecretName: shop-tls}}\n";
    apply_yaml(&ns, &bundle_yaml("web", 2, ingress));
    let b = wait_bundle(
        &api,
        "web",
        Duration::from_secs(15),
        "waiting for the Ingress address",
        |b| condition_of(b, "Ready").is_some_and(|c| c.1 == "WaitingForIngressAddress"),
    )
    .await;
    let (_, _, message) = condition_of(&b, "Ready").unwrap();
    assert!(
        message.contains("the HTTPRoute web carries the requests until then"),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        routes.get_opt("web").await.unwrap().is_some(),
        "the route is deleted only once the Ingress routes"
    );
    let spec = ingresses.get("web").await.unwrap().spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let rule = &spec.rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("shop.example.com"));
    let path = &rule.http.as_ref().unwrap().paths[0];
    assert_eq!(
        (path.path.as_deref(), path.path_type.as_str()),
        (Some("/shop"), "Prefix")
    );
    assert_eq!(
        spec.tls.unwrap()[0].secret_name.as_deref(),
        Some("shop-tls")
    );
    run_ok(kubectl(&[
        "patch",
        "ingress",
        "web",
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        r#"-p={"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.7"}]}}}"#,
    ]));
    deleted(&routes, "web", Duration::from_secs(15)).await;
    let b = wait_bundle(
        &api,
        "web",
        Duration::from_secs(15),
        "Ready with an address",
        is_ready,
    )
    .await;
    let external = b.status.unwrap().address.unwrap().external;
    assert!(
        external.contains(&"https://shop.example.com/shop".to_string()),
        "{external:?}"
    );

    apply_yaml(&ns, &bundle_yaml("web", 2, ""));
    deleted(&ingresses, "web", Duration::from_secs(15)).await;
    wait_bundle(
        &api,
        "web",
        Duration::from_secs(15),
        "Ready without routing",
        is_ready,
    )
    .await;
    delete_namespace(&client, &ns).await;
}

/// Every optional child together: each follows a change of its section, the garbage collector
/// takes them all with the AppBundle, and an Ingress or HTTPRoute of the AppBundle's name that
/// kubundle did not make is never taken over.
#[tokio::test]
async fn every_optional_child_is_updated_collected_and_never_taken_over() {
    let client = client().await;
    let ns = create_namespace(&client, "children").await;
    let api = bundles(&client, &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(client.clone(), &ns);
    let routes: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kubundle::render::ChildKind::HttpRoute.api_resource(),
    );
    let sections = |max: i32, unavailable: i32, path: &str, class: &str| {
        format!(
            "  autoscaling: {{maxReplicas: {max}}}\n  disruptionBudget: {{maxUnavailable: {unavailable}}}\n  \
             http: {{hostnames: [a.example.com], path: {path}, ingress: {{className: {class}}}}}\n"
        )
    };
    apply_yaml(&ns, &bundle_yaml("full", 1, &sections(3, 1, "/", "nginx")));
    apply_yaml(
        &ns,
        &bundle_yaml("gw", 1, "  http: {path: /, gateway: {name: gw}}\n"),
    );
    eventually(MINUTE, "all four children", || async {
        let found = (
            hpas.get_opt("full")
                .await
                .map_err(|e| e.to_string())?
                .is_some(),
            pdbs.get_opt("full")
                .await
                .map_err(|e| e.to_string())?
                .is_some(),
            ingresses
                .get_opt("full")
                .await
                .map_err(|e| e.to_string())?
                .is_some(),
            routes
                .get_opt("gw")
                .await
                .map_err(|e| e.to_string())?
                .is_some(),
        );
        if found == (true, true, true, true) {
            Ok(())
        } else {
            Err(format!("{found:?}"))
        }
    })
    .await;

    // Updated with their sections.
    apply_yaml(
        &ns,
        &bundle_yaml("full", 1, &sections(4, 2, "/v2", "traefik")),
    );
    apply_yaml(
        &ns,
        &bundle_yaml(
            "gw",
            1,
            "  http: {path: /v2, gateway: {name: gw, sectionName: https}}\n",
        ),
    );
    eventually(MINUTE, "all four updated", || async {
        let hpa = hpas
            .get("full")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .unwrap();
        let pdb = pdbs
            .get("full")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .unwrap();
        let ing = ingresses
            .get("full")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .unwrap();
        let route = routes.get("gw").await.map_err(|e| e.to_string())?;
        let path = ing.rules.as_ref().unwrap()[0].http.as_ref().unwrap().paths[0]
            .path
            .clone();
        let now = (
            hpa.max_replicas,
            serde_json::to_value(&pdb.max_unavailable).unwrap(),
            ing.ingress_class_name.clone(),
            path,
            route.data["spec"]["rules"][0]["matches"][0]["path"]["value"].clone(),
            route.data["spec"]["parentRefs"][0]["sectionName"].clone(),
        );
        let want = (
            4,
            serde_json::json!(2),
            Some("traefik".to_string()),
            Some("/v2".to_string()),
            serde_json::json!("/v2"),
            serde_json::json!("https"),
        );
        if now == want {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;

    // Drift of the Ingress is undone.
    run_ok(kubectl(&[
        "patch",
        "ingress",
        "full",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"ingressClassName":"evil"}}"#,
    ]));
    eventually(Duration::from_secs(15), "the Ingress repaired", || async {
        let class = ingresses
            .get("full")
            .await
            .map_err(|e| e.to_string())?
            .spec
            .unwrap()
            .ingress_class_name;
        if class.as_deref() == Some("traefik") {
            Ok(())
        } else {
            Err(format!("{class:?}"))
        }
    })
    .await;

    // GKE's class: in the annotation GKE's controller reads, not in ingressClassName (it ignores
    // an Ingress that has one); switching to it leaves no class field behind.
    apply_yaml(&ns, &bundle_yaml("full", 1, &sections(4, 2, "/v2", "gce")));
    eventually(
        Duration::from_secs(15),
        "the GKE class annotation",
        || async {
            let ing = ingresses.get("full").await.map_err(|e| e.to_string())?;
            let annotation = ing
                .annotations()
                .get("kubernetes.io/ingress.class")
                .cloned();
            let field = ing.spec.and_then(|s| s.ingress_class_name);
            if annotation.as_deref() == Some("gce") && field.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "annotation {annotation:?}, ingressClassName {field:?}"
                ))
            }
        },
    )
    .await;

    // Collected with their AppBundles.
    api.delete("full", &DeleteParams::foreground())
        .await
        .unwrap();
    api.delete("gw", &DeleteParams::foreground()).await.unwrap();
    deleted(&hpas, "full", MINUTE).await;
    deleted(&pdbs, "full", MINUTE).await;
    deleted(&ingresses, "full", MINUTE).await;
    deleted(&routes, "gw", MINUTE).await;

    // Never taken over.
    run_ok(kubectl(&[
        "create",
        "ingress",
        "taken",
        "-n",
        &ns,
        "--rule=x.example.com/=theirs:80",
    ]));
    let foreign_route = serde_json::json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "routed"},
        "spec": {"parentRefs": [{"name": "theirs"}], "rules": [{"backendRefs": [{"name": "theirs", "port": 80}]}]},
    });
    apply_yaml(&ns, &foreign_route.to_string());
    apply_yaml(&ns, &bundle_yaml("taken", 1, "  http: {ingress: {}}\n"));
    apply_yaml(
        &ns,
        &bundle_yaml("routed", 1, "  http: {gateway: {name: gw}}\n"),
    );
    for name in ["taken", "routed"] {
        wait_bundle(&api, name, MINUTE, "Stalled NameConflict", |b| {
            condition_of(b, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "NameConflict")
        })
        .await;
    }
    assert!(kubundle_entry(&ingresses.get("taken").await.unwrap()).is_none());
    assert!(kubundle_entry(&routes.get("routed").await.unwrap()).is_none());
    delete_namespace(&client, &ns).await;
}

/// The Deployment's image and generation, read from the API server.
async fn image_and_generation(deployments: &Api<Deployment>, name: &str) -> (String, i64) {
    let d = deployments.get(name).await.unwrap();
    let image = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap_or_default();
    (image, d.metadata.generation.unwrap_or_default())
}

/// Waits for Stalled with `reason`, lets any write that would follow land, and checks that the
/// Deployment is still as it was `before` (its image and generation).
async fn held_back(
    api: &Api<AppBundle>,
    deployments: &Api<Deployment>,
    before: &(String, i64),
    reason: &str,
    blocked: &str,
) -> AppBundle {
    let stalled = wait_bundle(api, "web", MINUTE, &format!("Stalled {reason}"), |b| {
        condition_of(b, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == reason)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        &image_and_generation(deployments, "web").await,
        before,
        "the Deployment changed while the {blocked} was {reason}"
    );
    stalled
}

/// Children change as a unit on every spec change, not only at creation: while one child is
/// blocked (an object of its name that is not kubundle's) or refused (an admission policy), the
/// image change that came with it does not reach the Deployment.
#[tokio::test]
async fn a_blocked_or_refused_child_holds_back_the_whole_change() {
    let client = client().await;
    let ns = create_namespace(&client, "unit").await;
    let api = bundles(&client, &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let spec = |image: &str, extra: &str| {
        format!(
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: web}}\n\
             spec:\n  image: {image}\n  replicas: 2\n  ports: [{{containerPort: 80}}]\n\
             \x20 resources: {{requests: {{cpu: 100m}}}}\n{extra}"
        )
    };
    apply_yaml(&ns, &spec("nginx:1.27", ""));
    wait_bundle(&api, "web", MINUTE, "Ready", is_ready).await;
    let before = image_and_generation(&deployments, "web").await;
    assert_eq!(before.0, "nginx:1.27");

    // A foreign Ingress of the AppBundle's name, then the image and the ingress in one change.
    run_ok(kubectl(&[
        "create",
        "ingress",
        "web",
        "-n",
        &ns,
        "--rule=x.example.com/=theirs:80",
    ]));
    apply_yaml(&ns, &spec("nginx:1.28", "  http: {ingress: {}}\n"));
    held_back(&api, &deployments, &before, "NameConflict", "Ingress").await;

    // A foreign HorizontalPodAutoscaler of the AppBundle's name, with the next image.
    run_ok(kubectl(&["delete", "ingress", "web", "-n", &ns]));
    apply_yaml(&ns, &spec("nginx:1.28", ""));
    wait_bundle(&api, "web", MINUTE, "Ready with nginx:1.28", |b| {
        is_ready(b) && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some("nginx:1.28")
    })
    .await;
    let before = image_and_generation(&deployments, "web").await;
    let foreign_hpa = serde_json::json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "theirs"},
                 "minReplicas": 1, "maxReplicas": 2},
    });
    apply_yaml(&ns, &foreign_hpa.to_string());
    apply_yaml(
        &ns,
        &spec(
            "nginx:1.29",
            "  autoscaling: {minReplicas: 2, maxReplicas: 4}\n",
        ),
    );
    held_back(
        &api,
        &deployments,
        &before,
        "NameConflict",
        "HorizontalPodAutoscaler",
    )
    .await;
    run_ok(kubectl(&["delete", "hpa", "web", "-n", &ns]));
    apply_yaml(&ns, &spec("nginx:1.28", ""));

    // An admission policy that refuses every Ingress in this namespace: nothing in the cache
    // tells it, only the API server's answer (the dry run of the whole change).
    let policy = format!("unit-refuse-ingress-{ns}");
    let vap = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {"failurePolicy": "Fail",
                 "matchConstraints": {"resourceRules": [{"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                     "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"]}]},
                 "validations": [{"expression": "false", "message": "Ingresses are not allowed here"}]},
    });
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}},
    });
    apply_yaml(&ns, &vap.to_string());
    apply_yaml(&ns, &binding.to_string());
    // The policy takes effect once the API server has loaded it: a probe Ingress is refused.
    eventually(MINUTE, "the admission policy in force", || async {
        let out = run(kubectl(&[
            "create",
            "ingress",
            "probe",
            "-n",
            &ns,
            "--dry-run=server",
            "--rule=x.example.com/=probe:80",
        ]));
        if out.status.success() {
            Err("an Ingress is still admitted".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    wait_bundle(&api, "web", MINUTE, "Ready with nginx:1.28", |b| {
        is_ready(b)
            && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some("nginx:1.28")
            && b.status.as_ref().and_then(|s| s.observed_generation) == b.metadata.generation
    })
    .await;
    let before = image_and_generation(&deployments, "web").await;
    apply_yaml(&ns, &spec("nginx:1.29", "  http: {ingress: {}}\n"));
    let refused = held_back(&api, &deployments, &before, "WriteRefused", "Ingress").await;
    let message = condition_of(&refused, "Stalled").unwrap().2;
    assert!(
        message.contains("Ingresses are not allowed here"),
        "the refusal is told in the API server's words: {message}"
    );
    for kind in [
        "validatingadmissionpolicybinding",
        "validatingadmissionpolicy",
    ] {
        run_ok(kubectl(&["delete", kind, &policy]));
    }
    // Once the policy goes, the whole change lands (a write an admission policy denied is tried
    // again after 60 s): the Ingress, then the Deployment (Ready waits for an ingress controller
    // to give the Ingress an address; there is none here).
    wait_bundle(
        &api,
        "web",
        2 * MINUTE,
        "nginx:1.29 rolled out, the Ingress made",
        |b| {
            b.status.as_ref().and_then(|s| s.image.as_deref()) == Some("nginx:1.29")
                && condition_of(b, "Ready").is_some_and(|c| c.1 == "WaitingForIngressAddress")
        },
    )
    .await;
    let ingresses: Api<k8s_openapi::api::networking::v1::Ingress> =
        Api::namespaced(client.clone(), &ns);
    assert!(kubundle_entry(&ingresses.get("web").await.unwrap()).is_some());
    delete_namespace(&client, &ns).await;
}

/// An Ingress whose class does not exist waits for an address that will never come: Ready's
/// message says so, and stops saying it once the class exists (looked at every minute).
#[tokio::test]
async fn a_missing_ingress_class_is_named_in_ready() {
    let client = client().await;
    let ns = create_namespace(&client, "ingress-class").await;
    let api = bundles(&client, &ns);
    let class = format!("missing-{ns}");
    apply_yaml(
        &ns,
        &bundle_yaml(
            "web",
            1,
            &format!("  http: {{ingress: {{className: {class}}}}}\n"),
        ),
    );
    let note = format!("IngressClass {class} does not exist");
    wait_bundle(&api, "web", MINUTE, "Ready naming the missing class", |b| {
        condition_of(b, "Ready")
            .is_some_and(|c| c.1 == "WaitingForIngressAddress" && c.2.contains(&note))
    })
    .await;
    let ingress_class = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": class}, "spec": {"controller": "example.com/none"},
    });
    apply_yaml(&ns, &ingress_class.to_string());
    wait_bundle(&api, "web", 2 * MINUTE, "the note gone", |b| {
        condition_of(b, "Ready")
            .is_some_and(|c| c.1 == "WaitingForIngressAddress" && !c.2.contains(&note))
    })
    .await;
    run_ok(kubectl(&["delete", "ingressclass", &class]));
    delete_namespace(&client, &ns).await;
}

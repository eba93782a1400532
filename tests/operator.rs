//! End-to-end tests of the operator on the local control plane (tests/run.sh starts both). Each
//! test works in its own namespace.

mod support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use kubundle::api::AppBundle;
use support::*;

const SECONDS_30: Duration = Duration::from_secs(30);

fn bundles(client: &Client, ns: &str) -> Api<AppBundle> {
    Api::namespaced(client.clone(), ns)
}

/// What a cloud controller does for a LoadBalancer Service: give it an address.
async fn give_load_balancer_address(client: &Client, ns: &str, name: &str, ip: &str) {
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    eventually(SECONDS_30, "the Service to exist", || async {
        services.get(name).await.map_err(|e| e.to_string())
    })
    .await;
    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
    services
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

fn simple_bundle(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {name}}}\n\
         spec:\n  image: nginx:1.27\n  ports: [{{name: http, containerPort: 80}}]\n{extra}"
    )
}

/// 1. The guestbook: three Deployments and three Services as declared, all three Ready.
#[tokio::test]
async fn guestbook_runs_and_becomes_ready() {
    let client = client().await;
    let ns = create_namespace(&client, "guestbook").await;
    let yaml = std::fs::read_to_string(repo_root().join("deploy/examples/guestbook.yaml")).unwrap();
    apply_yaml(&ns, &yaml);
    give_load_balancer_address(&client, &ns, "frontend", "203.0.113.10").await;
    run_ok(kubectl(&[
        "wait",
        "-n",
        &ns,
        "--for=condition=Ready",
        "appbundle",
        "--all",
        "--timeout=60s",
    ]));

    let api = bundles(&client, &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    for (name, replicas, port, svc_type) in [
        ("redis-leader", 1, 6379, "ClusterIP"),
        ("redis-follower", 2, 6379, "ClusterIP"),
        ("frontend", 3, 80, "LoadBalancer"),
    ] {
        let b = api.get(name).await.unwrap();
        assert!(is_ready(&b), "{name}: {:?}", b.status);
        let uid = b.uid().unwrap();
        let status = b.status.clone().unwrap();
        assert_eq!(status.ready_replicas, Some(replicas), "{name}");
        assert_eq!(status.image.as_deref(), Some(b.spec.image.as_str()));

        let d = deployments.get(name).await.unwrap();
        let s = services.get(name).await.unwrap();
        for (kind, owners) in [
            ("Deployment", d.owner_references()),
            ("Service", s.owner_references()),
        ] {
            assert_eq!(owners.len(), 1, "{kind} {name}");
            assert_eq!(
                (owners[0].kind.as_str(), owners[0].uid.as_str()),
                ("AppBundle", uid.as_str())
            );
            assert_eq!(owners[0].controller, Some(true));
        }
        let labels = d.labels();
        assert_eq!(labels["app.kubernetes.io/name"], name);
        assert_eq!(labels["app.kubernetes.io/instance"], name);
        assert_eq!(labels["app.kubernetes.io/managed-by"], "kubundle");
        // The AppBundle's own labels reach the children (the tutorial's `app: redis` selects them)
        assert_eq!(labels["app.kubernetes.io/part-of"], "guestbook");

        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(replicas));
        let selector = spec.selector.match_labels.unwrap();
        let container = &spec.template.spec.unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some(b.spec.image.as_str()));
        assert_eq!(container.ports.as_ref().unwrap()[0].container_port, port);
        let requests = container
            .resources
            .as_ref()
            .unwrap()
            .requests
            .clone()
            .unwrap();
        assert_eq!(
            (requests["cpu"].0.as_str(), requests["memory"].0.as_str()),
            ("100m", "100Mi")
        );
        if name == "frontend" {
            let env = container.env.clone().unwrap();
            assert_eq!(
                (env[0].name.as_str(), env[0].value.as_deref()),
                ("GET_HOSTS_FROM", Some("dns"))
            );
        }

        let svc = s.spec.unwrap();
        assert_eq!(svc.type_.as_deref(), Some(svc_type));
        assert_eq!(svc.selector.unwrap(), selector);
        assert_eq!(svc.ports.unwrap()[0].port, port);
    }
    delete_namespace(&client, &ns).await;
}

/// 2. An image change rolls out: Reconciling=True while it does, then Ready=True with the new image.
#[tokio::test]
async fn image_change_rolls_out() {
    let client = client().await;
    let ns = create_namespace(&client, "image").await;
    apply_yaml(&ns, &simple_bundle("web", "  replicas: 3\n"));
    let api = bundles(&client, &ns);
    wait_bundle(&api, "web", SECONDS_30, "web Ready", is_ready).await;

    // Record every status the AppBundle goes through from here on.
    let watch_api = api.clone();
    let seen = tokio::spawn(async move {
        watcher(
            watch_api,
            watcher::Config::default().fields("metadata.name=web"),
        )
        .applied_objects()
        .take_while(|b| {
            futures::future::ready(
                !matches!(b, Ok(b) if is_ready(b) && b.spec.image == "nginx:1.28"),
            )
        })
        .try_collect::<Vec<_>>()
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let patch = serde_json::json!({"spec": {"image": "nginx:1.28"}});
    api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let b = wait_bundle(&api, "web", SECONDS_30, "web Ready on the new image", |b| {
        is_ready(b) && b.status.as_ref().unwrap().image.as_deref() == Some("nginx:1.28")
    })
    .await;
    let history = tokio::time::timeout(SECONDS_30, seen)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let new_generation = b.metadata.generation;
    assert!(
        history
            .iter()
            .any(
                |h| h.status.as_ref().and_then(|s| s.observed_generation) == new_generation
                    && condition_of(h, "Reconciling").is_some_and(|c| c.0 == "True")
            ),
        "Reconciling=True was never reported during the rollout: {:?}",
        history.iter().map(|h| h.status.clone()).collect::<Vec<_>>()
    );
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("nginx:1.28")
    );
    delete_namespace(&client, &ns).await;
}

/// 3. `kubectl scale appbundle` scales the Deployment; the status follows.
#[tokio::test]
async fn kubectl_scale_scales_the_deployment() {
    let client = client().await;
    let ns = create_namespace(&client, "scale").await;
    apply_yaml(&ns, &simple_bundle("frontend", "  replicas: 3\n"));
    let api = bundles(&client, &ns);
    wait_bundle(&api, "frontend", SECONDS_30, "frontend Ready", is_ready).await;
    run_ok(kubectl(&[
        "scale",
        "appbundle",
        "frontend",
        "--replicas=5",
        "-n",
        &ns,
    ]));
    let b = wait_bundle(&api, "frontend", SECONDS_30, "5 ready replicas", |b| {
        is_ready(b) && b.status.as_ref().unwrap().ready_replicas == Some(5)
    })
    .await;
    assert_eq!(b.spec.replicas, Some(5));
    assert_eq!(b.status.unwrap().replica_summary.as_deref(), Some("5/5"));
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("frontend")
        .await
        .unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(5));
    // The scale subresource reports the selector, for HPAs.
    let scale = run_ok(kubectl(&[
        "get",
        "--raw",
        &format!("/apis/kubundle.dev/v1alpha1/namespaces/{ns}/appbundles/frontend/scale"),
    ]));
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["status"]["replicas"], 5);
    assert!(
        scale["status"]["selector"]
            .as_str()
            .unwrap()
            .contains("app.kubernetes.io/instance=frontend")
    );
    delete_namespace(&client, &ns).await;
}

/// 4. Drift: a deleted Service comes back within 10 s, a hand-edited image is restored, a label
/// someone else added stays.
#[tokio::test]
async fn drift_is_undone_and_foreign_fields_are_left_alone() {
    let client = client().await;
    let ns = create_namespace(&client, "drift").await;
    apply_yaml(&ns, &simple_bundle("web", ""));
    let api = bundles(&client, &ns);
    wait_bundle(&api, "web", SECONDS_30, "web Ready", is_ready).await;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);

    let old_uid = services.get("web").await.unwrap().uid().unwrap();
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let start = std::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "the deleted Service to be recreated",
        || async {
            match services.get_opt("web").await.map_err(|e| e.to_string())? {
                Some(s) if s.uid().unwrap() != old_uid => Ok(()),
                other => Err(format!("{:?}", other.map(|s| s.uid()))),
            }
        },
    )
    .await;
    eprintln!("Service recreated {:?} after deletion", start.elapsed());

    run_ok(kubectl(&[
        "set",
        "image",
        "deployment/web",
        "web=nginx:hacked",
        "-n",
        &ns,
    ]));
    run_ok(kubectl(&[
        "label",
        "deployment/web",
        "team=payments",
        "-n",
        &ns,
    ]));
    eventually(
        Duration::from_secs(10),
        "the hand-edited image to be restored",
        || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            let image = d.spec.unwrap().template.spec.unwrap().containers[0]
                .image
                .clone()
                .unwrap();
            if image == "nginx:1.27" {
                Ok(())
            } else {
                Err(image)
            }
        },
    )
    .await;
    // The label someone else added is not kubundle's: it stays, and does not cause writes. Once the
    // Deployment controller has finished rolling back to the declared image, nothing changes.
    let settled = eventually(SECONDS_30, "the rollback to settle", || async {
        let d = deployments.get("web").await.map_err(|e| e.to_string())?;
        let s = d.status.clone().unwrap_or_default();
        let done = s.observed_generation == d.metadata.generation
            && s.replicas == Some(1)
            && s.updated_replicas == Some(1)
            && s.available_replicas == Some(1);
        if done { Ok(d) } else { Err(format!("{s:?}")) }
    })
    .await;
    assert_eq!(
        settled.labels().get("team").map(String::as_str),
        Some("payments")
    );
    let kubundle_entry = |d: &Deployment| {
        d.managed_fields()
            .iter()
            .find(|m| m.manager.as_deref() == Some("kubundle"))
            .map(|m| (m.operation.clone(), m.time.clone()))
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = deployments.get("web").await.unwrap();
    assert_eq!(
        later.labels().get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(
        kubundle_entry(&later),
        kubundle_entry(&settled),
        "kubundle wrote again"
    );
    // Its spec did not change again (the Deployment controller may still update its status, e.g.
    // the Progressing condition, after the rollout is complete).
    assert_eq!(
        later.metadata.generation, settled.metadata.generation,
        "the Deployment's spec kept changing"
    );
    assert_eq!(
        later.spec, settled.spec,
        "the Deployment's spec kept changing"
    );
    delete_namespace(&client, &ns).await;
}

/// 5. Deleting the AppBundle garbage-collects its Deployment and Service.
#[tokio::test]
async fn deleting_the_bundle_collects_its_children() {
    let client = client().await;
    let ns = create_namespace(&client, "gc").await;
    apply_yaml(&ns, &simple_bundle("web", ""));
    let api = bundles(&client, &ns);
    wait_bundle(&api, "web", SECONDS_30, "web Ready", is_ready).await;
    api.delete("web", &DeleteParams::default()).await.unwrap();
    children_gone(&client, &ns, "web", SECONDS_30).await;
    delete_namespace(&client, &ns).await;
}

/// 6. A Deployment of the same name that kubundle does not own is left untouched; the AppBundle is
/// Stalled with a reason naming it, and there is a Warning Event.
#[tokio::test]
async fn an_unowned_deployment_is_not_taken_over() {
    let client = client().await;
    let ns = create_namespace(&client, "conflict").await;
    run_ok(kubectl(&[
        "create",
        "deployment",
        "taken",
        "--image=busybox",
        "-n",
        &ns,
    ]));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // Let the Deployment controller finish its own status updates before taking the picture.
    let before = eventually(SECONDS_30, "the foreign Deployment to settle", || async {
        let d = deployments.get("taken").await.map_err(|e| e.to_string())?;
        if d.status.clone().and_then(|s| s.available_replicas) == Some(1) {
            Ok(d)
        } else {
            Err("not available".into())
        }
    })
    .await;
    let managers = |d: &Deployment| {
        d.managed_fields()
            .iter()
            .map(|m| {
                (
                    m.manager.clone(),
                    m.operation.clone(),
                    m.subresource.clone(),
                )
            })
            .collect::<Vec<_>>()
    };

    apply_yaml(&ns, &simple_bundle("taken", ""));
    let api = bundles(&client, &ns);
    let b = wait_bundle(&api, "taken", SECONDS_30, "Stalled=True", |b| {
        condition_of(b, "Stalled").is_some_and(|c| c.0 == "True")
    })
    .await;
    let (_, reason, message) = condition_of(&b, "Stalled").unwrap();
    assert_eq!(reason, "NameConflict");
    assert!(
        message.contains(&format!("Deployment {ns}/taken")),
        "{message}"
    );
    assert_eq!(condition_of(&b, "Ready").unwrap().0, "False");

    let warning = warning_event(&client, &ns, "taken").await;
    assert_eq!(warning.reason.as_deref(), Some("NameConflict"));

    // Not modified: the same spec, labels, annotations and owners, and no new field manager (the
    // Deployment controller may still write status, which is not kubundle's doing).
    let after = deployments.get("taken").await.unwrap();
    assert_eq!(
        after.spec, before.spec,
        "the foreign Deployment's spec was modified"
    );
    assert_eq!(after.labels(), before.labels());
    assert_eq!(after.annotations(), before.annotations());
    assert_eq!(
        managers(&after),
        managers(&before),
        "someone new wrote to the foreign Deployment"
    );
    assert!(after.owner_references().is_empty());
    assert!(
        after
            .managed_fields()
            .iter()
            .all(|m| m.manager.as_deref() != Some("kubundle"))
    );
    // and no Service was created for it either
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    assert!(
        services.get_opt("taken").await.unwrap().is_none()
            || services
                .get("taken")
                .await
                .unwrap()
                .owner_references()
                .iter()
                .all(|o| o.uid == b.uid().unwrap())
    );
    delete_namespace(&client, &ns).await;
}

/// 7. Invalid AppBundles are refused by `kubectl apply` with a message naming the field; nothing is created.
#[tokio::test]
async fn invalid_bundles_are_refused_at_apply_time() {
    let client = client().await;
    let ns = create_namespace(&client, "invalid").await;
    let long_name = format!("a{}", "b".repeat(63));
    let cases: Vec<(&str, String, &str)> = vec![
        ("no image", "spec: {ports: [{containerPort: 80}]}".into(), "spec.image"),
        ("port 0", "spec: {image: nginx, ports: [{containerPort: 0}]}".into(), "spec.ports[0].containerPort"),
        ("port 70000", "spec: {image: nginx, ports: [{containerPort: 70000}]}".into(), "spec.ports[0].containerPort"),
        ("duplicate port names", "spec: {image: nginx, ports: [{name: http, containerPort: 80}, {name: http, containerPort: 81}]}".into(), "spec.ports[].name"),
        ("duplicate port numbers", "spec: {image: nginx, ports: [{name: a, containerPort: 80}, {name: b, containerPort: 80}]}".into(), "spec.ports[].containerPort"),
        ("nodePort with ClusterIP", "spec: {image: nginx, ports: [{containerPort: 80, nodePort: 30080}]}".into(), "spec.ports[].nodePort"),
        ("negative replicas", "spec: {image: nginx, replicas: -1, ports: [{containerPort: 80}]}".into(), "spec.replicas"),
        ("unknown protocol", "spec: {image: nginx, ports: [{containerPort: 80, protocol: HTTP}]}".into(), "spec.ports[0].protocol"),
        ("unknown service type", "spec: {image: nginx, ports: [{containerPort: 80}], service: {type: External}}".into(), "spec.service.type"),
        ("no ports", "spec: {image: nginx}".into(), "spec.ports"),
        ("invalid port name", "spec: {image: nginx, ports: [{name: Http_1, containerPort: 80}]}".into(), "spec.ports[0].name"),
        ("name too long for the Service", format!("metadata: {{name: {long_name}}}\nspec: {{image: nginx, ports: [{{containerPort: 80}}]}}"), "metadata.name"),
    ];
    for (what, body, field) in &cases {
        let yaml = if body.starts_with("metadata") {
            format!("apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\n{body}\n")
        } else {
            format!(
                "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: bad}}\n{body}\n"
            )
        };
        let out = kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: was accepted");
        assert!(
            stderr.contains(field),
            "{what}: the refusal does not name {field}: {stderr}"
        );
        eprintln!("{what}: {}", stderr.trim());
    }
    assert!(
        bundles(&client, &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    assert!(
        deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    delete_namespace(&client, &ns).await;
}

/// 8. LoadBalancer: Ready=False waiting for an address until the Service has one, then Ready=True
/// with the address in status.
#[tokio::test]
async fn load_balancer_is_ready_once_it_has_an_address() {
    let client = client().await;
    let ns = create_namespace(&client, "lb").await;
    apply_yaml(
        &ns,
        &simple_bundle(
            "shop",
            "  service: {type: LoadBalancer, annotations: {cloud.google.com/load-balancer-type: Internal}}\n",
        ),
    );
    let api = bundles(&client, &ns);
    let b = wait_bundle(
        &api,
        "shop",
        SECONDS_30,
        "Ready=False waiting for the load balancer",
        |b| {
            condition_of(b, "Ready")
                .is_some_and(|c| c.0 == "False" && c.1 == "WaitingForLoadBalancer")
        },
    )
    .await;
    assert!(
        condition_of(&b, "Ready")
            .unwrap()
            .2
            .contains("external address")
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !is_ready(&api.get("shop").await.unwrap()),
        "Ready without an address"
    );

    give_load_balancer_address(&client, &ns, "shop", "198.51.100.20").await;
    let b = wait_bundle(
        &api,
        "shop",
        SECONDS_30,
        "Ready=True with the address",
        is_ready,
    )
    .await;
    let address = b.status.unwrap().address.unwrap();
    assert_eq!(address.external, vec!["198.51.100.20".to_string()]);
    assert_eq!(address.type_.as_deref(), Some("LoadBalancer"));
    let svc: Service = Api::namespaced(client.clone(), &ns)
        .get("shop")
        .await
        .unwrap();
    assert_eq!(
        svc.annotations()
            .get("cloud.google.com/load-balancer-type")
            .map(String::as_str),
        Some("Internal")
    );
    delete_namespace(&client, &ns).await;
}

/// 9. A rollout that cannot finish (its pods cannot be scheduled) passes its progress deadline and
/// the AppBundle turns Stalled.
#[tokio::test]
async fn a_rollout_past_its_deadline_is_stalled() {
    let client = client().await;
    let ns = create_namespace(&client, "deadline").await;
    apply_yaml(
        &ns,
        &simple_bundle(
            "stuck",
            "  progressDeadlineSeconds: 5\n  podTemplate: {nodeSelector: {kubundle.dev/no-such-node: \"true\"}}\n",
        ),
    );
    let api = bundles(&client, &ns);
    let b = wait_bundle(
        &api,
        "stuck",
        Duration::from_secs(60),
        "Stalled=True",
        |b| condition_of(b, "Stalled").is_some_and(|c| c.0 == "True"),
    )
    .await;
    assert_eq!(
        condition_of(&b, "Stalled").unwrap().1,
        "ProgressDeadlineExceeded"
    );
    assert_eq!(condition_of(&b, "Ready").unwrap().0, "False");
    assert_eq!(condition_of(&b, "Reconciling").unwrap().0, "False");
    delete_namespace(&client, &ns).await;
}

/// Pods the API server refuses to create (here: a PriorityClass that does not exist) until the
/// deadline: Stalled, and the message still gives the server's words for the refusal, not only
/// the Deployment's "has timed out progressing" (the soak's long form found that lost).
#[tokio::test]
async fn a_deadline_passed_on_refused_pods_keeps_the_servers_words() {
    let client = client().await;
    let ns = create_namespace(&client, "deadline-words").await;
    apply_yaml(
        &ns,
        &simple_bundle(
            "refused",
            "  progressDeadlineSeconds: 5\n  podTemplate: {priorityClassName: no-such-priority}\n",
        ),
    );
    let api = bundles(&client, &ns);
    let b = wait_bundle(
        &api,
        "refused",
        Duration::from_secs(60),
        "Stalled=True",
        |b| condition_of(b, "Stalled").is_some_and(|c| c.0 == "True"),
    )
    .await;
    let (_, reason, message) = condition_of(&b, "Stalled").unwrap();
    assert_eq!(reason, "ProgressDeadlineExceeded", "{message}");
    assert!(
        message.contains("no-such-priority") && message.contains("cannot create pods"),
        "the Stalled message names the refusal: {message}"
    );
    delete_namespace(&client, &ns).await;
}

/// SIGTERM stops the operator promptly and cleanly (exit status 0), after it started reconciling.
#[tokio::test]
async fn sigterm_stops_the_operator_cleanly() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let client = client().await;
    let ns = create_namespace(&client, "sigterm").await;
    let mut operator = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubundle"))
        .args([
            "--namespace",
            &ns,
            "--listen-address",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(operator.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    tokio::time::timeout(SECONDS_30, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let synced = line.contains("cache synced");
            log.push(line);
            if synced {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the operator did not sync: {log:?}"));
    let started = std::time::Instant::now();
    run_ok(std::process::Command::new("kill").args(["-TERM", &operator.id().unwrap().to_string()]));
    let status = tokio::time::timeout(Duration::from_secs(10), operator.wait())
        .await
        .expect("the operator did not stop within 10 s of SIGTERM")
        .unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push(line);
    }
    assert!(status.success(), "exit status {status}: {log:?}");
    assert!(
        log.iter().any(|l| l.contains("kubundle stopped")),
        "{log:?}"
    );
    eprintln!("stopped {:?} after SIGTERM", started.elapsed());
    delete_namespace(&client, &ns).await;
}

/// Started against a cluster without the AppBundle CRD, the operator exits at once with an
/// error that says what to do (a second, small cluster that never had the CRD). Then, with the
/// CRD but without the Gateway API: an AppBundle that asks for an HTTPRoute is Stalled with a
/// message saying what to do, its neighbours are Ready, and the operator keeps running and ready.
#[tokio::test]
async fn startup_without_the_crd_fails_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("kubundle-nocrd-{}", std::process::id()));
    let script = repo_root().join("deploy/local/cluster.sh");
    let cluster = |arg: &str| {
        let mut cmd = std::process::Command::new(&script);
        cmd.arg(arg)
            .env("KUBUNDLE_CLUSTER_DIR", &dir)
            .env("KUBUNDLE_NODES", "1")
            .env("KUBUNDLE_REAL_NODE", "0")
            .env("KUBUNDLE_GATEWAY_API", "0");
        cmd
    };
    // Brings the second cluster down however the test ends, even when `up` itself failed half way.
    struct Down<F: Fn(&str) -> std::process::Command>(F, std::path::PathBuf);
    impl<F: Fn(&str) -> std::process::Command> Drop for Down<F> {
        fn drop(&mut self) {
            let _ = (self.0)("down").output();
            let _ = std::fs::remove_file(self.1.with_extension("lock"));
        }
    }
    let down = Down(cluster, dir.clone());
    run_ok((down.0)("up"));
    let kubeconfig = dir.join("kubeconfig");
    let out = run(std::process::Command::new(env!("CARGO_BIN_EXE_kubundle"))
        .args(["--listen-address", "127.0.0.1:0", "--log-format", "text"])
        .env("KUBECONFIG", &kubeconfig));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the operator started without its CRD: {stderr}"
    );
    assert!(
        stderr.contains("CustomResourceDefinition (appbundles.kubundle.dev) is not installed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("kubectl apply --server-side -f crds/"),
        "{stderr}"
    );

    // The CRD, but no Gateway API.
    let second = |args: &[&str]| {
        let mut cmd = kubectl(args);
        cmd.env("KUBECONFIG", &kubeconfig).current_dir(repo_root());
        cmd
    };
    run_ok(second(&["apply", "--server-side", "-f", "crds/"]));
    // (kubectl wait fails at once, instead of waiting, while a new CRD has no conditions yet.)
    eventually(SECONDS_30, "the CRD to be established", || async {
        let out = second(&[
            "wait",
            "--for=condition=Established",
            "crd/appbundles.kubundle.dev",
            "--timeout=10s",
        ])
        .output()
        .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await;
    let operator = Operator::start(&[], &[], &kubeconfig).await;
    let routed = simple_bundle(
        "routed",
        "  http: {hostnames: [shop.example.com], gateway: {name: gw}}\n",
    );
    for yaml in [routed, simple_bundle("plain", "")] {
        let mut child = second(&["apply", "-n", "default", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let condition = |name: &str, type_: &str| {
        run_ok(second(&[
            "get",
            "appbundle",
            name,
            "-n",
            "default",
            "-o",
            &format!(
                "jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}} {{.status.conditions[?(@.type==\"{type_}\")].reason}} {{.status.conditions[?(@.type==\"{type_}\")].message}}"
            ),
        ]))
    };
    eventually(SECONDS_30, "routed Stalled, plain Ready", || async {
        let (stalled, ready) = (condition("routed", "Stalled"), condition("plain", "Ready"));
        if stalled.starts_with("True APINotInstalled") && ready.starts_with("True") {
            Ok(stalled)
        } else {
            Err(format!("routed: {stalled}; plain: {ready}"))
        }
    })
    .await;
    let stalled = condition("routed", "Stalled");
    assert!(
        stalled.contains("install the Gateway API CRDs"),
        "{stalled}"
    );
    assert!(stalled.contains("spec.http.ingress"), "{stalled}");
    let (code, body) = http_get(&format!("{}/readyz", operator.url)).await.unwrap();
    assert_eq!(code, 200, "{body}");
    drop(operator);
    run_ok((down.0)("down"));
    drop(down); // a second `down` finds no state and does nothing
}

/// The Argo CD health check gives Healthy, Progressing and Degraded on real AppBundles in those states.
#[tokio::test]
async fn argocd_health_check_reads_real_status() {
    let client = client().await;
    let ns = create_namespace(&client, "argocd-health").await;
    run_ok(kubectl(&[
        "create",
        "deployment",
        "blocked",
        "--image=busybox",
        "-n",
        &ns,
    ]));
    apply_yaml(&ns, &simple_bundle("healthy", ""));
    apply_yaml(
        &ns,
        &simple_bundle("waiting", "  service: {type: LoadBalancer}\n"),
    );
    apply_yaml(&ns, &simple_bundle("blocked", ""));
    // A route no Gateway has answered for yet (a reason that came with spec.http).
    apply_yaml(
        &ns,
        &simple_bundle("routed", "  http: {gateway: {name: gw}}\n"),
    );
    let api = bundles(&client, &ns);
    let healthy = wait_bundle(&api, "healthy", SECONDS_30, "healthy Ready", is_ready).await;
    let waiting = wait_bundle(
        &api,
        "waiting",
        SECONDS_30,
        "waiting for its address",
        |b| condition_of(b, "Ready").is_some_and(|c| c.1 == "WaitingForLoadBalancer"),
    )
    .await;
    let blocked = wait_bundle(&api, "blocked", SECONDS_30, "blocked Stalled", |b| {
        condition_of(b, "Stalled").is_some_and(|c| c.0 == "True")
    })
    .await;

    let json = |b: &AppBundle| serde_json::to_value(b).unwrap();
    let (status, message) = argocd_health(&json(&healthy));
    assert_eq!(status, "Healthy", "{message}");
    let (status, message) = argocd_health(&json(&waiting));
    assert_eq!(status, "Progressing");
    assert!(message.contains("load balancer"), "{message}");
    let (status, message) = argocd_health(&json(&blocked));
    assert_eq!(status, "Degraded");
    assert!(message.starts_with("NameConflict: Deployment"), "{message}");
    let routed = wait_bundle(&api, "routed", SECONDS_30, "waiting for its route", |b| {
        condition_of(b, "Ready").is_some_and(|c| c.1 == "WaitingForRoute")
    })
    .await;
    let (status, message) = argocd_health(&json(&routed));
    assert_eq!(status, "Progressing");
    assert!(message.contains("Gateway"), "{message}");
    // Just edited, not yet observed by kubundle: Progressing, whatever the old conditions say.
    let mut edited = json(&healthy);
    edited["metadata"]["generation"] = serde_json::json!(healthy.metadata.generation.unwrap() + 1);
    assert_eq!(argocd_health(&edited).0, "Progressing");
    // Never reconciled yet: Progressing.
    let mut fresh = json(&healthy);
    fresh.as_object_mut().unwrap().remove("status");
    assert_eq!(argocd_health(&fresh).0, "Progressing");
    delete_namespace(&client, &ns).await;
}

/// kstatus, as GitOps tools use it: Helm 4's `--wait` is kstatus. A release holding an AppBundle
/// is installed only once kubundle reports it Ready (Current), and fails when the AppBundle is
/// Stalled (Failed) instead of waiting for ever.
#[tokio::test]
async fn helm_wait_kstatus_sees_ready_and_stalled() {
    let client = client().await;
    let ns = create_namespace(&client, "kstatus").await;
    let chart = repo_root().join("tests/fixtures/appbundle-chart");
    let helm = |args: &[&str], timeout: &str| {
        let mut cmd = std::process::Command::new("helm");
        cmd.args(args)
            .arg(&chart)
            .args(["-n", &ns, "--wait", &format!("--timeout={timeout}")]);
        cmd
    };
    let started = std::time::Instant::now();
    run_ok(helm(&["install", "ready"], "60s"));
    let b = bundles(&client, &ns).get("web").await.unwrap();
    assert!(
        is_ready(&b),
        "helm --wait returned before the AppBundle was Ready: {:?}",
        b.status
    );
    eprintln!("helm install --wait returned after {:?}", started.elapsed());

    // A Deployment kubundle does not own blocks the next AppBundle: Stalled -> kstatus Failed.
    run_ok(kubectl(&[
        "create",
        "deployment",
        "taken",
        "--image=busybox",
        "-n",
        &ns,
    ]));
    let started = std::time::Instant::now();
    let out = run(helm(&["install", "stalled", "--set", "name=taken"], "20s"));
    assert!(
        !out.status.success(),
        "helm --wait succeeded on a Stalled AppBundle"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "helm install --wait failed after {:?}: {}",
        started.elapsed(),
        stderr.trim()
    );
    delete_namespace(&client, &ns).await;
}

/// A new AppBundle is reported as people and tools need it, and no more: its status is written
/// when Ready turns True, and before that at most every 2 s (progress; kstatus and Argo CD say
/// "in progress" from the defaulted `observedGeneration: 0` meanwhile), and it gets one Normal
/// Event, at its first rollout, naming what it is made of. A pod quota holds the rollout back
/// for a while, so that there is progress to report. (Before: a status write per step of the
/// Deployment's status, and a "Created" Event then a "RolledOut" Event.)
#[tokio::test]
async fn a_new_bundle_is_reported_once_it_is_up_and_its_progress_is_paced() {
    let client = client().await;
    let ns = create_namespace(&client, "paced").await;
    let api = bundles(&client, &ns);
    // Every version of the AppBundle as written, with when the test saw it.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let (api, seen) = (api.clone(), seen.clone());
        tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=paced");
            let mut stream = watcher(api, config).applied_objects().boxed();
            while let Some(Ok(b)) = stream.next().await {
                seen.lock()
                    .unwrap()
                    .push((std::time::Instant::now(), b.status.clone()));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A quota of one pod holds the rollout back (progress to report) until it is raised.
    run_ok(kubectl(&[
        "create",
        "quota",
        "pods",
        "--hard=pods=1",
        "-n",
        &ns,
    ]));
    let created = std::time::Instant::now();
    apply_yaml(&ns, &simple_bundle("paced", "  replicas: 3\n"));
    wait_bundle(&api, "paced", SECONDS_30, "the quota in Ready", |b| {
        condition_of(b, "Ready").is_some_and(|c| c.1 == "PodCreationFailed")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    run_ok(kubectl(&[
        "patch",
        "quota",
        "pods",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"hard":{"pods":"10"}}}"#,
    ]));
    // The ReplicaSet controller retries refused pod creations with exponential backoff (it
    // does not watch quotas), so its next try may come many seconds after the quota is raised.
    wait_bundle(
        &api,
        "paced",
        Duration::from_secs(120),
        "paced Ready",
        is_ready,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    recorder.abort();

    // The statuses kubundle wrote, in order (the defaulted one left out).
    let written: Vec<(std::time::Instant, kubundle::api::AppBundleStatus)> = {
        let mut out: Vec<(std::time::Instant, kubundle::api::AppBundleStatus)> = Vec::new();
        for (at, status) in seen.lock().unwrap().iter() {
            let Some(s) = status.clone() else { continue };
            if s.observed_generation.unwrap_or(0) == 0 {
                continue;
            }
            if out.last().is_none_or(|(_, last)| *last != s) {
                out.push((*at, s));
            }
        }
        out
    };
    let ready = |s: &kubundle::api::AppBundleStatus| {
        kubundle::api::find_condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
    };
    assert!(
        written.last().is_some_and(|(_, s)| ready(s)),
        "the last status written is Ready: {written:?}"
    );
    assert!(
        written.iter().filter(|(_, s)| ready(s)).count() == 1,
        "Ready written once: {written:?}"
    );
    assert!(
        written.len() >= 2,
        "progress was written while the quota held the rollout back: {written:?}"
    );
    // Progress comes at least ~2 s after the creation or the previous write (the creation time
    // kubundle goes by has a 1 s resolution, hence 0.9 s here).
    let mut previous = created;
    for (at, s) in &written {
        if !ready(s) {
            assert!(
                at.duration_since(previous) >= Duration::from_millis(900),
                "progress written {:?} after the previous write: {written:?}",
                at.duration_since(previous)
            );
        }
        previous = *at;
    }

    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let normal = eventually(SECONDS_30, "the first rollout's Event", || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let normal: Vec<_> = list
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("AppBundle")
                    && e.type_.as_deref() == Some("Normal")
            })
            .collect();
        if normal.is_empty() {
            Err("none yet".into())
        } else {
            Ok(normal)
        }
    })
    .await;
    assert_eq!(normal.len(), 1, "one Normal Event: {normal:?}");
    assert_eq!(normal[0].reason.as_deref(), Some("RolledOut"));
    let note = normal[0].note.clone().unwrap_or_default();
    assert!(
        note.starts_with(
            "rolled out for the first time: Deployment paced, Service paced; 3 of 3 pods"
        ),
        "{note}"
    );

    // A new image: one Event when it is rolled out, none for the Deployment's update on the way.
    apply_yaml(
        &ns,
        &simple_bundle("paced", "  replicas: 3\n").replace("nginx:1.27", "nginx:1.28"),
    );
    wait_bundle(
        &api,
        "paced",
        SECONDS_30,
        "paced Ready on nginx:1.28",
        |b| is_ready(b) && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some("nginx:1.28"),
    )
    .await;
    let notes = eventually(SECONDS_30, "the update's RolledOut Event", || async {
        let list = events
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let notes: Vec<(String, String)> = list
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("AppBundle")
                    && e.type_.as_deref() == Some("Normal")
            })
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect();
        if notes.len() >= 2 {
            Ok(notes)
        } else {
            Err(format!("{notes:?}"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[1].0, "RolledOut", "{notes:?}");
    assert!(
        notes[1].1.contains("3 of 3 pods run nginx:1.28"),
        "{notes:?}"
    );
    delete_namespace(&client, &ns).await;
}

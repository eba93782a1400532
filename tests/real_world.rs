//! End-to-end tests of the control loop under the conditions real users and clusters create:
//! every deletion mode, orphans, children being deleted, refused writes, pods that cannot be
//! created, changes that cannot be made in place, name conflicts, labels, logs. They share the
//! operator tests/run.sh starts; each works in its own namespace.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use kubundle::api::AppBundle;
use support::*;

const SECONDS_30: Duration = Duration::from_secs(30);

fn bundles(client: &Client, ns: &str) -> Api<AppBundle> {
    Api::namespaced(client.clone(), ns)
}

/// Records the UID of every Deployment and Service named `name` that appears in `ns`, from a
/// watch started now (so a re-created child cannot slip between two polls).
fn record_uids(client: &Client, ns: &str, name: &str) -> Arc<Mutex<HashSet<String>>> {
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let d = watcher(
        Api::<Deployment>::namespaced(client.clone(), ns),
        cfg.clone(),
    )
    .applied_objects()
    .map(|r| r.map(|o| format!("Deployment/{}", o.uid().unwrap_or_default())));
    let s = watcher(Api::<Service>::namespaced(client.clone(), ns), cfg)
        .applied_objects()
        .map(|r| r.map(|o| format!("Service/{}", o.uid().unwrap_or_default())));
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut both = std::pin::pin!(futures::stream::select(d, s));
        while let Some(item) = both.next().await {
            if let Ok(uid) = item {
                sink.lock().unwrap().insert(uid);
            }
        }
    });
    seen
}

/// Removes the test's finalizer from an object when dropped, so a failing test does not leave an
/// object (and its namespace) stuck in deletion for the tests that follow.
struct ReleaseOnDrop {
    ns: String,
    object: String,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        let _ = run(kubectl(&[
            "patch",
            "-n",
            &self.ns,
            &self.object,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]));
    }
}

/// Foreground and background deletion end with the children gone and never re-created: kubundle
/// writes nothing for an AppBundle that is being deleted. (Before: with foreground deletion,
/// kubundle re-created the Deployment and Service that the garbage collector was deleting.)
#[tokio::test]
async fn deletion_never_recreates_children() {
    let client = client().await;
    let ns = create_namespace(&client, "delete").await;
    let api = bundles(&client, &ns);
    for (name, cascade) in [("fg", "foreground"), ("bg", "background")] {
        apply_yaml(&ns, &bundle_yaml(name, "  replicas: 3\n"));
        wait_bundle(&api, name, SECONDS_30, "Ready", is_ready).await;
        let seen = record_uids(&client, &ns, name);
        tokio::time::sleep(Duration::from_millis(500)).await;
        run_ok(kubectl(&[
            "delete",
            "appbundle",
            name,
            "-n",
            &ns,
            &format!("--cascade={cascade}"),
            "--wait=true",
            "--timeout=60s",
        ]));
        children_gone(&client, &ns, name, Duration::from_secs(60)).await;
        // Anything kubundle might still do happens within a few seconds of the last event.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen.len(),
            2,
            "{cascade} deletion: children were re-created (UIDs seen: {seen:?})"
        );
        children_gone(&client, &ns, name, Duration::from_secs(60)).await;
    }
    delete_namespace(&client, &ns).await;
}

/// After `kubectl delete appbundle --cascade=orphan`, applying the AppBundle again adopts the
/// orphaned Deployment and Service: same objects, no new ReplicaSet (no pod restarted), no
/// conflict. (Before: a Stalled NameConflict whose advice meant downtime.)
#[tokio::test]
async fn orphans_are_adopted_without_a_rollout() {
    let client = client().await;
    let ns = create_namespace(&client, "orphan").await;
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle_yaml("web", "  replicas: 2\n"));
    let first = wait_bundle(&api, "web", SECONDS_30, "Ready", is_ready).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    let d_uid = deployments.get("web").await.unwrap().uid();
    let s_uid = services.get("web").await.unwrap().uid();
    let rs_before: HashSet<_> = replicasets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.uid())
        .collect();

    run_ok(kubectl(&[
        "delete",
        "appbundle",
        "web",
        "-n",
        &ns,
        "--cascade=orphan",
        "--wait=true",
    ]));
    eventually(SECONDS_30, "the orphans to lose their owner", || async {
        let d = deployments.get("web").await.map_err(|e| e.to_string())?;
        if d.owner_references().is_empty() {
            Ok(())
        } else {
            Err("still owned".into())
        }
    })
    .await;

    apply_yaml(&ns, &bundle_yaml("web", "  replicas: 2\n"));
    let second = wait_bundle(&api, "web", SECONDS_30, "Ready again", is_ready).await;
    assert_ne!(first.uid(), second.uid());
    let d = deployments.get("web").await.unwrap();
    let s = services.get("web").await.unwrap();
    assert_eq!(d.uid(), d_uid, "the Deployment was replaced");
    assert_eq!(s.uid(), s_uid, "the Service was replaced");
    for owners in [d.owner_references(), s.owner_references()] {
        assert_eq!(owners.len(), 1, "{owners:?}");
        assert_eq!(Some(owners[0].uid.clone()), second.uid());
        assert_eq!(owners[0].controller, Some(true));
    }
    let rs_after: HashSet<_> = replicasets
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.uid())
        .collect();
    assert_eq!(rs_before, rs_after, "adoption rolled the pods");
    let stalled = condition_of(&second, "Stalled").unwrap();
    assert_eq!(stalled.0, "False", "{stalled:?}");
    delete_namespace(&client, &ns).await;
}

/// After an orphaning delete, the AppBundle made again without a section it had (here its
/// disruption budget) deletes the orphan of that section instead of leaving it behind, selecting
/// its pods and blocking node drains with nobody to remove it. (Found by the chaos soak: before,
/// only children controlled by the AppBundle were pruned, and the orphan stayed for good.)
#[tokio::test]
async fn an_orphan_the_new_spec_does_not_ask_for_is_deleted() {
    let client = client().await;
    let ns = create_namespace(&client, "orphan-stale").await;
    let api = bundles(&client, &ns);
    apply_yaml(
        &ns,
        &bundle_yaml(
            "web",
            "  replicas: 2\n  disruptionBudget: {maxUnavailable: 1}\n",
        ),
    );
    wait_bundle(&api, "web", SECONDS_30, "Ready", is_ready).await;
    let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), &ns);
    budgets.get("web").await.unwrap();
    run_ok(kubectl(&[
        "delete",
        "appbundle",
        "web",
        "-n",
        &ns,
        "--cascade=orphan",
        "--wait=true",
    ]));
    eventually(SECONDS_30, "the budget to lose its owner", || async {
        let b = budgets.get("web").await.map_err(|e| e.to_string())?;
        if b.owner_references().is_empty() {
            Ok(())
        } else {
            Err("still owned".into())
        }
    })
    .await;
    apply_yaml(&ns, &bundle_yaml("web", "  replicas: 2\n"));
    wait_bundle(&api, "web", SECONDS_30, "Ready again", is_ready).await;
    eventually(SECONDS_30, "the orphaned budget to be deleted", || async {
        match budgets.get_opt("web").await {
            Ok(None) => Ok(()),
            Ok(Some(b)) => Err(format!("still there, owners {:?}", b.owner_references())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    delete_namespace(&client, &ns).await;
}

/// A child that is being deleted (held by a finalizer) is waited for, not reported as a Stalled
/// name conflict; once it is gone, kubundle creates it again. (Before: Ready stayed True with a
/// Deployment on its way out.)
#[tokio::test]
async fn a_terminating_child_is_waited_for() {
    let client = client().await;
    let ns = create_namespace(&client, "terminating").await;
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle_yaml("web", ""));
    wait_bundle(&api, "web", SECONDS_30, "Ready", is_ready).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let old_uid = deployments.get("web").await.unwrap().uid();
    let hold = serde_json::json!({"metadata": {"finalizers": ["kubundle.dev/test-hold"]}});
    let _release = ReleaseOnDrop {
        ns: ns.clone(),
        object: "deployment/web".into(),
    };
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    deployments
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();

    let b = wait_bundle(
        &api,
        "web",
        SECONDS_30,
        "Ready=False ChildTerminating",
        |b| condition_of(b, "Ready").is_some_and(|c| c.0 == "False" && c.1 == "ChildTerminating"),
    )
    .await;
    assert_eq!(condition_of(&b, "Stalled").unwrap().0, "False");
    assert_eq!(condition_of(&b, "Reconciling").unwrap().0, "True");

    let release = serde_json::json!({"metadata": {"finalizers": null}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    wait_bundle(
        &api,
        "web",
        SECONDS_30,
        "Ready with a new Deployment",
        is_ready,
    )
    .await;
    assert_ne!(deployments.get("web").await.unwrap().uid(), old_uid);
    delete_namespace(&client, &ns).await;
}

/// A spec the schema admits but the API server refuses to apply is Stalled with the server's
/// words and a Warning Event, for the current generation; fixing the spec recovers. Two kinds:
/// two topology spread constraints with the same key, which server-side apply reports as HTTP
/// 500 ("duplicate entries for key"), and requests above limits, a 422. (Before: no status, no Event, retries forever,
/// and the Ready column kept the previous generation's True.)
#[tokio::test]
async fn a_refused_apply_is_stalled_with_the_servers_message() {
    let client = client().await;
    let ns = create_namespace(&client, "refused").await;
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle_yaml("web", ""));
    wait_bundle(&api, "web", SECONDS_30, "Ready", is_ready).await;

    for (extra, words) in [
        (
            "  podTemplate:\n    topologySpreadConstraints:\n    - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}\n    - {maxSkew: 2, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}\n",
            "duplicate entries",
        ),
        (
            "  resources: {requests: {memory: 2Gi}, limits: {memory: 1Gi}}\n",
            "must be less than or equal to memory limit",
        ),
        // The server's path of a sidecar, said as the user wrote it too.
        (
            "  sidecars: [{name: proxy, image: nginx:1.27, resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}}]\n",
            "initContainers[0].resources.requests (spec.sidecars[0].resources.requests)",
        ),
    ] {
        apply_yaml(&ns, &bundle_yaml("web", extra));
        let generation = api.get("web").await.unwrap().metadata.generation;
        let b = wait_bundle(
            &api,
            "web",
            Duration::from_secs(10),
            "Stalled for the new generation",
            |b| {
                b.status.as_ref().and_then(|s| s.observed_generation) == generation
                    && condition_of(b, "Stalled").is_some_and(|c| c.0 == "True")
            },
        )
        .await;
        let (_, reason, message) = condition_of(&b, "Stalled").unwrap();
        assert_eq!(reason, "WriteRefused");
        assert!(message.contains("Deployment"), "{message}");
        assert!(message.contains(words), "not the server's words: {message}");
        assert_eq!(condition_of(&b, "Ready").unwrap().0, "False");
        let warning = warning_event(&client, &ns, "web").await;
        assert_eq!(warning.reason.as_deref(), Some("WriteRefused"));
        // The other child's write went through: its request was not cancelled.
        let s: Service = Api::namespaced(client.clone(), &ns)
            .get("web")
            .await
            .unwrap();
        assert!(
            s.annotations()
                .contains_key(kubundle::reconcile::RENDERED_HASH)
        );
    }

    apply_yaml(
        &ns,
        &bundle_yaml(
            "web",
            "  resources: {requests: {memory: 1Gi}, limits: {memory: 1Gi}}\n",
        ),
    );
    wait_bundle(&api, "web", SECONDS_30, "Ready after the fix", is_ready).await;
    delete_namespace(&client, &ns).await;
}

/// Quantities written as numbers, as core/v1 accepts them (`cpu: 0.5`, `memory: 1e9`), are
/// admitted and applied; an unparsable one is refused at apply time. (Before: `cpu: 0.5` was
/// refused with "must be of type integer,string", and `memory: lots` was admitted.)
#[tokio::test]
async fn quantities_accept_numbers_and_refuse_nonsense() {
    let client = client().await;
    let ns = create_namespace(&client, "quantities").await;
    let api = bundles(&client, &ns);
    apply_yaml(
        &ns,
        &bundle_yaml(
            "num",
            "  resources: {requests: {cpu: 0.5, memory: 1e9}, limits: {cpu: 2}}\n",
        ),
    );
    wait_bundle(&api, "num", SECONDS_30, "Ready", is_ready).await;
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("num")
        .await
        .unwrap();
    let resources = container(&d).resources.clone().unwrap();
    let requests = resources.requests.unwrap();
    assert_eq!(requests["cpu"].0, "500m");
    assert_eq!(requests["memory"].0, "1G");
    let out = kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-"],
        &bundle_yaml("lots", "  resources: {limits: {memory: lots}}\n"),
    );
    assert!(!out.status.success(), "memory: lots was admitted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("spec.resources.limits.memory"), "{stderr}");
    assert!(stderr.contains("should match"), "{stderr}");
    delete_namespace(&client, &ns).await;
}

/// Pods that cannot be created (here: a ServiceAccount that does not exist) show at once in
/// Ready's reason and message. (Before: "RollingOut 0 of 1 pods updated" for the whole progress
/// deadline.)
#[tokio::test]
async fn pod_creation_failures_show_in_ready() {
    let client = client().await;
    let ns = create_namespace(&client, "podfail").await;
    let api = bundles(&client, &ns);
    apply_yaml(
        &ns,
        &bundle_yaml("web", "  podTemplate: {serviceAccountName: nobody}\n"),
    );
    let b = wait_bundle(
        &api,
        "web",
        SECONDS_30,
        "Ready=False PodCreationFailed",
        |b| condition_of(b, "Ready").is_some_and(|c| c.1 == "PodCreationFailed"),
    )
    .await;
    let (status, _, message) = condition_of(&b, "Ready").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("nobody"), "{message}");
    // It can fix itself: not Stalled.
    assert_eq!(condition_of(&b, "Stalled").unwrap().0, "False");
    run_ok(kubectl(&["create", "serviceaccount", "nobody", "-n", &ns]));
    wait_bundle(
        &api,
        "web",
        Duration::from_secs(60),
        "Ready once the ServiceAccount exists",
        is_ready,
    )
    .await;
    delete_namespace(&client, &ns).await;
}

/// With a foreign Service of the AppBundle's name, nothing is created (no pods without their
/// Service); once the Service is gone, kubundle notices within seconds. (Before: the Deployment
/// was created anyway, and the removal was noticed by the 60 s requeue.)
#[tokio::test]
async fn a_conflict_blocks_every_child_and_its_end_is_noticed() {
    let client = client().await;
    let ns = create_namespace(&client, "unit").await;
    run_ok(kubectl(&[
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:80",
        "-n",
        &ns,
    ]));
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle_yaml("web", ""));
    wait_bundle(&api, "web", SECONDS_30, "Stalled NameConflict", |b| {
        condition_of(b, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "NameConflict")
    })
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        deployments.get_opt("web").await.unwrap().is_none(),
        "a Deployment was created while its Service is blocked"
    );
    run_ok(kubectl(&["delete", "service", "web", "-n", &ns]));
    let start = std::time::Instant::now();
    wait_bundle(
        &api,
        "web",
        Duration::from_secs(15),
        "Ready after the conflict ended",
        is_ready,
    )
    .await;
    assert!(start.elapsed() < Duration::from_secs(15));
    delete_namespace(&client, &ns).await;
}

/// The AppBundle's own labels (the tutorial's `app: redis`) reach the Deployment, its pods and
/// the Service, so `kubectl get pods -l app=redis` finds them; GitOps tracking labels do not.
#[tokio::test]
async fn bundle_labels_reach_the_children_and_pods() {
    let client = client().await;
    let ns = create_namespace(&client, "labels").await;
    let api = bundles(&client, &ns);
    let yaml = "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata:\n  name: redis-leader\n  labels: {app: redis, role: leader, tier: backend, kustomize.toolkit.fluxcd.io/name: apps}\nspec:\n  image: redis:7\n  ports: [{containerPort: 6379}]\n";
    apply_yaml(&ns, yaml);
    wait_bundle(&api, "redis-leader", SECONDS_30, "Ready", is_ready).await;
    let d: Deployment = Api::namespaced(client.clone(), &ns)
        .get("redis-leader")
        .await
        .unwrap();
    let s: Service = Api::namespaced(client.clone(), &ns)
        .get("redis-leader")
        .await
        .unwrap();
    let template = d.spec.as_ref().unwrap().template.metadata.clone().unwrap();
    for labels in [d.labels(), s.labels(), template.labels.as_ref().unwrap()] {
        assert_eq!(labels.get("app").map(String::as_str), Some("redis"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("backend"));
        assert!(!labels.contains_key("kustomize.toolkit.fluxcd.io/name"));
    }
    let pods = run_ok(kubectl(&[
        "get",
        "pods",
        "-n",
        &ns,
        "-l",
        "app=redis,role=leader",
        "-o",
        "name",
    ]));
    assert_eq!(pods.lines().count(), 1, "{pods}");
    // The selector never changes.
    let selector = d.spec.unwrap().selector.match_labels.unwrap();
    assert!(!selector.contains_key("app"), "{selector:?}");

    // A label change alone (no new generation) reaches the children too.
    run_ok(kubectl(&[
        "label",
        "appbundle",
        "redis-leader",
        "-n",
        &ns,
        "tier=cache",
        "--overwrite",
    ]));
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    eventually(SECONDS_30, "the new label on the Service", || async {
        let s = services
            .get("redis-leader")
            .await
            .map_err(|e| e.to_string())?;
        match s.labels().get("tier").map(String::as_str) {
            Some("cache") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    delete_namespace(&client, &ns).await;
}

/// What the API server would refuse anyway, or what could not take effect, is refused at apply
/// time with a message naming the field.
#[tokio::test]
async fn more_invalid_bundles_are_refused_at_apply_time() {
    let client = client().await;
    let ns = create_namespace(&client, "admission").await;
    let cases: &[(&str, &str)] = &[
        (
            "  env: [{name: A, value: '1'}, {name: A, value: '2'}]\n",
            "Duplicate value",
        ),
        (
            "  podTemplate:\n    volumes: [{name: data, emptyDir: {}}]\n    volumeMounts: [{name: data, mountPath: /d}, {name: data, mountPath: /d}]\n",
            "Duplicate value",
        ),
        (
            "  podTemplate:\n    volumes: [{name: a, emptyDir: {}}, {name: a, emptyDir: {}}]\n",
            "Duplicate value",
        ),
        (
            "  podTemplate:\n    volumeMounts: [{name: nowhere, mountPath: /d}]\n",
            "must name a volume declared in spec.podTemplate.volumes",
        ),
        (
            "  service: {externalTrafficPolicy: Local}\n",
            "externalTrafficPolicy only applies",
        ),
        (
            "  service: {type: Headless, externalTrafficPolicy: Local}\n",
            "externalTrafficPolicy only applies",
        ),
        (
            "  service: {type: NodePort, loadBalancerSourceRanges: [10.0.0.0/8]}\n",
            "loadBalancerSourceRanges only applies",
        ),
        (
            "  podTemplate: {imagePullSecrets: [{name: pull}, {name: pull}]}\n",
            "Duplicate value",
        ),
        (
            "  podTemplate: {labels: {tier: 'not a label value'}}\n",
            "spec.podTemplate.labels.tier",
        ),
        (
            "  podTemplate: {labels: {'bad key!': x}}\n",
            "label keys must be",
        ),
        (
            "  service: {labels: {tier: 'no way!'}}\n",
            "spec.service.labels.tier",
        ),
        (
            "  podTemplate:\n    volumes: [{name: Data_1, emptyDir: {}}]\n",
            "spec.podTemplate.volumes[0].name",
        ),
        (
            "  ports: [{name: http, containerPort: 80, appProtocol: 'not a protocol!'}]\n",
            "spec.ports[0].appProtocol",
        ),
        (
            "  podTemplate:\n    volumes: [{name: data, emptyDir: {sizeLimit: huge}}]\n",
            "sizeLimit",
        ),
        // (NAME is the AppBundle's name, which the main container has)
        (
            "  sidecars: [{name: NAME, image: proxy}]\n",
            "spec.sidecars[].name must differ from the AppBundle's name",
        ),
        (
            "  initContainers: [{name: NAME, image: migrate}]\n",
            "spec.initContainers[].name must differ from the AppBundle's name",
        ),
        (
            "  sidecars: [{name: proxy, image: proxy}]\n  initContainers: [{name: proxy, image: migrate}]\n",
            "a name cannot be both in spec.sidecars and in spec.initContainers",
        ),
        (
            "  sidecars: [{name: proxy, image: proxy}, {name: proxy, image: logs}]\n",
            "Duplicate value",
        ),
        (
            "  sidecars: [{name: proxy, image: proxy, restartPolicy: OnFailure}]\n",
            "spec.sidecars[].restartPolicy can only be Always",
        ),
        (
            "  initContainers: [{name: migrate, image: migrate, restartPolicy: Always}]\n",
            "spec.initContainers[].restartPolicy must not be set",
        ),
        (
            "  initContainers: [{name: migrate, image: migrate, livenessProbe: {tcpSocket: {port: 5432}}}]\n",
            "spec.initContainers[] cannot have probes",
        ),
        (
            "  sidecars: [{name: Log_Shipper, image: logs}]\n",
            "spec.sidecars[0].name",
        ),
        // Canaries: the split needs a Gateway; steps rise, at most 10; checks have bounds.
        (
            "  rollout: {canary: {steps: [{weight: 20}]}}\n",
            "spec.rollout.canary needs spec.http.gateway",
        ),
        (
            "  http: {ingress: {}}\n  rollout: {canary: {steps: [{weight: 20}]}}\n",
            "spec.rollout.canary needs spec.http.gateway",
        ),
        (
            "  http: {gateway: {name: gw}}\n  rollout: {canary: {steps: [{weight: 50}, {weight: 20}]}}\n",
            "must rise from one step to the next",
        ),
        (
            "  http: {gateway: {name: gw}}\n  rollout: {canary: {steps: [{weight: 0}]}}\n",
            "spec.rollout.canary.steps[0].weight",
        ),
        (
            "  http: {gateway: {name: gw}}\n  rollout: {canary: {steps: [{weight: 1}, {weight: 2}, {weight: 3}, {weight: 4}, {weight: 5}, {weight: 6}, {weight: 7}, {weight: 8}, {weight: 9}, {weight: 10}, {weight: 11}]}}\n",
            "spec.rollout.canary.steps",
        ),
        (
            "  http: {gateway: {name: gw}}\n  rollout: {canary: {steps: [{weight: 20}], analysis: {prometheus: [{name: errors, address: 'http://p:9090', query: up}]}}}\n",
            "needs min or max",
        ),
    ];
    for (i, (extra, expected)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let yaml = bundle_yaml(&name, &extra.replace("NAME", &name));
        let out = kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &yaml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} was admitted:\n{extra}");
        assert!(stderr.contains(expected), "case {i}: {stderr}");
    }
    // An image with surrounding whitespace (pods with it cannot be created).
    let out = kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-"],
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: ws}\nspec:\n  image: ' nginx:1.27'\n  ports: [{containerPort: 80}]\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("whitespace"));

    // Headless <-> ClusterIP cannot change in place: refused with what to do instead.
    apply_yaml(&ns, &bundle_yaml("hl", "  service: {type: Headless}\n"));
    let out = kubectl_stdin(
        &["apply", "-n", &ns, "-f", "-"],
        &bundle_yaml("hl", "  service: {type: ClusterIP}\n"),
    );
    assert!(!out.status.success(), "the type change was admitted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot change to or from Headless"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    delete_namespace(&client, &ns).await;
}

/// JSON logs carry the AppBundle's namespace and name in fields of their own; the CPU counter is
/// not stuck at whole seconds.
#[tokio::test]
async fn logs_name_the_bundle_and_cpu_is_counted() {
    let client = client().await;
    let ns = create_namespace(&client, "logs").await;
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle_yaml("logged", ""));
    wait_bundle(&api, "logged", SECONDS_30, "Ready", is_ready).await;
    let log = kubeconfig_path()
        .with_file_name("logs")
        .join("kubundle.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let found = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|l| {
            l["span"]["appbundle.namespace"] == ns.as_str()
                && l["span"]["appbundle.name"] == "logged"
                && l["span"]["name"] == "reconcile"
        });
    assert!(found, "no log line names {ns}/logged in {}", log.display());
    let cpu = sample(
        &scrape(&format!("{}/metrics", metrics_url())).await,
        "process_cpu_seconds_total",
    )
    .unwrap();
    assert!(
        cpu > 0.0 && cpu.fract() != 0.0,
        "process_cpu_seconds_total = {cpu}"
    );
    delete_namespace(&client, &ns).await;
}

/// Old pods still shutting down keep Ready False: a user (or `kubectl wait`) would not call the
/// new version rolled out while the old one still serves. (Before: Ready was True.)
#[tokio::test]
async fn ready_waits_for_old_pods_to_terminate() {
    let client = client().await;
    let ns = create_namespace(&client, "oldpods").await;
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle_yaml("web", ""));
    wait_bundle(&api, "web", SECONDS_30, "Ready", is_ready).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let old = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(old.len(), 1);
    let old_name = old[0].name_any();
    // A finalizer keeps the old pod Terminating, as a slow graceful shutdown would.
    let hold = serde_json::json!({"metadata": {"finalizers": ["kubundle.dev/test-hold"]}});
    let _release = ReleaseOnDrop {
        ns: ns.clone(),
        object: format!("pod/{old_name}"),
    };
    pods.patch(&old_name, &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    apply_yaml(&ns, &bundle_yaml("web", "  args: [--v2]\n"));
    let b = wait_bundle(&api, "web", SECONDS_30, "the old pod Terminating", |b| {
        condition_of(b, "Ready").is_some_and(|c| c.1 == "PodsTerminating")
    })
    .await;
    assert_eq!(condition_of(&b, "Ready").unwrap().0, "False");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = api.get("web").await.unwrap();
    assert!(!is_ready(&b), "Ready while the old pod terminates");
    let release = serde_json::json!({"metadata": {"finalizers": null}});
    pods.patch(&old_name, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    wait_bundle(
        &api,
        "web",
        SECONDS_30,
        "Ready once the old pod is gone",
        is_ready,
    )
    .await;
    delete_namespace(&client, &ns).await;
}

/// Hostile AppBundles that the schema cannot refuse (the rule depends on other objects, or only
/// the API server's validation of the Deployment or Service knows it), applied at once beside a
/// good one: each is Stalled within 10 s with the API server's words (or, where it can fix
/// itself, Ready=False saying why its pods cannot be created), and none holds up the others.
#[tokio::test]
async fn hostile_bundles_are_stalled_with_the_servers_words_and_block_no_one() {
    let client = client().await;
    let ns = create_namespace(&client, "hostile").await;
    let cases = support::hostile::CASES;
    let mut all = cases
        .iter()
        .enumerate()
        .map(|(i, (extra, _))| bundle_yaml(&format!("h{i}"), extra))
        .collect::<Vec<_>>();
    all.push(bundle_yaml("good", ""));
    let out = kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], &all.join("---\n"));
    assert!(
        out.status.success(),
        "a hostile case was refused at admission (move it to the admission test): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let api = bundles(&client, &ns);
    let start = std::time::Instant::now();
    wait_bundle(&api, "good", SECONDS_30, "the good one Ready", is_ready).await;
    for (i, (extra, words)) in cases.iter().enumerate() {
        let name = format!("h{i}");
        let b = wait_bundle(
            &api,
            &name,
            Duration::from_secs(10)
                .saturating_sub(start.elapsed())
                .max(Duration::from_secs(1)),
            &format!("{name} Stalled ({extra})"),
            support::hostile::at_rest,
        )
        .await;
        if let Some(wrong) = support::hostile::wrong(&b, extra, words) {
            panic!("{wrong}");
        }
    }
    eprintln!(
        "{} hostile AppBundles Stalled with the API server's words in {:?}",
        cases.len(),
        start.elapsed()
    );
    delete_namespace(&client, &ns).await;
}

//! Everyday operations that must never cut an application's capacity: autoscaling turned on and
//! off without `replicas` in the manifest (the GitOps way), and rollbacks across autoscaling and
//! during a stuck rollout. End to end on the local control plane (tests/run.sh starts the
//! operator); the autoscaler is played by `kubectl scale deployment` (kwok's pods report no
//! metrics), exactly the write the HPA controller makes.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, Client};
use kubundle::api::AppBundle;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// `kubectl apply --server-side` of a manifest, as a GitOps tool applies it: a field left out of
/// the manifest is removed from the object.
fn apply_manifest(ns: &str, yaml: &str) {
    let out = kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=git",
            "-n",
            ns,
            "-f",
            "-",
        ],
        yaml,
    );
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manifest(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {name}}}\n\
         spec:\n  image: {image}\n  ports: [{{name: http, containerPort: 80}}]\n\
         \x20 resources: {{requests: {{cpu: 100m}}}}\n{extra}"
    )
}

async fn replicas_of(deployments: &Api<Deployment>, name: &str) -> i32 {
    deployments
        .get(name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .replicas
        .unwrap_or(1)
}

/// The fewest replicas the Deployment had over `period`, sampled every 100 ms.
async fn lowest_replicas(deployments: &Api<Deployment>, name: &str, period: Duration) -> i32 {
    let start = Instant::now();
    let mut lowest = i32::MAX;
    while start.elapsed() < period {
        lowest = lowest.min(replicas_of(deployments, name).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lowest
}

async fn ready_with(api: &Api<AppBundle>, name: &str, pods: i32) -> AppBundle {
    wait_bundle(api, name, WAIT, &format!("Ready with {pods} pods"), |b| {
        ready_at(b, pods)
    })
    .await
}

/// The autoscaler's scale: the HPA controller writes the Deployment's scale subresource.
fn autoscaler_scales(ns: &str, name: &str, replicas: i32) {
    run_ok(kubectl(&[
        "scale",
        "deployment",
        name,
        "-n",
        ns,
        &format!("--replicas={replicas}"),
    ]));
}

async fn gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(
        Duration::from_secs(15),
        "the autoscaler to be deleted",
        || async {
            match api.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".into()),
            }
        },
    )
    .await;
}

fn setup(client: &Client, ns: &str) -> (Api<AppBundle>, Api<Deployment>) {
    (
        Api::namespaced(client.clone(), ns),
        Api::namespaced(client.clone(), ns),
    )
}

/// `replicas: 4` -> autoscaling added and `replicas` removed from the manifest (the edit the
/// Kubernetes docs advise) -> the autoscaler scales to 5 -> autoscaling removed, still without
/// `replicas`: the pods never drop below what runs. (Before: `replicas` silently defaulted to 1
/// when it left the manifest, and removing autoscaling cut the Deployment from 5 pods to 1.)
#[tokio::test]
async fn autoscaling_on_and_off_without_replicas_keeps_the_pods_that_run() {
    let client = client().await;
    let ns = create_namespace(&client, "capacity-autoscale").await;
    let (api, deployments) = setup(&client, &ns);
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    apply_manifest(&ns, &manifest("web", "nginx:1.27", "  replicas: 4\n"));
    ready_with(&api, "web", 4).await;

    let autoscaling = "  autoscaling: {minReplicas: 2, maxReplicas: 6}\n";
    apply_manifest(&ns, &manifest("web", "nginx:1.27", autoscaling));
    let b = api.get("web").await.unwrap();
    assert_eq!(
        b.spec.replicas, None,
        "replicas left the manifest: it is not set (no default stands in for it)"
    );
    eventually(WAIT, "the autoscaler", || async {
        hpas.get_opt("web")
            .await
            .map_err(|e| e.to_string())?
            .map(|_| ())
            .ok_or("missing".to_string())
    })
    .await;
    assert_eq!(
        lowest_replicas(&deployments, "web", Duration::from_secs(4)).await,
        4,
        "the Deployment dipped when autoscaling took over"
    );
    autoscaler_scales(&ns, "web", 5);
    ready_with(&api, "web", 5).await;

    // Autoscaling removed, replicas still not in the manifest: the 5 pods stay.
    apply_manifest(&ns, &manifest("web", "nginx:1.27", ""));
    gone(&hpas, "web").await;
    assert_eq!(
        lowest_replicas(&deployments, "web", Duration::from_secs(6)).await,
        5,
        "removing autoscaling cut the pods"
    );
    let b = ready_with(&api, "web", 5).await;
    assert_eq!(b.status.unwrap().replica_summary.as_deref(), Some("5/5"));

    // Declaring replicas again rules: kubundle scales to it, and undoes a drift of it.
    apply_manifest(&ns, &manifest("web", "nginx:1.27", "  replicas: 3\n"));
    ready_with(&api, "web", 3).await;
    autoscaler_scales(&ns, "web", 7);
    eventually(Duration::from_secs(15), "the drift undone", || async {
        match replicas_of(&deployments, "web").await {
            3 => Ok(()),
            n => Err(n.to_string()),
        }
    })
    .await;
    delete_namespace(&client, &ns).await;
}

/// A rollback from an autoscaled spec to a revision without autoscaling keeps the pods the
/// autoscaler runs, and `--dry-run` says how many it will set. (Before: the rollback kept the
/// unused `spec.replicas`, 1, and the Deployment went from 5 pods to 1 at once; the dry run said
/// nothing of it.)
#[tokio::test]
async fn a_rollback_out_of_autoscaling_keeps_the_pods_that_run() {
    let client = client().await;
    let ns = create_namespace(&client, "capacity-rollback").await;
    let (api, deployments) = setup(&client, &ns);
    apply_manifest(&ns, &manifest("web", "nginx:1.27", "  replicas: 4\n"));
    ready_with(&api, "web", 4).await;
    let autoscaling = "  autoscaling: {minReplicas: 2, maxReplicas: 6}\n";
    apply_manifest(&ns, &manifest("web", "nginx:1.28", autoscaling));
    wait_bundle(&api, "web", WAIT, "Ready at revision 2", |b| {
        is_ready(b) && b.status.as_ref().and_then(|s| s.revision) == Some(2)
    })
    .await;
    autoscaler_scales(&ns, "web", 5);
    ready_with(&api, "web", 5).await;

    let dry = run_ok(kubectl_kubundle(&[
        "rollback",
        "web",
        "-n",
        &ns,
        "--dry-run",
    ]));
    assert!(
        dry.contains("would be rolled back to revision 1") && dry.contains("replicas 5 (now 5)"),
        "{dry}"
    );
    let out = run_ok(kubectl_kubundle(&["rollback", "web", "-n", &ns]));
    assert!(out.contains("replicas 5"), "{out}");
    assert_eq!(
        lowest_replicas(&deployments, "web", Duration::from_secs(6)).await,
        5,
        "the rollback cut the pods"
    );
    let b = wait_bundle(&api, "web", WAIT, "Ready at revision 3", |b| {
        is_ready(b) && b.status.as_ref().and_then(|s| s.revision) == Some(3)
    })
    .await;
    assert_eq!(b.spec.image, "nginx:1.27");
    assert_eq!(b.spec.replicas, Some(5));
    assert!(b.spec.autoscaling.is_none());
    delete_namespace(&client, &ns).await;
}

/// A rollback while a new spec is stuck rolling out goes back to the revision that ran (as
/// `kubectl rollout undo` does), not to the one before it. (Before: two revisions back.)
#[tokio::test]
async fn a_rollback_during_a_stuck_rollout_goes_back_to_the_revision_that_ran() {
    let client = client().await;
    let ns = create_namespace(&client, "capacity-stuck").await;
    let (api, _) = setup(&client, &ns);
    apply_manifest(&ns, &manifest("web", "nginx:1.26", "  replicas: 2\n"));
    wait_bundle(&api, "web", WAIT, "Ready at revision 1", |b| {
        is_ready(b) && b.status.as_ref().and_then(|s| s.revision) == Some(1)
    })
    .await;
    apply_manifest(&ns, &manifest("web", "nginx:1.27", "  replicas: 2\n"));
    wait_bundle(&api, "web", WAIT, "Ready at revision 2", |b| {
        is_ready(b) && b.status.as_ref().and_then(|s| s.revision) == Some(2)
    })
    .await;
    // A new spec whose pods can never be scheduled: the rollout cannot finish.
    let stuck =
        "  replicas: 2\n  podTemplate: {nodeSelector: {kubundle.dev/no-such-node: 'true'}}\n";
    apply_manifest(&ns, &manifest("web", "nginx:1.28", stuck));
    wait_bundle(&api, "web", WAIT, "rolling out the new spec", |b| {
        b.status.as_ref().and_then(|s| s.observed_generation) == b.metadata.generation
            && !is_ready(b)
    })
    .await;
    let dry = run_ok(kubectl_kubundle(&[
        "rollback",
        "web",
        "-n",
        &ns,
        "--dry-run",
    ]));
    assert!(
        dry.contains("would be rolled back to revision 2 (image nginx:1.27)"),
        "{dry}"
    );
    run_ok(kubectl_kubundle(&["rollback", "web", "-n", &ns]));
    let b = wait_bundle(&api, "web", WAIT, "Ready on nginx:1.27 again", |b| {
        is_ready(b) && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some("nginx:1.27")
    })
    .await;
    assert_eq!(b.spec.image, "nginx:1.27");
    delete_namespace(&client, &ns).await;
}

/// An autoscaler's scale is no rollout: Ready stays True throughout, the status is written at
/// most once for the scale (when it is done), and no RolledOut Event is published. (Before:
/// Ready went False (RollingOut) and back, two or more status writes and a RolledOut Event per
/// scale.)
#[tokio::test]
async fn an_autoscalers_scale_is_not_a_rollout() {
    let client = client().await;
    let ns = create_namespace(&client, "capacity-scale").await;
    let (api, _) = setup(&client, &ns);
    let autoscaling = "  autoscaling: {minReplicas: 2, maxReplicas: 6}\n";
    apply_manifest(&ns, &manifest("web", "nginx:1.27", autoscaling));
    let ready = ready_with(&api, "web", 2).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let rolled_out = || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("RolledOut"))
            .count()
    };
    // Let the first rollout's Events land.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events_before = rolled_out().await;

    autoscaler_scales(&ns, "web", 5);
    let start = Instant::now();
    let mut versions = vec![ready.metadata.resource_version.clone()];
    let mut writes = vec![serde_json::to_string(&ready.status).unwrap()];
    let mut not_ready = None;
    let mut done_at = None;
    // Every status write, sampled every 100 ms (progress is written at most every 2 s), until 5 s
    // after the scale is done.
    while start.elapsed() < Duration::from_secs(60) {
        let b = api.get("web").await.unwrap();
        if !is_ready(&b) && not_ready.is_none() {
            not_ready = Some(serde_json::to_string(&b.status).unwrap());
        }
        if versions.last() != Some(&b.metadata.resource_version) {
            versions.push(b.metadata.resource_version.clone());
            writes.push(serde_json::to_string(&b.status).unwrap());
        }
        if done_at.is_none() && b.status.as_ref().and_then(|s| s.ready_replicas) == Some(5) {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done_at.is_some(), "the status never showed 5 ready pods");
    assert_eq!(not_ready, None, "Ready left True during the scale");
    // The HPA controller reports its own view in its status (currentReplicas after its next sync,
    // here every 5 s; on kwok's pods, that it has no metrics), and kubundle mirrors that in
    // status.autoscaling: a write of its own, not of the scale. The scale itself is one write.
    let without_autoscaling = |w: &String| {
        let mut v: serde_json::Value = serde_json::from_str(w).unwrap();
        v.as_object_mut().unwrap().remove("autoscaling");
        v
    };
    let of_the_scale = writes
        .windows(2)
        .filter(|w| without_autoscaling(&w[0]) != without_autoscaling(&w[1]))
        .count();
    let statuses = writes.join("\n");
    assert_eq!(
        of_the_scale, 1,
        "status writes for one scale: {versions:?}, statuses:\n{statuses}"
    );
    assert!(
        versions.len() - 1 - of_the_scale <= 2,
        "more than the HPA's own reports (currentReplicas, its message) were written besides the \
         scale: {versions:?}, statuses:\n{statuses}"
    );
    assert_eq!(
        rolled_out().await,
        events_before,
        "a RolledOut Event for a scale"
    );
    delete_namespace(&client, &ns).await;
}

//! Rollout history and rollback, end to end on the local control plane (tests/run.sh starts the
//! operator): each fully rolled-out spec is a ControllerRevision owned by the AppBundle, numbered
//! from 1; `kubectl kubundle rollback` writes a recorded spec back, kubundle rolls it out, and
//! the status says which revision runs. The plugin runs as kubectl runs it (`kubectl kubundle`).

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, Deployment};
use k8s_openapi::api::core::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use kubundle::api::AppBundle;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn bundles(client: &Client, ns: &str) -> Api<AppBundle> {
    Api::namespaced(client.clone(), ns)
}

fn bundle(name: &str, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {name}}}\n\
         spec:\n  image: {image}\n  replicas: 2\n  ports: [{{name: http, containerPort: 80}}]\n{extra}"
    )
}

/// (number, name) of the AppBundle's ControllerRevisions, oldest first.
async fn revisions(client: &Client, ns: &str, name: &str) -> Vec<(i64, String)> {
    let params = ListParams::default().labels(&kubundle::render::selector_string(name));
    let mut out: Vec<(i64, String)> = Api::<ControllerRevision>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|r| (r.revision, r.metadata.name.unwrap()))
        .collect();
    out.sort();
    out
}

/// Ready on the newest spec, with the revision recorded.
async fn ready_at_revision(api: &Api<AppBundle>, name: &str, revision: i64) -> AppBundle {
    wait_bundle(
        api,
        name,
        WAIT,
        &format!("Ready at revision {revision}"),
        |b| is_ready(b) && b.status.as_ref().and_then(|s| s.revision) == Some(revision),
    )
    .await
}

async fn set_image(api: &Api<AppBundle>, name: &str, image: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"image": image}})),
    )
    .await
    .unwrap();
}

/// Revisions are recorded as specs roll out (not as replicas change); a rollback restores the
/// previous image, keeps the replicas, and the status says which revision runs: the recorded spec
/// rolled back to, renumbered as the newest (as `kubectl rollout history` shows a Deployment's).
#[tokio::test]
async fn a_rollback_restores_the_previous_image_and_the_status_names_the_revision() {
    let client = client().await;
    let ns = create_namespace(&client, "rollback").await;
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle("web", "nginx:1.26", ""));
    let first = ready_at_revision(&api, "web", 1).await;
    let first_name = first.status.unwrap().current_revision.unwrap();
    assert!(first_name.starts_with("web-"), "{first_name}");

    // Scaling is no new revision.
    run_ok(kubectl(&[
        "scale",
        "-n",
        &ns,
        "appbundle/web",
        "--replicas=3",
    ]));
    wait_bundle(&api, "web", WAIT, "Ready with 3 pods", |b| ready_at(b, 3)).await;
    assert_eq!(
        revisions(&client, &ns, "web").await,
        [(1, first_name.clone())]
    );

    set_image(&api, "web", "nginx:1.27").await;
    let second = ready_at_revision(&api, "web", 2).await;
    let second_name = second.status.unwrap().current_revision.unwrap();
    assert_ne!(second_name, first_name);

    let history = run_ok(kubectl_kubundle(&["history", "web", "-n", &ns]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines[0], "appbundle/web");
    assert!(
        lines[1].starts_with("REVISION") && lines[1].contains("IMAGE"),
        "{history}"
    );
    assert!(
        lines[2].starts_with("1 ") && lines[2].contains("nginx:1.26"),
        "{history}"
    );
    assert!(
        lines[3].starts_with("2 ") && lines[3].ends_with(&format!("{second_name} (running)")),
        "{history}"
    );

    let out = run_ok(kubectl_kubundle(&["rollback", "web", "-n", &ns]));
    assert!(
        out.starts_with("appbundle/web rolled back to revision 1 (image nginx:1.26)"),
        "{out}"
    );
    let back = ready_at_revision(&api, "web", 3).await;
    assert_eq!(back.spec.image, "nginx:1.26");
    assert_eq!(back.spec.replicas, Some(3), "a rollback does not scale");
    let status = back.status.unwrap();
    assert_eq!(
        status.current_revision.as_deref(),
        Some(first_name.as_str())
    );
    assert_eq!(status.image.as_deref(), Some("nginx:1.26"));
    let d = Api::<Deployment>::namespaced(client.clone(), &ns)
        .get("web")
        .await
        .unwrap();
    let image = d.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("nginx:1.26"));
    // The spec rolled back to is the same revision, renumbered: no copy.
    assert_eq!(
        revisions(&client, &ns, "web").await,
        [(2, second_name.clone()), (3, first_name.clone())]
    );
    let history = run_ok(kubectl_kubundle(&[
        "history", "web", "-n", &ns, "-o", "json",
    ]));
    let entries: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    let summary: Vec<(i64, &str, bool)> = entries
        .iter()
        .map(|e| {
            (
                e["number"].as_i64().unwrap(),
                e["image"].as_str().unwrap(),
                e["current"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(summary, [(2, "nginx:1.27", false), (3, "nginx:1.26", true)]);
    let spec = run_ok(kubectl_kubundle(&[
        "history",
        "web",
        "-n",
        &ns,
        "--revision",
        "2",
    ]));
    assert!(
        spec.contains(&format!("appbundle/web revision 2 ({second_name})"))
            && spec.contains("image: nginx:1.27"),
        "{spec}"
    );

    // The rollout's Event names the revision; rolling back to the running spec writes nothing.
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("RolledOut")
                && e.message
                    .as_deref()
                    .is_some_and(|m| m.ends_with("(revision 3)"))),
        "{:?}",
        events.items.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    let generation = api.get("web").await.unwrap().metadata.generation;
    let out = run_ok(kubectl_kubundle(&[
        "rollback",
        "web",
        "-n",
        &ns,
        "--to-revision",
        "3",
    ]));
    assert!(out.contains("skipped rollback"), "{out}");
    assert_eq!(
        api.get("web").await.unwrap().metadata.generation,
        generation
    );
    delete_namespace(&client, &ns).await;
}

/// An AppBundle a GitOps tool manages is not rolled back (the tool would undo it at its next
/// sync): the refusal says to revert in git; `--force` rolls back anyway, with a warning.
#[tokio::test]
async fn a_rollback_of_a_gitops_managed_bundle_is_refused_unless_forced() {
    let client = client().await;
    let ns = create_namespace(&client, "gitops-rollback").await;
    let api = bundles(&client, &ns);
    let tracked = bundle("shop", "nginx:1.26", "")
        .replace(
            "metadata: {name: shop}",
            "metadata: {name: shop, annotations: {argocd.argoproj.io/tracking-id: 'shop:kubundle.dev/AppBundle:ns/shop'}}",
        );
    apply_yaml(&ns, &tracked);
    ready_at_revision(&api, "shop", 1).await;
    set_image(&api, "shop", "nginx:1.27").await;
    ready_at_revision(&api, "shop", 2).await;

    let out = run(kubectl_kubundle(&["rollback", "shop", "-n", &ns]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("appbundle/shop is managed by Argo CD")
            && stderr.contains("Revert the change in git instead"),
        "{stderr}"
    );
    assert_eq!(api.get("shop").await.unwrap().spec.image, "nginx:1.27");

    let out = run_ok(kubectl_kubundle(&[
        "rollback", "shop", "-n", &ns, "--force",
    ]));
    assert!(
        out.contains("rolled back to revision 1") && out.contains("warning: Argo CD manages"),
        "{out}"
    );
    let back = ready_at_revision(&api, "shop", 3).await;
    assert_eq!(back.spec.image, "nginx:1.26");
    delete_namespace(&client, &ns).await;
}

/// `spec.revisionHistoryLimit` revisions are kept: the oldest go.
#[tokio::test]
async fn revisions_beyond_the_limit_are_deleted() {
    let client = client().await;
    let ns = create_namespace(&client, "history-limit").await;
    let api = bundles(&client, &ns);
    apply_yaml(
        &ns,
        &bundle("web", "nginx:1.24", "  revisionHistoryLimit: 2\n"),
    );
    ready_at_revision(&api, "web", 1).await;
    for (n, image) in [(2, "nginx:1.25"), (3, "nginx:1.26"), (4, "nginx:1.27")] {
        set_image(&api, "web", image).await;
        ready_at_revision(&api, "web", n).await;
    }
    let kept: Vec<i64> = revisions(&client, &ns, "web")
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(kept, [3, 4]);
    let out = run(kubectl_kubundle(&[
        "rollback",
        "web",
        "-n",
        &ns,
        "--to-revision",
        "1",
    ]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no revision 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    delete_namespace(&client, &ns).await;
}

/// The AppBundle's ControllerRevisions that it controls (by its current UID), as numbers.
async fn controlled_numbers(
    client: &Client,
    api: &Api<AppBundle>,
    ns: &str,
    name: &str,
) -> Vec<i64> {
    let uid = api.get(name).await.unwrap().metadata.uid.unwrap();
    let params = ListParams::default().labels(&kubundle::render::selector_string(name));
    let mut out: Vec<i64> = Api::<ControllerRevision>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .map(|r| r.revision)
        .collect();
    out.sort();
    out
}

/// History survives an orphan delete and re-adoption: the revisions are adopted with the
/// children, the next spec is recorded after them; a revision of the wanted name that another
/// owner holds is said in Ready's message. (Before: after re-adoption no revision was ever
/// recorded again, and the conflict was only logged, every 10 s.)
#[tokio::test]
async fn history_survives_an_orphan_delete_and_readoption() {
    let client = client().await;
    let ns = create_namespace(&client, "history-orphan").await;
    let api = bundles(&client, &ns);
    apply_yaml(&ns, &bundle("web", "nginx:1.27", ""));
    ready_at_revision(&api, "web", 1).await;
    set_image(&api, "web", "nginx:1.28").await;
    ready_at_revision(&api, "web", 2).await;

    run_ok(kubectl(&[
        "delete",
        "appbundle",
        "web",
        "-n",
        &ns,
        "--cascade=orphan",
        "--wait=true",
    ]));
    apply_yaml(&ns, &bundle("web", "nginx:1.28", ""));
    // Adopted with the children: the spec that runs is revision 2 again.
    ready_at_revision(&api, "web", 2).await;
    assert_eq!(
        controlled_numbers(&client, &api, &ns, "web").await,
        vec![1, 2]
    );
    set_image(&api, "web", "nginx:1.29").await;
    ready_at_revision(&api, "web", 3).await;
    assert_eq!(
        controlled_numbers(&client, &api, &ns, "web").await,
        vec![1, 2, 3]
    );
    let out = run_ok(kubectl_kubundle(&["history", "web", "-n", &ns]));
    assert!(
        out.contains("nginx:1.27") && out.contains("nginx:1.29"),
        "{out}"
    );

    // A foreign ControllerRevision with the name the next spec's revision would have.
    let mut next = api.get("web").await.unwrap().spec;
    next.image = "nginx:1.30".into();
    let taken = kubundle::history::revision_name("web", &next);
    let foreign = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": taken}, "data": {"theirs": true}, "revision": 1,
    });
    apply_yaml(&ns, &foreign.to_string());
    set_image(&api, "web", "nginx:1.30").await;
    let b = wait_bundle(
        &api,
        "web",
        WAIT,
        "Ready, saying history is not recorded",
        |b| {
            is_ready(b)
                && condition_of(b, "Ready")
                    .is_some_and(|c| c.2.contains("rollout history is not recorded"))
        },
    )
    .await;
    let message = condition_of(&b, "Ready").unwrap().2;
    assert!(message.contains(&taken), "{message}");
    assert_eq!(b.status.unwrap().revision, Some(3));
    delete_namespace(&client, &ns).await;
}

//! `kubectl kubundle status`, end to end on the local control plane (tests/run.sh starts the
//! operator): the tree of an AppBundle, its children and its pods, with the reason of whatever is
//! not ready, as text and as JSON; the plugin runs as kubectl runs it.

mod support;

use std::time::Duration;

use kube::{Api, Client};
use kubundle::api::AppBundle;
use serde_json::Value;
use support::*;

fn bundles(client: &Client, ns: &str) -> Api<AppBundle> {
    Api::namespaced(client.clone(), ns)
}

/// A Ready AppBundle: every line of the tree says Ready, and names each child and pod.
#[tokio::test]
async fn status_shows_the_tree_of_a_ready_bundle() {
    let client = client().await;
    let ns = create_namespace(&client, "plugin-ready").await;
    apply_yaml(
        &ns,
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: web}\n\
         spec:\n  image: nginx:1.27\n  replicas: 2\n  ports: [{name: http, containerPort: 8080, servicePort: 80}]\n\
         \x20 disruptionBudget: {maxUnavailable: 1}\n",
    );
    let api = bundles(&client, &ns);
    wait_bundle(&api, "web", Duration::from_secs(60), "Ready", |b| {
        is_ready(b) && b.status.as_ref().and_then(|s| s.revision) == Some(1)
    })
    .await;
    let text = run_ok(kubectl_kubundle(&["status", "web", "-n", &ns]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("AppBundle {ns}/web  Ready  2/2 pods ready, image nginx:1.27, revision 1"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("├─ Deployment web  Ready  2/2 ready, 2 updated, 2 available"),
        "{text}"
    );
    let pods: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("│  ├─ Pod web-") || l.starts_with("│  └─ Pod web-"))
        .collect();
    assert_eq!(pods.len(), 2, "{text}");
    assert!(
        pods.iter()
            .all(|l| l.contains("  Ready  Running, 1/1 containers ready, 0 restarts, on ")),
        "{text}"
    );
    assert!(
        text.contains("├─ Service web  Ready  ClusterIP ") && text.contains("ports 80→8080/TCP"),
        "{text}"
    );
    assert!(
        text.contains("└─ PodDisruptionBudget web  Ready  1 disruptions allowed"),
        "{text}"
    );
    assert!(!text.contains("NotReady"), "{text}");
    delete_namespace(&client, &ns).await;
}

/// An AppBundle whose pod cannot be scheduled: the AppBundle, its Deployment and the pod are not
/// ready, the pod line carries the scheduler's reason and words; `-o json` has the same tree.
#[tokio::test]
async fn status_says_why_a_pod_is_not_ready_as_text_and_json() {
    let client = client().await;
    let ns = create_namespace(&client, "plugin-stuck").await;
    apply_yaml(
        &ns,
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: stuck}\n\
         spec:\n  image: nginx:1.27\n  ports: [{containerPort: 80}]\n\
         \x20 podTemplate: {nodeSelector: {kubundle.dev/no-such-node: 'true'}}\n",
    );
    let api = bundles(&client, &ns);
    wait_bundle(
        &api,
        "stuck",
        Duration::from_secs(40),
        "Ready=False Unschedulable",
        |b| condition_of(b, "Ready").is_some_and(|c| c.1 == "Unschedulable"),
    )
    .await;
    let text = run_ok(kubectl_kubundle(&["status", "stuck", "-n", &ns]));
    assert!(
        text.starts_with(&format!("AppBundle {ns}/stuck  NotReady  0/1 pods ready")),
        "{text}"
    );
    assert!(text.contains("\n  Unschedulable: "), "{text}");
    let pod_line = text
        .lines()
        .position(|l| l.contains("─ Pod stuck-"))
        .unwrap_or_else(|| panic!("no pod line: {text}"));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[pod_line].contains("NotReady  Pending"), "{text}");
    assert!(
        lines[pod_line + 1]
            .trim_start_matches(['│', ' '])
            .starts_with("Unschedulable: pod stuck-")
            && lines[pod_line + 1].contains("node affinity/selector"),
        "{text}"
    );

    let json = run_ok(kubectl_kubundle(&[
        "status", "stuck", "-n", &ns, "-o", "json",
    ]));
    let tree: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(tree["namespace"], ns.as_str());
    let root = &tree["appBundle"];
    assert_eq!(
        (root["kind"].as_str(), root["ready"].as_bool()),
        (Some("AppBundle"), Some(false))
    );
    assert_eq!(root["reason"], "Unschedulable");
    let deployment = &root["children"][0];
    assert_eq!(deployment["kind"], "Deployment");
    let pod = &deployment["children"][0];
    assert_eq!(
        (pod["kind"].as_str(), pod["reason"].as_str()),
        (Some("Pod"), Some("Unschedulable"))
    );
    assert!(
        pod["message"]
            .as_str()
            .unwrap()
            .contains("cannot be scheduled"),
        "{json}"
    );

    // An AppBundle that does not exist: kubectl's words, exit code 1.
    let out = run(kubectl_kubundle(&["status", "nothing", "-n", &ns]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("error: appbundles.kubundle.dev \"nothing\" not found in namespace \"{ns}\"")
    );
    delete_namespace(&client, &ns).await;
}

/// The plugin under impersonation and RBAC, as kubectl: `--as`/`--as-group` act as another user,
/// a refusal is said in the server's words (`Error from server (Forbidden): ...`), and what the
/// user may not read is marked Forbidden in the tree while the rest is shown.
#[tokio::test]
async fn status_under_impersonation_says_what_rbac_hides() {
    let client = client().await;
    let ns = create_namespace(&client, "plugin-rbac").await;
    apply_yaml(
        &ns,
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: web}\n\
         spec: {image: nginx:1.27, replicas: 1, ports: [{containerPort: 80}]}\n",
    );
    let api = bundles(&client, &ns);
    wait_bundle(&api, "web", Duration::from_secs(60), "Ready", is_ready).await;

    // Nobody: refused, in the server's words.
    let nobody = format!("--as=system:serviceaccount:{ns}:nobody");
    let out = run(kubectl_kubundle(&["status", "web", "-n", &ns, &nobody]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("Error from server (Forbidden)")
            && stderr.contains("cannot get resource \"appbundles\""),
        "{stderr}"
    );
    // --as-group alone is refused as kubectl refuses it.
    let out = run(kubectl_kubundle(&[
        "status",
        "web",
        "-n",
        &ns,
        "--as-group=system:masters",
    ]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--as-group needs --as"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // May read the AppBundle, its Deployment and Service, not its pods: the rest is shown.
    let role = serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "partial"},
        "rules": [
            {"apiGroups": ["kubundle.dev"], "resources": ["appbundles"], "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
        ],
    });
    apply_yaml(&ns, &role.to_string());
    run_ok(kubectl(&[
        "create",
        "rolebinding",
        "partial",
        "-n",
        &ns,
        "--role=partial",
        "--group=partial-readers",
    ]));
    let text = run_ok(kubectl_kubundle(&[
        "status",
        "web",
        "-n",
        &ns,
        "--as=someone",
        "--as-group=partial-readers",
    ]));
    assert!(text.contains("Deployment web  Ready"), "{text}");
    assert!(text.contains("Service web  Ready"), "{text}");
    assert!(
        text.contains("Forbidden") && text.contains("cannot list resource \"pods\""),
        "{text}"
    );
    delete_namespace(&client, &ns).await;
}

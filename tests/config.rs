//! The ConfigMaps the pods use, end to end on the local control plane (tests/run.sh starts the
//! operator, which does not follow Secrets: the chart's default): a change of one rolls the pods
//! of an AppBundle with spec.rolloutOnConfigChange once, a write that changes nothing rolls
//! nothing, and a missing one is reported in status until it exists.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use kubundle::api::AppBundle;
use kubundle::render::config::CONFIG_DIGEST;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn bundles(client: &Client, ns: &str) -> Api<AppBundle> {
    Api::namespaced(client.clone(), ns)
}

fn bundle(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {name}}}\n\
         spec:\n  image: nginx:1.27\n  replicas: 2\n  ports: [{{name: http, containerPort: 80}}]\n{extra}"
    )
}

fn config_map(name: &str, greeting: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{greeting: {greeting}}}\n"
    )
}

/// (metadata.generation, the config digest on the pod template).
async fn template(client: &Client, ns: &str, name: &str) -> (i64, Option<String>) {
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let digest = d
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(CONFIG_DIGEST).cloned());
    (d.metadata.generation.unwrap_or(0), digest)
}

async fn replica_sets(client: &Client, ns: &str, name: &str) -> usize {
    let params = ListParams::default().labels(&kubundle::render::selector_string(name));
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
        .items
        .len()
}

/// Reasons of the Events on AppBundle `name`.
async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind=AppBundle,involvedObject.name={name}"
    ));
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&params)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// A ConfigMap's new contents roll the pods of the AppBundle that follows it, once; a write that
/// changes no contents (a re-apply, a new label) rolls nothing; an AppBundle that does not follow
/// it is not touched.
#[tokio::test]
async fn a_configmap_change_rolls_the_pods_once_and_a_no_op_write_does_not() {
    let client = client().await;
    let ns = create_namespace(&client, "config-roll").await;
    apply_yaml(&ns, &config_map("settings", "hello"));
    let uses = "  env:\n  - name: GREETING\n    valueFrom: {configMapKeyRef: {name: settings, key: greeting}}\n";
    apply_yaml(
        &ns,
        &bundle("follows", &format!("{uses}  rolloutOnConfigChange: true\n")),
    );
    apply_yaml(&ns, &bundle("ignores", uses));
    let api = bundles(&client, &ns);
    for name in ["follows", "ignores"] {
        wait_bundle(&api, name, WAIT, "Ready", is_ready).await;
    }
    let (generation, digest) = template(&client, &ns, "follows").await;
    let digest = digest.expect("the pod template carries the config digest");
    assert_eq!(digest.len(), 16);
    let (ignores_generation, ignores_digest) = template(&client, &ns, "ignores").await;
    assert_eq!(
        ignores_digest, None,
        "no digest without rolloutOnConfigChange"
    );
    assert_eq!(replica_sets(&client, &ns, "follows").await, 1);

    // Writes that change no contents: the same object again (the API server stores nothing), and
    // a new label (a new resourceVersion, the same data).
    apply_yaml(&ns, &config_map("settings", "hello"));
    run_ok(kubectl(&[
        "label",
        "-n",
        &ns,
        "configmap",
        "settings",
        "team=web",
    ]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        template(&client, &ns, "follows").await,
        (generation, Some(digest.clone())),
        "a write that changes no contents rolls nothing"
    );

    // New contents: one new pod template, one rollout.
    apply_yaml(&ns, &config_map("settings", "bonjour"));
    let new_digest = eventually(Duration::from_secs(20), "a new config digest", || async {
        match template(&client, &ns, "follows").await {
            (g, Some(d)) if d != digest => Ok((g, d)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(new_digest.0, generation + 1, "one new pod template");
    wait_bundle(
        &api,
        "follows",
        WAIT,
        "Ready after the config rollout",
        is_ready,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        template(&client, &ns, "follows").await,
        (generation + 1, Some(new_digest.1.clone())),
        "rolled once"
    );
    assert_eq!(replica_sets(&client, &ns, "follows").await, 2);
    assert_eq!(
        template(&client, &ns, "ignores").await,
        (ignores_generation, None),
        "the AppBundle without rolloutOnConfigChange is not touched"
    );
    let events = event_reasons(&client, &ns, "follows").await;
    let told: Vec<&(String, String)> = events.iter().filter(|e| e.0 == "ConfigChanged").collect();
    assert_eq!(told.len(), 1, "{events:?}");
    assert!(
        told[0].1.contains("ConfigMap settings")
            && told[0].1.contains(&format!("{digest} -> {}", new_digest.1)),
        "{}",
        told[0].1
    );
    assert!(
        !events.iter().any(|e| e.0 == "Updated"),
        "a config rollout is no drift: {events:?}"
    );
    delete_namespace(&client, &ns).await;
}

/// A ConfigMap the pods use and that does not exist is the AppBundle's Ready reason (not
/// Stalled: it is fixed by creating it), naming it and the field that uses it; an optional one
/// is not reported; once it exists the AppBundle is Ready.
#[tokio::test]
async fn a_missing_configmap_is_reported_until_it_exists() {
    let client = client().await;
    let ns = create_namespace(&client, "config-missing").await;
    let extra = "  envFrom: [{configMapRef: {name: settings}}]\n  podTemplate:\n    volumes: [{name: extra, configMap: {name: extras, optional: true}}]\n";
    apply_yaml(&ns, &bundle("web", extra));
    let api = bundles(&client, &ns);
    let b = wait_bundle(&api, "web", WAIT, "Ready=False ConfigMissing", |b| {
        condition_of(b, "Ready").is_some_and(|c| c.0 == "False" && c.1 == "ConfigMissing")
    })
    .await;
    let (_, _, message) = condition_of(&b, "Ready").unwrap();
    assert!(
        message.starts_with("ConfigMap settings (used by spec.envFrom[0]) does not exist"),
        "{message}"
    );
    assert!(!message.contains("extras"), "optional: {message}");
    assert_eq!(condition_of(&b, "Stalled").unwrap().0, "False");

    apply_yaml(&ns, &config_map("settings", "hello"));
    wait_bundle(
        &api,
        "web",
        Duration::from_secs(20),
        "Ready once it exists",
        is_ready,
    )
    .await;
    delete_namespace(&client, &ns).await;
}

/// Without the chart's `configRollouts.secrets` (tests/run.sh's operator has no --follow-secrets),
/// a Secret the pods use cannot be followed: Ready says so, instead of a rollout that never comes.
#[tokio::test]
async fn a_secret_that_cannot_be_followed_is_said_in_ready() {
    let client = client().await;
    let ns = create_namespace(&client, "config-secret").await;
    apply_yaml(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: api-token}\nstringData: {token: one}\n",
    );
    apply_yaml(
        &ns,
        &bundle(
            "web",
            "  rolloutOnConfigChange: true\n  env:\n  - name: TOKEN\n    valueFrom: {secretKeyRef: {name: api-token, key: token}}\n",
        ),
    );
    let api = bundles(&client, &ns);
    let b = wait_bundle(&api, "web", WAIT, "Ready", is_ready).await;
    let (_, _, message) = condition_of(&b, "Ready").unwrap();
    assert!(
        message.ends_with(
            "changes of Secret api-token roll nothing: kubundle may not read Secrets (chart value configRollouts.secrets)"
        ),
        "{message}"
    );
    delete_namespace(&client, &ns).await;
}

/// The AppBundles `name`s: each one's (generation of its Deployment, ReplicaSets).
async fn templates(client: &Client, ns: &str, names: &[String]) -> Vec<(i64, usize)> {
    let mut out = Vec::new();
    for name in names {
        out.push((
            template(client, ns, name).await.0,
            replica_sets(client, ns, name).await,
        ));
    }
    out
}

/// Ten AppBundles that follow one ConfigMap through envFrom. The ConfigMap deleted: each says
/// ConfigMissing and no pod rolls (pods made now could not start, and the rolling update would
/// take the old ones away); re-created with the same contents: Ready again and still no rollout.
/// (Before: the deletion rolled all of them, with a ConfigChanged Event each saying the contents
/// changed, and the re-creation rolled them all again.)
#[tokio::test]
async fn a_deleted_configmap_rolls_nothing_and_its_recreation_with_the_same_contents_neither() {
    let client = client().await;
    let ns = create_namespace(&client, "config-deleted").await;
    apply_yaml(&ns, &config_map("shared", "hello"));
    let names: Vec<String> = (0..10).map(|i| format!("app-{i}")).collect();
    let yaml: String = names
        .iter()
        .map(|n| {
            format!(
                "---\n{}",
                bundle(
                    n,
                    "  envFrom: [{configMapRef: {name: shared}}]\n  rolloutOnConfigChange: true\n"
                )
            )
        })
        .collect();
    apply_yaml(&ns, &yaml);
    let api = bundles(&client, &ns);
    for n in &names {
        wait_bundle(&api, n, WAIT, "Ready", is_ready).await;
    }
    let before = templates(&client, &ns, &names).await;
    assert!(before.iter().all(|(_, sets)| *sets == 1), "{before:?}");

    run_ok(kubectl(&["delete", "configmap", "shared", "-n", &ns]));
    for n in &names {
        wait_bundle(&api, n, WAIT, "Ready=False ConfigMissing", |b| {
            condition_of(b, "Ready").is_some_and(|c| c.0 == "False" && c.1 == "ConfigMissing")
        })
        .await;
    }
    // Past the settle window: nothing rolled.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        templates(&client, &ns, &names).await,
        before,
        "a missing ConfigMap rolled pods"
    );

    apply_yaml(&ns, &config_map("shared", "hello"));
    for n in &names {
        wait_bundle(&api, n, WAIT, "Ready once it exists again", is_ready).await;
    }
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        templates(&client, &ns, &names).await,
        before,
        "the same contents again rolled pods"
    );
    let events = event_reasons(&client, &ns, "app-0").await;
    assert!(!events.iter().any(|e| e.0 == "ConfigChanged"), "{events:?}");

    // New contents then roll each once.
    apply_yaml(&ns, &config_map("shared", "bonjour"));
    for n in &names {
        wait_bundle(&api, n, WAIT, "Ready after the new contents", |b| {
            is_ready(b)
        })
        .await;
    }
    eventually(WAIT, "one rollout each", || async {
        let now = templates(&client, &ns, &names).await;
        let rolled = now
            .iter()
            .zip(&before)
            .all(|(n, b)| n.0 == b.0 + 1 && n.1 == 2);
        if rolled {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await;
    delete_namespace(&client, &ns).await;
}

/// Ten edits of a ConfigMap within about 2.5 s roll the pods of the AppBundle that follows it
/// once, with the last contents, once the edits have settled (5 s without a change). (Before:
/// ten rollouts.)
#[tokio::test]
async fn a_burst_of_configmap_edits_rolls_the_pods_once() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Patch, PatchParams};
    let client = client().await;
    let ns = create_namespace(&client, "config-burst").await;
    apply_yaml(&ns, &config_map("settings", "v0"));
    apply_yaml(
        &ns,
        &bundle(
            "web",
            "  envFrom: [{configMapRef: {name: settings}}]\n  rolloutOnConfigChange: true\n",
        ),
    );
    let api = bundles(&client, &ns);
    wait_bundle(&api, "web", WAIT, "Ready", is_ready).await;
    let (generation, digest) = template(&client, &ns, "web").await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let start = std::time::Instant::now();
    for i in 1..=10 {
        let patch = serde_json::json!({"data": {"greeting": format!("v{i}")}});
        maps.patch("settings", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let burst = start.elapsed();
    assert!(burst < Duration::from_secs(5), "the burst took {burst:?}");
    let rolled = eventually(Duration::from_secs(30), "the rollout", || async {
        match template(&client, &ns, "web").await {
            (g, d) if d != digest => Ok(g),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(rolled, generation + 1);
    wait_bundle(&api, "web", WAIT, "Ready after the rollout", is_ready).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        template(&client, &ns, "web").await.0,
        generation + 1,
        "rolled more than once"
    );
    assert_eq!(replica_sets(&client, &ns, "web").await, 2);
    delete_namespace(&client, &ns).await;
}

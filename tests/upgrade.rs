//! Upgrading kubundle as its users do, on the real node: the previous release (its image, chart
//! and CRD, built from this repository's history by deploy/local/previous-release.sh) installed
//! with Helm, AppBundles with every kind of child Ready under it, then `helm upgrade` to this
//! checkout's chart and image.
//!
//! The upgrade is done the way people get it wrong first: `helm upgrade --wait` without applying
//! the new CRD (Helm never upgrades `crds/`). That must fail loudly (the new replica's `/readyz`
//! names the missing fields, so `--wait` times out) while the old replicas go on reconciling;
//! applying the CRD must then finish the rollout by itself. Throughout, every AppBundle stays
//! Ready for its current generation, no pod is rolled and no child is written: the new leader's
//! own write counters say so, and so do the children's generations and kubundle's managedFields.
//! After it, the next operations work: scale, a new image recorded as a revision.
//!
//! tests/run.sh runs this last, alone, after the other real-node tests (it uninstalls their
//! operator: two cluster-wide operators must never run at once).

mod support;

mod upgrade {
    use std::collections::BTreeMap;
    use std::process::Command;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use kube::api::{ListParams, PostParams};
    use kube::{Api, Client};
    use serde_json::Value;

    use crate::support::real::*;
    use crate::support::*;

    const NS: &str = "kubundle-upgrade";
    const RELEASE: &str = "kubundle-upgrade";
    const CURRENT: &str = env!("CARGO_PKG_VERSION");

    fn helm(args: &[&str]) -> Command {
        let mut cmd = Command::new("helm");
        cmd.args(args);
        cmd
    }

    /// `helm upgrade --install` of the operator from the OCI chart at `version` with `image`
    /// (repository, tag), waiting at most `timeout`: whether it succeeded, and helm's output.
    fn helm_upgrade(version: &str, image: (&str, &str), timeout: &str) -> (bool, String) {
        let chart = image_env("KUBUNDLE_CHART");
        let repository = format!("image.repository={}", image.0);
        let tag = format!("image.tag={}", image.1);
        let timeout = format!("--timeout={timeout}");
        let out = run(helm(&[
            "upgrade",
            "--install",
            RELEASE,
            &chart,
            "--version",
            version,
            "--plain-http",
            "-n",
            NS,
            "--set",
            &repository,
            "--set",
            &tag,
            "--wait",
            &timeout,
        ]));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn previous_image() -> (String, String) {
        (
            image_env("KUBUNDLE_PREVIOUS_IMAGE_REPOSITORY"),
            image_env("KUBUNDLE_PREVIOUS_IMAGE_TAG"),
        )
    }

    fn current_image() -> (String, String) {
        (
            image_env("KUBUNDLE_IMAGE_REPOSITORY"),
            image_env("KUBUNDLE_IMAGE_TAG"),
        )
    }

    /// What the upgrade must leave alone in `ns`: per child (Kind/name), its uid, generation and
    /// what kubundle's field managers own and when they last changed it; the ReplicaSets and pods
    /// by uid; the ControllerRevisions (rollout history) by uid.
    fn snapshot(ns: &str) -> BTreeMap<String, Value> {
        let out = run_ok(kubectl(&[
            "get",
            "-n",
            ns,
            "deployments,services,horizontalpodautoscalers,poddisruptionbudgets,httproutes,replicasets,pods,controllerrevisions",
            "-o",
            "json",
        ]));
        let list: Value = serde_json::from_str(&out).unwrap();
        let mut children = BTreeMap::new();
        for item in list["items"].as_array().unwrap() {
            let meta = &item["metadata"];
            if meta["deletionTimestamp"].is_string() {
                continue;
            }
            let key = format!(
                "{}/{}",
                item["kind"].as_str().unwrap(),
                meta["name"].as_str().unwrap()
            );
            let owned: Vec<&Value> = meta["managedFields"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter(|e| {
                            e["manager"]
                                .as_str()
                                .is_some_and(|m| m.starts_with("kubundle"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            children.insert(
                key,
                serde_json::json!({
                    "uid": meta["uid"],
                    "generation": meta["generation"],
                    "kubundle": owned,
                }),
            );
        }
        children
    }

    /// Differences between two snapshots, as lines a person reads.
    fn differences(
        before: &BTreeMap<String, Value>,
        after: &BTreeMap<String, Value>,
    ) -> Vec<String> {
        let mut diff = Vec::new();
        for (key, was) in before {
            match after.get(key) {
                None => diff.push(format!("{key} is gone")),
                Some(now) if now != was => diff.push(format!("{key} changed: {was} -> {now}")),
                Some(_) => {}
            }
        }
        for key in after.keys().filter(|k| !before.contains_key(*k)) {
            diff.push(format!("{key} is new"));
        }
        diff
    }

    async fn operator_pods_of(client: &Client, tag: &str) -> Vec<Pod> {
        release_pods(client, NS, RELEASE)
            .await
            .into_iter()
            .filter(|p| {
                p.spec.as_ref().is_some_and(|s| {
                    s.containers[0]
                        .image
                        .as_deref()
                        .is_some_and(|i| i.ends_with(&format!(":{tag}")))
                })
            })
            .collect()
    }

    fn pod_url(pod: &Pod, path: &str) -> Option<String> {
        let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
        Some(format!("http://{ip}:8080{path}"))
    }

    async fn lease_holder_of(client: &Client) -> Option<String> {
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), NS)
            .get_opt(RELEASE)
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }

    /// Writes the operator at `url` counted, other than its Lease, its AppBundles' status, its
    /// Events and server-side dry runs: writes of children and of rollout history.
    fn child_writes(metrics: &str) -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.starts_with("kubundle_api_writes_total{"))
            .filter(|l| {
                ![
                    "kind=\"Lease\"",
                    "kind=\"AppBundle\"",
                    "kind=\"Event\"",
                    "verb=\"dry_run\"",
                ]
                .iter()
                .any(|s| l.contains(s))
            })
            .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
            .map(str::to_string)
            .collect()
    }

    fn counter(metrics: &str, series: &str) -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Polls the AppBundles every 500 ms until stopped, recording every moment one of them was not
    /// Ready for its current generation.
    fn watch_ready(
        api: Api<kubundle::api::AppBundle>,
    ) -> (
        Arc<Mutex<Vec<String>>>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<u32>,
    ) {
        let lapses = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let seen = lapses.clone();
        let start = Instant::now();
        let task = tokio::spawn(async move {
            let mut polls = 0;
            loop {
                polls += 1;
                match api.list(&ListParams::default()).await {
                    Ok(list) => {
                        for b in list.items.iter().filter(|b| !is_ready(b)) {
                            seen.lock().unwrap().push(format!(
                                "{:?}: {} not Ready for generation {:?}: {}",
                                start.elapsed(),
                                b.metadata.name.as_deref().unwrap_or_default(),
                                b.metadata.generation,
                                serde_json::to_string(&b.status).unwrap()
                            ));
                        }
                    }
                    Err(e) => seen.lock().unwrap().push(format!("list failed: {e}")),
                }
                tokio::select! {
                    _ = &mut stopped => return polls,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
        (lapses, stop, task)
    }

    #[tokio::test]
    async fn an_upgrade_from_the_previous_release_rolls_no_pod_and_writes_no_child() {
        let client = client().await;
        let previous_version = image_env("KUBUNDLE_PREVIOUS_CHART_VERSION");
        let previous_crds = image_env("KUBUNDLE_PREVIOUS_CRDS");
        let (previous_repo, previous_tag) = previous_image();
        let (current_repo, current_tag) = current_image();
        assert_ne!(
            previous_version, CURRENT,
            "the previous release is this version"
        );

        // One cluster-wide operator at a time: the other real-node tests' goes first.
        if run(helm(&["status", RELEASE_OF_REAL_TESTS, "-n", OPERATOR_NS]))
            .status
            .success()
        {
            run_ok(helm(&[
                "uninstall",
                RELEASE_OF_REAL_TESTS,
                "-n",
                OPERATOR_NS,
                "--wait",
            ]));
        }

        // The previous release as its users have it: its CRD, its chart, its image.
        run_ok(kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &previous_crds,
        ]));
        run_ok(cluster_sh(&["real-namespace", NS]));
        run_ok(kubectl(&[
            "label",
            "namespace",
            NS,
            "--overwrite",
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ]));
        let start = Instant::now();
        let (ok, out) = helm_upgrade(&previous_version, (&previous_repo, &previous_tag), "3m");
        assert!(
            ok,
            "helm install of kubundle {previous_version} failed: {out}"
        );
        eprintln!(
            "kubundle {previous_version} installed, both replicas Ready: {:?}",
            start.elapsed()
        );

        // AppBundles with every kind of child the previous release renders.
        let ns = real_namespace(&client, "upgrade").await;
        let redis = image_env("REDIS_IMAGE");
        let frontend = image_env("FRONTEND_IMAGE");
        let mut settings = ConfigMap::default();
        settings.metadata.name = Some("settings".into());
        settings.data = Some([("GREETING".to_string(), "hello".to_string())].into());
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &settings)
            .await
            .unwrap();
        let cache = bundle(
            "cache",
            &redis,
            6379,
            "  replicas: 2\n  args: [--protected-mode, \"no\", --save, \"\", --appendonly, \"no\"]\n  \
             readinessProbe: {tcpSocket: {port: 6379}, periodSeconds: 1}\n  \
             disruptionBudget: {maxUnavailable: 1}\n",
        );
        let web = |version: &str| {
            format!(
                "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: web}}\nspec:\n  \
                 image: {frontend}:{version}\n  \
                 ports: [{{name: http, containerPort: 8080, servicePort: 80}}]\n  \
                 env: [{{name: REDIS_LEADER_SERVICE_HOST, value: cache}}, {{name: REDIS_FOLLOWER_SERVICE_HOST, value: cache}}]\n  \
                 envFrom: [{{configMapRef: {{name: settings}}}}]\n  rolloutOnConfigChange: true\n  \
                 readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}\n  \
                 resources: {{requests: {{cpu: 100m, memory: 32Mi}}}}\n  \
                 autoscaling: {{minReplicas: 1, maxReplicas: 2}}\n  \
                 http:\n    hostnames: [web.{ns}.test]\n    gateway: {{name: local, namespace: gateway-system}}\n"
            )
        };
        let book = bundle(
            "book",
            &format!("{frontend}:v1"),
            8080,
            &format!(
                "  env:\n  - {{name: REDIS_LEADER_SERVICE_HOST, value: 127.0.0.1}}\n  - {{name: REDIS_FOLLOWER_SERVICE_HOST, value: 127.0.0.1}}\n\
                 \x20 readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}\n\
                 \x20 sidecars:\n  - name: redis\n    image: {redis}\n    args: [--protected-mode, \"no\", --save, \"\", --appendonly, \"no\"]\n\
                 \x20   startupProbe: {{tcpSocket: {{port: 6379}}, periodSeconds: 1}}\n\
                 \x20 initContainers:\n  - name: seed\n    image: {redis}\n    command: [/usr/bin/redis-cli, -h, 127.0.0.1, rpush, guestbook, seeded]\n"
            ),
        );
        apply_yaml(&ns, &format!("{cache}\n---\n{}\n---\n{book}", web("v1")));
        let api = bundles(&client, &ns);
        for name in ["cache", "web", "book"] {
            wait_bundle(
                &api,
                name,
                Duration::from_secs(180),
                "Ready under the previous release",
                is_ready,
            )
            .await;
        }
        // The HPA and the HTTPRoute settled: the route accepted, the HPA reading metrics.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let before = snapshot(&ns);
        let bundles_before: Vec<(String, Option<i64>, Option<i64>)> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|b| {
                let revision = b.status.as_ref().and_then(|s| s.revision);
                (b.metadata.name.unwrap(), b.metadata.generation, revision)
            })
            .collect();
        for kind in [
            "Deployment/",
            "Service/",
            "HorizontalPodAutoscaler/",
            "PodDisruptionBudget/",
            "HTTPRoute/",
            "ControllerRevision/",
        ] {
            assert!(
                before.keys().any(|k| k.starts_with(kind)),
                "no {kind} under the previous release: {:?}",
                before.keys()
            );
        }
        let old_pods: Vec<String> = operator_pods_of(&client, &previous_tag)
            .await
            .into_iter()
            .map(|p| p.metadata.name.unwrap())
            .collect();
        assert_eq!(
            old_pods.len(),
            2,
            "two replicas of kubundle {previous_version}"
        );
        let (lapses, stop, watcher) = watch_ready(api.clone());

        // 1. helm upgrade without the new CRD: it must fail, and the new replica say why.
        let start = Instant::now();
        let (repo, tag) = (current_repo.clone(), current_tag.clone());
        let upgrade =
            tokio::task::spawn_blocking(move || helm_upgrade(CURRENT, (&repo, &tag), "45s"));
        let said = eventually(
            Duration::from_secs(40),
            "the new replica's /readyz answering 503",
            || async {
                let pods = operator_pods_of(&client, &current_tag).await;
                let Some(url) = pods.first().and_then(|p| pod_url(p, "/readyz")) else {
                    return Err("no new replica with an address yet".to_string());
                };
                // A replica still starting (its first question to the API server unanswered)
                // says so on a 503 of its own; what it says next, once it has read the CRD, is
                // the answer this step is about.
                match http_get(&url).await {
                    Ok((503, body)) if !body.starts_with("starting:") => Ok(body),
                    other => Err(format!("{url}: {other:?}")),
                }
            },
        )
        .await;
        eprintln!("the new replica's /readyz, the CRD not applied: 503 {said}");
        assert!(
            said.contains(&format!("older than this kubundle {CURRENT}"))
                && said.contains(".status.rollout")
                && said.contains(
                    "kubectl apply --server-side --force-conflicts -f charts/kubundle/crds/"
                ),
            "the 503 names the missing fields and the fix: {said}"
        );
        let (ok, out) = upgrade.await.unwrap();
        assert!(
            !ok,
            "helm upgrade --wait passed with the CRD of {previous_version}: {out}"
        );
        eprintln!(
            "helm upgrade --wait without the CRD failed after {:?}: {}",
            start.elapsed(),
            out.trim()
        );
        let holder = lease_holder_of(&client).await.unwrap_or_default();
        assert!(
            old_pods.contains(&holder),
            "a replica of {previous_version} still leads ({holder}); the new one stands by"
        );
        let still = operator_pods_of(&client, &previous_tag).await;
        assert!(
            still.len() == 2 && still.iter().all(pod_ready),
            "both old replicas still run and are Ready"
        );

        // 2. The CRD applied: the rollout finishes by itself, the new leader takes over.
        let crds = repo_root().join("crds");
        let applied = Instant::now();
        // As the 503 says: Helm 4 installed the chart's CRD by server-side apply as the field
        // manager `helm`, so without --force-conflicts this apply is refused (a conflict on
        // .spec.versions).
        run_ok(kubectl(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crds.to_str().unwrap(),
        ]));
        let leader = eventually(
            Duration::from_secs(120),
            "the new release's replicas Ready and one of them leading",
            || async {
                let new = operator_pods_of(&client, &current_tag).await;
                let old = operator_pods_of(&client, &previous_tag).await;
                let holder = lease_holder_of(&client).await.unwrap_or_default();
                let ready = new.iter().filter(|p| pod_ready(p)).count();
                match new
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(&holder))
                {
                    Some(p) if ready == 2 && old.is_empty() => Ok(p.clone()),
                    _ => Err(format!(
                        "{ready} new Ready, {} old, leader {holder}",
                        old.len()
                    )),
                }
            },
        )
        .await;
        eprintln!(
            "the CRD applied -> both new replicas Ready, a new one leading: {:?}",
            applied.elapsed()
        );

        // The new leader went through every AppBundle, and wrote no child.
        let metrics_url = pod_url(&leader, "/metrics").unwrap();
        let metrics = eventually(
            Duration::from_secs(60),
            "the new leader reconciling every AppBundle",
            || async {
                let text = http_get(&metrics_url).await.map_err(|e| e.to_string())?.1;
                let done = counter(&text, "kubundle_reconcile_total");
                if done >= 3.0 {
                    Ok(text)
                } else {
                    Err(format!("{done} reconciliations"))
                }
            },
        )
        .await;
        // More than one pass: what a reconcile writes, the next one would see.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let metrics = http_get(&metrics_url).await.map(|r| r.1).unwrap_or(metrics);
        eprintln!(
            "the new leader: {} reconciliations, {} status writes, child and history writes: {:?}",
            counter(&metrics, "kubundle_reconcile_total"),
            counter(&metrics, "kubundle_api_writes_total{kind=\"AppBundle\""),
            child_writes(&metrics)
        );
        assert!(
            child_writes(&metrics).is_empty(),
            "the new leader wrote children: {:?}",
            child_writes(&metrics)
        );
        assert_eq!(counter(&metrics, "kubundle_crd_missing_fields"), 0.0);
        let after = snapshot(&ns);
        let diff = differences(&before, &after);
        assert!(
            diff.is_empty(),
            "the upgrade changed children:\n{}",
            diff.join("\n")
        );

        // `helm upgrade --wait` again, as its error told: it passes now.
        let again = Instant::now();
        let (ok, out) = helm_upgrade(CURRENT, (&current_repo, &current_tag), "2m");
        assert!(ok, "helm upgrade after the CRD failed: {out}");
        eprintln!("helm upgrade --wait after the CRD: {:?}", again.elapsed());

        let _ = stop.send(());
        let polls = watcher.await.unwrap();
        let lapses = lapses.lock().unwrap().clone();
        assert!(
            lapses.is_empty(),
            "AppBundles were not Ready during the upgrade:\n{}",
            lapses.join("\n")
        );
        eprintln!(
            "every AppBundle Ready for its generation at each of {polls} polls (every 500 ms) of the upgrade"
        );
        for (name, generation, revision) in &bundles_before {
            let b = api.get(name).await.unwrap();
            assert_eq!(&b.metadata.generation, generation, "{name}'s generation");
            assert_eq!(
                &b.status.as_ref().and_then(|s| s.revision),
                revision,
                "{name}'s revision"
            );
        }

        // The next operations, under the new release: scale, and a new image recorded in history.
        let revision = bundles_before
            .iter()
            .find(|b| b.0 == "web")
            .unwrap()
            .2
            .unwrap_or(0);
        apply_yaml(
            &ns,
            &format!(
                "{}\n---\n{}",
                cache.replace("replicas: 2", "replicas: 3"),
                web("v2")
            ),
        );
        let scaled = wait_bundle(
            &api,
            "cache",
            Duration::from_secs(90),
            "cache scaled to 3",
            |b| ready_at(b, 3),
        )
        .await;
        assert_eq!(scaled.status.unwrap().replicas, Some(3));
        let web_now = wait_bundle(
            &api,
            "web",
            Duration::from_secs(120),
            "web at v2, recorded",
            |b| {
                is_ready(b)
                    && b.status
                        .as_ref()
                        .and_then(|s| s.image.as_deref())
                        .is_some_and(|i| i.ends_with(":v2"))
                    && b.status.as_ref().and_then(|s| s.revision) == Some(revision + 1)
            },
        )
        .await;
        eprintln!(
            "after the upgrade: cache scaled to 3, web rolled to v2 as revision {:?}",
            web_now.status.unwrap().revision
        );

        run_ok(helm(&["uninstall", RELEASE, "-n", NS, "--wait"]));
        delete_namespace(&client, &ns).await;
    }

    const RELEASE_OF_REAL_TESTS: &str = crate::support::real::RELEASE;
}

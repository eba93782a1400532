//! End-to-end tests that need the cluster to themselves: exact metric values and the steady state.
//! tests/run.sh runs them after the other tests, one at a time (`--test-threads=1`).

mod support;

mod isolated {
    use std::time::Duration;

    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams};
    use kube::{Api, Client};
    use kubundle::api::AppBundle;

    use crate::support::*;

    /// Waits until no namespace created by a test is left (their AppBundles are gone with them).
    async fn wait_for_test_namespaces_to_go(client: &Client) {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        eventually(
            Duration::from_secs(120),
            "test namespaces to be deleted",
            || async {
                let left = namespaces
                    .list(&ListParams::default().labels("kubundle.dev/test"))
                    .await
                    .map_err(|e| e.to_string())?;
                let terminating: Vec<_> = left
                    .items
                    .iter()
                    .filter(|n| n.metadata.deletion_timestamp.is_some())
                    .filter_map(|n| n.metadata.name.clone())
                    .collect();
                if terminating.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{terminating:?}"))
                }
            },
        )
        .await;
    }

    fn writes(metrics: &str) -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("kubundle_api_writes_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }

    /// Write requests (create, update, patch, apply, delete) the API server has served for the
    /// kinds kubundle writes, from its `apiserver_request_total`. Not counted: what the autoscaler
    /// controller writes on every sync (15 s) without metrics: its objects' status, and its
    /// Warning Events through core/v1 (kubundle's Events go through events.k8s.io).
    fn apiserver_writes() -> std::collections::BTreeMap<String, f64> {
        let text = run_ok(kubectl(&["get", "--raw", "/metrics"]));
        text.lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
            .filter(|l| {
                let autoscaler_status = l.contains("resource=\"horizontalpodautoscalers\"")
                    && l.contains("subresource=\"status\"");
                let core_event = l.contains("resource=\"events\"") && l.contains("group=\"\"");
                !autoscaler_status && !core_event
            })
            .filter(|l| {
                [
                    "deployments",
                    "services",
                    "horizontalpodautoscalers",
                    "poddisruptionbudgets",
                    "ingresses",
                    "httproutes",
                    "appbundles",
                    "events",
                    "controllerrevisions",
                ]
                .iter()
                .any(|r| l.contains(&format!("resource=\"{r}\"")))
                    && ["POST", "PUT", "PATCH", "APPLY", "DELETE"]
                        .iter()
                        .any(|v| l.contains(&format!("verb=\"{v}\"")))
            })
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_string(), value.parse::<f64>().unwrap())
            })
            .collect()
    }

    /// 11. /metrics exposes the metric families of DESIGN.md §4, with values that match what
    /// this test did: one AppBundle = one Deployment apply + one Service apply, no error, and the
    /// Ready gauge equal to the AppBundles the API server reports Ready.
    #[tokio::test]
    async fn metrics_match_what_happened() {
        let client = client().await;
        wait_for_test_namespaces_to_go(&client).await;
        let url = format!("{}/metrics", metrics_url());
        let before = scrape(&url).await;
        for family in [
            "# TYPE kubundle_reconcile_total counter",
            "# TYPE kubundle_reconcile_duration_seconds histogram",
            "# TYPE kubundle_reconcile_errors_total counter",
            "# TYPE kubundle_api_writes_total counter",
            "# TYPE kubundle_appbundles gauge",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_cpu_seconds_total counter",
        ] {
            assert!(before.contains(family), "/metrics lacks {family:?}");
        }
        let value = |text: &str, series: &str| {
            sample(text, series).unwrap_or_else(|| panic!("no sample {series}"))
        };

        let ns = create_namespace(&client, "metrics").await;
        apply_yaml(
            &ns,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: counted}\nspec: {image: nginx, replicas: 2, ports: [{containerPort: 80}]}\n",
        );
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        wait_bundle(
            &api,
            "counted",
            Duration::from_secs(30),
            "counted Ready",
            is_ready,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = scrape(&url).await;

        let delta = |series: &str| value(&after, series) - value(&before, series);
        assert_eq!(
            delta(r#"kubundle_api_writes_total{kind="Deployment",verb="apply"}"#),
            1.0
        );
        assert_eq!(
            delta(r#"kubundle_api_writes_total{kind="Service",verb="apply"}"#),
            1.0
        );
        assert!(delta(r#"kubundle_api_writes_total{kind="AppBundle",verb="apply_status"}"#) >= 1.0);
        assert!(delta(r#"kubundle_reconcile_total{result="success"}"#) >= 1.0);
        assert_eq!(delta(r#"kubundle_reconcile_total{result="error"}"#), 0.0);
        assert!(delta("kubundle_reconcile_duration_seconds_count") >= 1.0);

        let all: Api<AppBundle> = Api::all(client.clone());
        let ready = all
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|b| is_ready(b))
            .count();
        assert!(ready >= 1);
        assert_eq!(
            value(&after, r#"kubundle_appbundles{ready="True"}"#),
            ready as f64
        );
        assert!(value(&after, "process_resident_memory_bytes") > 0.0);

        api.delete("counted", &DeleteParams::default())
            .await
            .unwrap();
        delete_namespace(&client, &ns).await;
    }

    /// 10. Steady state: once everything has converged, kubundle sends no write for 30 s: by its
    /// own write counter, and by the API server's count of writes to the kinds kubundle writes.
    #[tokio::test]
    async fn steady_state_makes_no_writes() {
        let client = client().await;
        let ns = create_namespace(&client, "steady").await;
        let yaml =
            std::fs::read_to_string(repo_root().join("deploy/examples/guestbook.yaml")).unwrap();
        // No load balancer here: a ClusterIP frontend converges on its own.
        apply_yaml(&ns, &yaml.replace("type: LoadBalancer", "type: ClusterIP"));
        // And a tier with every optional child (an autoscaler and a disruption budget).
        apply_yaml(
            &ns,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: tiered}\nspec:\n  \
             image: nginx:1.27\n  ports: [{containerPort: 80}]\n  \
             resources: {requests: {cpu: 100m}}\n  autoscaling: {minReplicas: 2, maxReplicas: 4}\n  \
             disruptionBudget: {maxUnavailable: 1}\n  http: {hostnames: [a.example.com], ingress: {}}\n",
        );
        // And one that follows a ConfigMap, with a sidecar and an init container.
        apply_yaml(
            &ns,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {greeting: hello}\n\
             ---\napiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: configured}\nspec:\n  \
             image: nginx:1.27\n  ports: [{containerPort: 80}]\n  rolloutOnConfigChange: true\n  \
             envFrom: [{configMapRef: {name: settings}}]\n  \
             sidecars: [{name: proxy, image: envoy:1}]\n  initContainers: [{name: migrate, image: nginx:1.27}]\n",
        );
        // And one routed through a Gateway (the test plays the ingress and Gateway controllers).
        apply_yaml(
            &ns,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: routed}\nspec:\n  \
             image: nginx:1.27\n  ports: [{containerPort: 80}]\n  http: {gateway: {name: gw}}\n",
        );
        eventually(
            Duration::from_secs(60),
            "the Ingress and the HTTPRoute",
            || async {
                let ingress = run(kubectl(&["get", "ingress", "tiered", "-n", &ns]));
                let route = run(kubectl(&["get", "httproute", "routed", "-n", &ns]));
                if ingress.status.success() && route.status.success() {
                    Ok(())
                } else {
                    Err("not yet".to_string())
                }
            },
        )
        .await;
        run_ok(kubectl(&[
            "patch",
            "ingress",
            "tiered",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            r#"-p={"status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.8"}]}}}"#,
        ]));
        let accepted = serde_json::json!({"status": {"parents": [{
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
            "controllerName": "example.com/gateway-controller",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                            "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        }]}});
        run_ok(kubectl(&[
            "patch",
            "httproute",
            "routed",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            &format!("-p={accepted}"),
        ]));
        run_ok(kubectl(&[
            "wait",
            "-n",
            &ns,
            "--for=condition=Ready",
            "appbundle",
            "--all",
            "--timeout=60s",
        ]));
        // The autoscaler's first metrics attempt comes a sync period (15 s) after it starts; there
        // are no metrics here, and the status says so (a real change, written once): wait for it.
        let api: Api<kubundle::api::AppBundle> = Api::namespaced(client.clone(), &ns);
        wait_bundle(
            &api,
            "tiered",
            Duration::from_secs(60),
            "the autoscaler's verdict",
            |b| {
                b.status
                    .as_ref()
                    .and_then(|s| s.autoscaling.as_ref())
                    .is_some_and(|a| a.message.is_some())
            },
        )
        .await;
        wait_for_test_namespaces_to_go(&client).await;
        tokio::time::sleep(Duration::from_secs(3)).await;

        let url = format!("{}/metrics", metrics_url());
        let (ours_before, server_before) = (writes(&scrape(&url).await), apiserver_writes());
        tokio::time::sleep(Duration::from_secs(30)).await;
        let (ours_after, server_after) = (writes(&scrape(&url).await), apiserver_writes());
        let served: Vec<String> = server_after
            .iter()
            .filter_map(|(series, after)| {
                let grew = after - server_before.get(series).copied().unwrap_or(0.0);
                (grew > 0.0).then(|| format!("{series} +{grew}"))
            })
            .collect();
        eprintln!(
            "writes in 30 s: kubundle counter {}, API server {}",
            ours_after - ours_before,
            served.len()
        );
        assert_eq!(
            ours_after - ours_before,
            0.0,
            "kubundle wrote during the steady state"
        );
        assert!(
            served.is_empty(),
            "the API server served writes during the steady state: {served:#?}"
        );
        delete_namespace(&client, &ns).await;
    }

    /// Values the API server normalises (`cpu: 1000m` stored as `1`, `1024Mi` as `1Gi`, `1e9` as
    /// `1G`, an empty env value dropped) and entries another manager adds to kubundle's lists
    /// (`kubectl set env`) cause no re-apply: a scale is exactly one Deployment apply, and status
    /// changes and foreign edits none. (Before: every reconcile re-applied, with a false "Updated"
    /// Event each time.)
    #[tokio::test]
    async fn normalised_values_cause_no_reapply() {
        let client = client().await;
        wait_for_test_namespaces_to_go(&client).await;
        let ns = create_namespace(&client, "normalised").await;
        apply_yaml(
            &ns,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: norm}\nspec:\n  image: nginx:1.27\n  ports: [{containerPort: 80}]\n  args: []\n  env: [{name: EMPTY, value: ''}, {name: B, value: x}]\n  resources: {requests: {cpu: 1000m, memory: 1024Mi}, limits: {memory: '2e9'}}\n  podTemplate: {labels: {}, annotations: {}}\n",
        );
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        wait_bundle(&api, "norm", Duration::from_secs(30), "Ready", is_ready).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let url = format!("{}/metrics", metrics_url());
        let applies = |text: &str| {
            sample(
                text,
                r#"kubundle_api_writes_total{kind="Deployment",verb="apply"}"#,
            )
            .unwrap()
                + sample(
                    text,
                    r#"kubundle_api_writes_total{kind="Service",verb="apply"}"#,
                )
                .unwrap()
        };
        let before = applies(&scrape(&url).await);

        // A scale: one apply (replicas), then the Deployment's status steps make none.
        run_ok(kubectl(&[
            "scale",
            "appbundle",
            "norm",
            "-n",
            &ns,
            "--replicas=3",
        ]));
        wait_bundle(&api, "norm", Duration::from_secs(30), "Ready at 3", |b| {
            ready_at(b, 3)
        })
        .await;
        // Another manager adds an env var: left alone (it is theirs), and no apply loop.
        run_ok(kubectl(&[
            "set",
            "env",
            "deployment/norm",
            "-n",
            &ns,
            "FOO=bar",
        ]));
        wait_bundle(
            &api,
            "norm",
            Duration::from_secs(30),
            "Ready after set env",
            is_ready,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let after = applies(&scrape(&url).await);
        assert_eq!(
            after - before,
            1.0,
            "applies for one scale and one foreign env var"
        );
        let d: Deployment = Api::namespaced(client.clone(), &ns)
            .get("norm")
            .await
            .unwrap();
        let env = container(&d).env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "FOO"), "{env:?}");

        // A freshly started operator (as after a restart: nothing remembered) finds both children
        // up to date as stored: it writes nothing. (It watches this namespace only; the shared
        // operator keeps running beside it and, being settled, writes nothing either.)
        let fresh = Operator::start(
            &["--log-format=json".to_string(), format!("--namespace={ns}")],
            &[],
            &kubeconfig_path(),
        )
        .await;
        eventually(
            Duration::from_secs(30),
            "the fresh operator to reconcile",
            || async {
                let n = fresh
                    .metric(r#"kubundle_reconcile_total{result="success"}"#)
                    .await;
                if n >= 1.0 {
                    Ok(())
                } else {
                    Err(format!("{n} reconciles"))
                }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let fresh_applies = fresh
            .metric(r#"kubundle_api_writes_total{kind="Deployment",verb="apply"}"#)
            .await
            + fresh
                .metric(r#"kubundle_api_writes_total{kind="Service",verb="apply"}"#)
                .await;
        assert_eq!(
            fresh_applies, 0.0,
            "a restarted operator re-applied normalised children"
        );
        drop(fresh);

        // No "Updated" Event: nothing kubundle applied changed anything but replicas.
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
        let updated: Vec<_> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Updated"))
            .filter_map(|e| e.note)
            .collect();
        assert!(updated.len() <= 1, "false Updated Events: {updated:?}");
        delete_namespace(&client, &ns).await;
    }

    /// Puts the committed CRD back when dropped, whatever the test did to it.
    struct RestoreCrd;

    impl Drop for RestoreCrd {
        fn drop(&mut self) {
            let crd = repo_root().join("crds/appbundles.kubundle.dev.yaml");
            run_ok(kubectl(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                crd.to_str().unwrap(),
            ]));
        }
    }

    /// An AppBundle whose spec this version of kubundle cannot read (here: stored while another
    /// version of the CRD let `spec.image` be a number) is reported, Stalled with the reason and
    /// a Warning Event, and does not stop kubundle from reconciling the AppBundles next to it.
    #[tokio::test]
    async fn an_unreadable_bundle_is_reported_and_the_others_still_reconcile() {
        let client = client().await;
        let ns = create_namespace(&client, "unreadable").await;
        let _restore = RestoreCrd;
        run_ok(kubectl(&[
            "patch",
            "crd",
            "appbundles.kubundle.dev",
            "--type=json",
            "-p",
            r#"[{"op": "replace", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/image", "value": {"x-kubernetes-int-or-string": true}}]"#,
        ]));
        let odd = "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: odd}\nspec: {image: 5, ports: [{containerPort: 80}]}\n";
        // The API server serves the patched schema a moment after the CRD is updated.
        eventually(
            Duration::from_secs(30),
            "the loosened CRD to accept image: 5",
            || async {
                let out = kubectl_stdin(&["apply", "-n", &ns, "-f", "-"], odd);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&out.stderr).to_string())
                }
            },
        )
        .await;
        apply_yaml(
            &ns,
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {name: fine}\nspec: {image: nginx, ports: [{containerPort: 80}]}\n",
        );

        let typed: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        wait_bundle(
            &typed,
            "fine",
            Duration::from_secs(30),
            "fine Ready",
            is_ready,
        )
        .await;

        // The odd one cannot be read as an AppBundle by the tests either: read it untyped.
        let untyped: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<AppBundle>(&()));
        let stalled = eventually(Duration::from_secs(30), "odd Stalled", || async {
            let obj = untyped.get("odd").await.map_err(|e| e.to_string())?;
            let conditions = obj.data["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conditions
                .into_iter()
                .find(|c| c["type"] == "Stalled" && c["status"] == "True")
                .ok_or_else(|| format!("status: {}", obj.data["status"]))
        })
        .await;
        assert_eq!(stalled["reason"], "InvalidSpec");
        let message = stalled["message"].as_str().unwrap();
        assert!(
            message.contains("cannot be read by this version of kubundle")
                && message.contains("spec"),
            "{message}"
        );

        let warning = warning_event(&client, &ns, "odd").await;
        assert_eq!(warning.reason.as_deref(), Some("InvalidSpec"));

        // Nothing was created for it, and the operator still works: a spec change of the other
        // AppBundle is rolled out.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        assert!(deployments.get_opt("odd").await.unwrap().is_none());
        run_ok(kubectl(&[
            "patch",
            "appbundle",
            "fine",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            r#"{"spec": {"image": "nginx:1.28"}}"#,
        ]));
        let fine = wait_bundle(
            &typed,
            "fine",
            Duration::from_secs(30),
            "fine Ready on nginx:1.28",
            |b| {
                is_ready(b)
                    && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some("nginx:1.28")
            },
        )
        .await;
        assert_eq!(fine.spec.image, "nginx:1.28");
        delete_namespace(&client, &ns).await;
    }

    /// Deleting a namespace with AppBundles in it: the namespace controller deletes their
    /// children too, often before the AppBundles. kubundle then tries to create them again and
    /// the API server refuses (403, NamespaceTerminating); kubundle lets it be, as the AppBundle
    /// is about to go: no AppBundle turns Stalled, no Event. (Before: each such AppBundle turned
    /// Stalled WriteRefused, with a Warning Event apiece, for objects nobody could look at any
    /// more.) Status writes that say the pods are going are still allowed: they are true.
    #[tokio::test]
    async fn a_namespace_being_deleted_stalls_nothing_and_gets_no_events() {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};

        let client = client().await;
        wait_for_test_namespaces_to_go(&client).await;
        let ns = create_namespace(&client, "nsdelete").await;
        let yaml: String = (0..20)
            .map(|i| {
                format!(
                    "---\napiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: app-{i}}}\n\
                     spec: {{image: nginx, ports: [{{containerPort: 80}}]}}\n"
                )
            })
            .collect();
        apply_yaml(&ns, &yaml);
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        eventually(Duration::from_secs(60), "20 AppBundles Ready", || async {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let ready = list.items.iter().filter(|b| is_ready(b)).count();
            if ready == 20 {
                Ok(())
            } else {
                Err(format!("{ready} Ready"))
            }
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        // Every Stalled condition any of them shows from now on.
        let stalled = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = {
            let (api, stalled) = (api.clone(), stalled.clone());
            tokio::spawn(async move {
                let mut stream = watcher(api, watcher::Config::default())
                    .applied_objects()
                    .boxed();
                while let Some(Ok(b)) = stream.next().await {
                    if let Some(c) = condition_of(&b, "Stalled").filter(|c| c.0 == "True") {
                        stalled.lock().unwrap().push(c);
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let url = format!("{}/metrics", metrics_url());
        let events = |m: &str| {
            sample(
                m,
                r#"kubundle_api_writes_total{kind="Event",verb="publish"}"#,
            )
            .unwrap()
        };
        let before = events(&scrape(&url).await);
        delete_namespace(&client, &ns).await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        eventually(
            Duration::from_secs(120),
            "the namespace to be gone",
            || async {
                match namespaces.get_opt(&ns).await.map_err(|e| e.to_string())? {
                    None => Ok(()),
                    Some(_) => Err("still there".into()),
                }
            },
        )
        .await;
        recorder.abort();
        let after = events(&scrape(&url).await);
        assert_eq!(
            after - before,
            0.0,
            "Events while the namespace was being deleted"
        );
        assert!(
            stalled.lock().unwrap().is_empty(),
            "AppBundles turned Stalled while their namespace was deleted: {:?}",
            stalled.lock().unwrap()
        );
    }
}

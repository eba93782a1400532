//! On the local cluster's real node, with its metrics pipeline and Prometheus
//! (deploy/local/monitoring.sh): autoscaling driven by the pods' real CPU use through
//! metrics-server, `kubectl autoscale appbundle`, the chart's ServiceMonitor and PrometheusRule
//! validated by the Prometheus Operator's CRDs, scraped and evaluated by a real Prometheus, the
//! chart's alerts unit-tested with promtool, and the Gateway's (Traefik's) request metrics in
//! Prometheus as a canary's analysis reads them.
//!
//! tests/run.sh runs these after tests/real_node.rs, one at a time, with the in-cluster operator
//! (installed by the first of them) reconciling.

mod support;

mod real_node_metrics {
    use std::process::Command;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use k8s_openapi::api::apps::v1::Deployment;
    use kube::{Api, Client};
    use kubundle::api::AppBundle;
    use serde_json::Value;

    use crate::support::prometheus;
    use crate::support::real::*;
    use crate::support::*;

    // ------------------------------------------------------------------ load

    /// Clients that keep Redis busy: each connection sends PINGs in batches of 100 and reads the
    /// answers, and reconnects every 2 s so that new pods behind the Service get their share.
    struct Load {
        stop: Arc<AtomicBool>,
        done: Arc<AtomicU64>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    impl Load {
        fn start(address: &str, connections: usize) -> Load {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let stop = Arc::new(AtomicBool::new(false));
            let done = Arc::new(AtomicU64::new(0));
            let batch = "PING\r\n".repeat(100);
            let tasks = (0..connections)
                .map(|_| {
                    let (stop, done, address, batch) = (
                        stop.clone(),
                        done.clone(),
                        address.to_string(),
                        batch.clone(),
                    );
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 700];
                        while !stop.load(Ordering::Relaxed) {
                            let Ok(mut conn) = tokio::net::TcpStream::connect(&address).await
                            else {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            };
                            let since = Instant::now();
                            while !stop.load(Ordering::Relaxed)
                                && since.elapsed() < Duration::from_secs(2)
                            {
                                // 100 answers of "+PONG\r\n" are 700 bytes.
                                if conn.write_all(batch.as_bytes()).await.is_err()
                                    || conn.read_exact(&mut buf).await.is_err()
                                {
                                    break;
                                }
                                done.fetch_add(100, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            Load { stop, done, tasks }
        }

        /// Stops the clients; the requests they completed.
        async fn stop(self) -> u64 {
            self.stop.store(true, Ordering::Relaxed);
            for t in self.tasks {
                let _ = t.await;
            }
            self.done.load(Ordering::Relaxed)
        }
    }

    // ------------------------------------------------------------------ writes

    /// The sum of the series of `text` whose name and labels start with `prefix`.
    fn sum_series(text: &str, prefix: &str, also: &[&str]) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && also.iter().all(|a| l.contains(a)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Who has written one Deployment, and when: kubundle's own count of Deployment writes (both
    /// replicas, scraped on their pods), and the Deployment's managedFields entries for writes to
    /// the object itself (manager, operation, time), leaving out writes to its status (the
    /// Deployment controller) and to its scale (the autoscaler). The API server stamps an entry's
    /// time on every write by that manager that changes the object, so two equal answers mean
    /// that nobody but the autoscaler changed the Deployment in between. (Scoped to the one
    /// Deployment: the API server's own request counter is cluster-wide, and the garbage
    /// collector's deletions in the namespaces of earlier tests land in it.)
    async fn deployment_writes(client: &Client, ns: &str, name: &str) -> (f64, Vec<String>) {
        let mut kubundle = 0.0;
        for p in operator_pods(client).await {
            let ip = p
                .status
                .and_then(|s| s.pod_ip)
                .expect("an operator pod's IP");
            let port = p.spec.unwrap().containers[0]
                .ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some("metrics"))
                .map(|cp| cp.container_port)
                .expect("the operator's metrics port");
            let text = scrape(&format!("http://{ip}:{port}/metrics")).await;
            kubundle += sum_series(&text, "kubundle_api_writes_total{kind=\"Deployment\"", &[]);
        }
        let d = Api::<Deployment>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .expect("the Deployment");
        let writers = d
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter(|m| !matches!(m.subresource.as_deref(), Some("status" | "scale")))
            .map(|m| {
                format!(
                    "{} {} at {}",
                    m.manager.unwrap_or_default(),
                    m.operation.unwrap_or_default(),
                    serde_json::to_string(&m.time).unwrap()
                )
            })
            .collect();
        (kubundle, writers)
    }

    fn autoscaling(b: &AppBundle) -> Value {
        serde_json::to_value(b.status.as_ref().and_then(|s| s.autoscaling.as_ref())).unwrap()
    }

    async fn deployment_replicas(client: &Client, ns: &str, name: &str) -> i32 {
        Api::<Deployment>::namespaced(client.clone(), ns)
            .get(name)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0)
    }

    /// The Redis Service's ClusterIP and port (kube-proxy routes it on this machine).
    async fn redis_address(client: &Client, ns: &str, name: &str) -> String {
        let url = service_url(client, ns, name, false).await;
        url.trim_start_matches("http://").to_string()
    }

    /// Redis with a small CPU request (so that a few thousand PINGs a second are well above it)
    /// and a limit that keeps the machine usable.
    fn redis_bundle(name: &str, scaling: &str) -> String {
        bundle(
            name,
            &image_env("REDIS_IMAGE"),
            6379,
            &format!(
                "  resources: {{requests: {{cpu: 20m, memory: 32Mi}}, limits: {{cpu: 200m, memory: 64Mi}}}}\n{scaling}"
            ),
        )
    }

    /// CPU load on an autoscaled AppBundle's pods scales it above minReplicas through the real
    /// metrics pipeline, and back down once the load stops; status.autoscaling shows the measured
    /// utilisation; kubundle writes nothing to the Deployment meanwhile (its own counter and the
    /// API server's agree), and the AppBundle stays Ready through both scales.
    #[tokio::test]
    async fn cpu_load_scales_an_autoscaled_bundle_up_and_down_through_metrics_server() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "autoscale").await;
        let api = bundles(&client, &ns);
        apply_yaml(
            &ns,
            &redis_bundle(
                "cache",
                "  autoscaling: {minReplicas: 1, maxReplicas: 3, targetCPUUtilizationPercentage: 50}\n",
            ),
        );
        wait_bundle(&api, "cache", Duration::from_secs(90), "Ready", is_ready).await;
        // The autoscaler's first measurement (metrics-server scrapes every 10 s).
        let t0 = Instant::now();
        let idle = wait_bundle(
            &api,
            "cache",
            Duration::from_secs(90),
            "a measured CPU utilization in status.autoscaling",
            |b| autoscaling(b)["cpuUtilization"].is_i64(),
        )
        .await;
        eprintln!(
            "first measurement {:?} after Ready: {}",
            t0.elapsed(),
            autoscaling(&idle)
        );
        let writes_before = deployment_writes(&client, &ns, "cache").await;

        let t_load = Instant::now();
        let load = Load::start(&redis_address(&client, &ns, "cache").await, 6);
        let busy = eventually(
            Duration::from_secs(120),
            "the autoscaler to scale above minReplicas under load",
            || async {
                let replicas = deployment_replicas(&client, &ns, "cache").await;
                let b = api.get("cache").await.map_err(|e| e.to_string())?;
                if replicas > 1 {
                    Ok((replicas, b))
                } else {
                    Err(format!(
                        "{replicas} replicas; status.autoscaling {}",
                        autoscaling(&b)
                    ))
                }
            },
        )
        .await;
        eprintln!(
            "under load: {} replicas after {:?}; status.autoscaling {}",
            busy.0,
            t_load.elapsed(),
            autoscaling(&busy.1)
        );
        // The utilization that made it scale, measured, as the AppBundle reports it.
        let measured = wait_bundle(
            &api,
            "cache",
            Duration::from_secs(60),
            "status.autoscaling to show the load (cpuUtilization above the 50 % target)",
            |b| {
                autoscaling(b)["cpuUtilization"]
                    .as_i64()
                    .is_some_and(|u| u > 50)
            },
        )
        .await;
        let scaled = wait_bundle(
            &api,
            "cache",
            Duration::from_secs(120),
            "Ready with more than one pod",
            |b| is_ready(b) && b.status.as_ref().and_then(|s| s.ready_replicas) > Some(1),
        )
        .await;
        let pings = load.stop().await;
        let t_idle = Instant::now();
        eprintln!(
            "load stopped after {:?} ({pings} PINGs answered); status.autoscaling {}, replicaSummary {:?}",
            t_load.elapsed(),
            autoscaling(&measured),
            scaled.status.as_ref().unwrap().replica_summary
        );
        let down = wait_bundle(
            &api,
            "cache",
            Duration::from_secs(180),
            "the autoscaler to scale back to minReplicas once the load stopped",
            |b| {
                is_ready(b)
                    && b.status.as_ref().and_then(|s| s.ready_replicas) == Some(1)
                    && autoscaling(b)["cpuUtilization"]
                        .as_i64()
                        .is_some_and(|u| u < 50)
            },
        )
        .await;
        eprintln!(
            "back to 1 pod {:?} after the load stopped; status.autoscaling {}",
            t_idle.elapsed(),
            autoscaling(&down)
        );
        assert_eq!(deployment_replicas(&client, &ns, "cache").await, 1);
        let writes_after = deployment_writes(&client, &ns, "cache").await;
        assert_eq!(
            writes_after, writes_before,
            "Deployment writes (kubundle's count; the Deployment's writers but the autoscaler) from before the load to after the scale-down"
        );
        delete_namespace(&client, &ns).await;
    }

    /// `kubectl autoscale appbundle NAME` makes an HPA on the AppBundle's scale subresource: the
    /// autoscaler sets spec.replicas and kubundle scales the Deployment to it, up under load and
    /// down after. On an AppBundle with spec.autoscaling, kubectl's HPA would take the name of
    /// kubundle's own: it is refused, and kubundle's autoscaler stays as it was.
    #[tokio::test]
    async fn kubectl_autoscale_scales_an_appbundle_through_its_scale_subresource() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "kubectl-autoscale").await;
        let api = bundles(&client, &ns);
        apply_yaml(&ns, &redis_bundle("queue", "  replicas: 1\n"));
        apply_yaml(
            &ns,
            &redis_bundle("cache", "  autoscaling: {minReplicas: 1, maxReplicas: 2}\n"),
        );
        wait_bundle(&api, "queue", Duration::from_secs(90), "Ready", is_ready).await;
        wait_bundle(&api, "cache", Duration::from_secs(90), "Ready", is_ready).await;

        let refused = run(kubectl(&[
            "autoscale",
            "appbundle",
            "cache",
            "-n",
            &ns,
            "--min=1",
            "--max=3",
            "--cpu=50%",
        ]));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            !refused.status.success() && stderr.contains("already exists"),
            "kubectl autoscale of an AppBundle with spec.autoscaling: {stderr}"
        );

        let out = run_ok(kubectl(&[
            "autoscale",
            "appbundle",
            "queue",
            "-n",
            &ns,
            "--min=1",
            "--max=3",
            "--cpu=50%",
        ]));
        assert!(out.contains("autoscaled"), "{out}");
        let t_load = Instant::now();
        let load = Load::start(&redis_address(&client, &ns, "queue").await, 6);
        let up = wait_bundle(
            &api,
            "queue",
            Duration::from_secs(150),
            "the autoscaler to raise spec.replicas, and the pods to be Ready",
            |b| b.spec.replicas > Some(1) && is_ready(b),
        )
        .await;
        eprintln!(
            "spec.replicas {:?} and Ready after {:?} of load",
            up.spec.replicas,
            t_load.elapsed()
        );
        assert_eq!(
            deployment_replicas(&client, &ns, "queue").await,
            up.spec.replicas.unwrap()
        );
        load.stop().await;
        let t_idle = Instant::now();
        wait_bundle(
            &api,
            "queue",
            Duration::from_secs(180),
            "spec.replicas back to 1 after the load, Ready",
            |b| b.spec.replicas == Some(1) && is_ready(b),
        )
        .await;
        eprintln!("spec.replicas back to 1 after {:?}", t_idle.elapsed());
        assert_eq!(deployment_replicas(&client, &ns, "queue").await, 1);
        // kubundle's own autoscaler was left alone by the refused kubectl autoscale.
        let cache = api.get("cache").await.unwrap();
        assert!(is_ready(&cache), "{:?}", cache.status);
        delete_namespace(&client, &ns).await;
    }

    // ------------------------------------------------------------------ Prometheus

    /// The chart's ServiceMonitor and PrometheusRule are validated by the Prometheus Operator's
    /// CRDs (`helm install` with both on was accepted, a malformed ServiceMonitor is refused);
    /// Prometheus scrapes both operator replicas through what the ServiceMonitor selects; an
    /// AppBundle that stays not Ready makes KubundleAppBundlesNotReady fire live, and the alert
    /// resolves once it is gone.
    #[tokio::test]
    async fn prometheus_scrapes_the_operator_and_its_alert_fires_live() {
        let client = client().await;
        operator_installed();
        let prom = prometheus::local();
        let out = run_ok(kubectl(&[
            "get",
            "servicemonitors,prometheusrules",
            "-n",
            OPERATOR_NS,
            "-o",
            "name",
        ]));
        assert!(
            out.contains("servicemonitor.monitoring.coreos.com/kubundle-real")
                && out.contains("prometheusrule.monitoring.coreos.com/kubundle-real"),
            "{out}"
        );
        let bad = kubectl_stdin(
            &["apply", "--dry-run=server", "-n", OPERATOR_NS, "-f", "-"],
            "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: bad}\n\
             spec: {selector: {}, endpoints: [{port: metrics, interval: soon}]}\n",
        );
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(
            !bad.status.success() && stderr.contains("interval"),
            "a malformed ServiceMonitor: {stderr}"
        );

        prom.follow(&client, OPERATOR_NS).await;
        let pods: Vec<String> = operator_pods(&client)
            .await
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        assert_eq!(pods.len(), 2, "{pods:?}");
        let t0 = Instant::now();
        let targets = prom
            .wait_targets(
                Duration::from_secs(60),
                "both operator replicas up in Prometheus's targets",
                |targets| {
                    let up: Vec<&str> = targets
                        .iter()
                        .filter(|t| t["health"] == "up")
                        .filter_map(|t| t["labels"]["pod"].as_str())
                        .collect();
                    if pods.iter().all(|p| up.contains(&p.as_str())) {
                        Ok(())
                    } else {
                        Err(serde_json::to_string(targets).unwrap())
                    }
                },
            )
            .await;
        eprintln!(
            "{} targets up {:?} after following the ServiceMonitor",
            targets.len(),
            t0.elapsed()
        );
        // Besides the Gateway's own metrics (always scraped), only what the ServiceMonitor selects.
        for t in targets.iter().filter(|t| t["scrapePool"] != "traefik") {
            assert_eq!(t["labels"]["job"], "kubundle-real-metrics", "{t}");
            assert_eq!(t["labels"]["namespace"], OPERATOR_NS, "{t}");
        }
        let leaders = prom.query("sum(kubundle_leader)").await;
        assert_eq!(leaders[0]["value"][1], "1", "one leader: {leaders:?}");

        // First nothing pending (AppBundles of earlier tests may still be going away), so that
        // what fires below is caused by this test's AppBundle.
        eventually(
            Duration::from_secs(120),
            "no KubundleAppBundlesNotReady pending or firing before the test",
            || async {
                let alerts = prom.alerts().await;
                if alerts
                    .iter()
                    .any(|a| a["labels"]["alertname"] == "KubundleAppBundlesNotReady")
                {
                    Err(serde_json::to_string(&alerts).unwrap())
                } else {
                    Ok(())
                }
            },
        )
        .await;
        // An AppBundle whose image does not exist stays not Ready.
        let ns = real_namespace(&client, "alerting").await;
        apply_yaml(
            &ns,
            &bundle("missing", "registry.kubundle.local/no-such-image:1", 80, ""),
        );
        let t_apply = Instant::now();
        let firing = eventually(
            Duration::from_secs(120),
            "KubundleAppBundlesNotReady firing in Prometheus",
            || async {
                let alerts = prom.alerts().await;
                alerts
                    .iter()
                    .find(|a| {
                        a["labels"]["alertname"] == "KubundleAppBundlesNotReady"
                            && a["state"] == "firing"
                    })
                    .cloned()
                    .ok_or_else(|| serde_json::to_string(&alerts).unwrap())
            },
        )
        .await;
        eprintln!(
            "KubundleAppBundlesNotReady firing {:?} after the apply (for: {ALERT_FOR}): {firing}",
            t_apply.elapsed()
        );
        assert_eq!(firing["labels"]["namespace"], OPERATOR_NS, "{firing}");
        assert_eq!(firing["labels"]["severity"], "warning", "{firing}");
        assert!(
            t_apply.elapsed() >= Duration::from_secs(20),
            "fired before its `for` ({ALERT_FOR}) had passed since the apply: {firing}"
        );
        let not_ready = bundles(&client, &ns).get("missing").await.unwrap();
        assert_eq!(
            condition_of(&not_ready, "Ready").map(|c| c.0).as_deref(),
            Some("False")
        );
        for quiet in [
            "KubundleDown",
            "KubundleNoLeader",
            "KubundleReconcileErrors",
        ] {
            let alerts = prom.alerts().await;
            assert!(
                !alerts.iter().any(|a| a["labels"]["alertname"] == quiet),
                "{quiet}: {alerts:?}"
            );
        }

        delete_namespace(&client, &ns).await;
        let t_delete = Instant::now();
        eventually(
            Duration::from_secs(120),
            "KubundleAppBundlesNotReady to resolve after the AppBundle is gone",
            || async {
                let alerts = prom.alerts().await;
                if alerts
                    .iter()
                    .any(|a| a["labels"]["alertname"] == "KubundleAppBundlesNotReady")
                {
                    let others = run(kubectl(&["get", "appbundles", "-A"]));
                    Err(format!(
                        "{}; AppBundles: {}",
                        serde_json::to_string(&alerts).unwrap(),
                        String::from_utf8_lossy(&others.stdout)
                    ))
                } else {
                    Ok(())
                }
            },
        )
        .await;
        eprintln!("resolved {:?} after the delete", t_delete.elapsed());
    }

    /// `promtool check rules` and `promtool test rules` on the chart's rendered PrometheusRule:
    /// each alert firing and not firing (tests/fixtures/prometheus/alerts.test.yaml).
    #[test]
    fn the_charts_alerts_pass_promtool_check_and_unit_tests() {
        let dir = std::env::temp_dir().join(format!("kubundle-promtool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rendered = run_ok(Command::new("helm").args([
            "template",
            "kubundle",
            repo_root().join("charts/kubundle").to_str().unwrap(),
            "-n",
            "kubundle",
            "--set",
            "prometheusRule.enabled=true",
            "--set",
            "serviceMonitor.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ]));
        let rule: Value = serde_saphyr::from_str(&rendered).unwrap();
        assert_eq!(rule["kind"], "PrometheusRule");
        std::fs::write(
            dir.join("rules.yaml"),
            serde_json::to_string(&rule["spec"]).unwrap(),
        )
        .unwrap();
        let alerts: Vec<&str> = rule["spec"]["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["alert"].as_str())
            .collect();
        let fixture = repo_root().join("tests/fixtures/prometheus/alerts.test.yaml");
        let tests = std::fs::read_to_string(&fixture).unwrap();
        for alert in &alerts {
            assert!(
                tests.contains(&format!("alertname: {alert}\n")),
                "{alert} has no firing test in {}",
                fixture.display()
            );
            assert!(
                tests.contains(&format!("alertname: {alert}, exp_alerts: []")),
                "{alert} has no not-firing test in {}",
                fixture.display()
            );
        }
        std::fs::copy(&fixture, dir.join("alerts.test.yaml")).unwrap();
        let check = run_ok(
            Command::new("promtool")
                .args(["check", "rules", "rules.yaml"])
                .current_dir(&dir),
        );
        assert!(
            check.contains(&format!("SUCCESS: {} rules found", alerts.len())),
            "{check}"
        );
        let test = run_ok(
            Command::new("promtool")
                .args(["test", "rules", "alerts.test.yaml"])
                .current_dir(&dir),
        );
        assert!(test.contains("SUCCESS"), "{test}");
        eprintln!(
            "promtool: {} alerts checked and tested firing and not firing",
            alerts.len()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // ------------------------------------------------------------------ the Gateway's metrics

    /// The Gateway's own request metrics reach Prometheus the way a canary's analysis reads them:
    /// requests to an AppBundle through Traefik (200s from /healthz, 503s from /entries, which
    /// has no Redis here) are counted under the `service` label
    /// NAMESPACE-NAME-http-PORT@kubernetesgateway, and the README's error-rate query, with
    /// `{{namespace}}` and `{{stable}}` put in by kubundle's own substitution, gives their share
    /// of errors, judged by kubundle's own verdict of a Prometheus answer.
    #[tokio::test]
    async fn the_gateways_request_metrics_reach_prometheus_as_an_analysis_reads_them() {
        use kubundle::api::rollout::{PrometheusCheck, Verdict};
        use kubundle::rollout::analysis::{prometheus_verdict, query_for};
        const GATEWAY: &str = "10.255.253.1:80";
        let client = client().await;
        operator_installed();
        let prom = prometheus::local();
        let ns = real_namespace(&client, "gwmetrics").await;
        let api = bundles(&client, &ns);
        let host = format!("web.{ns}.test");
        let frontend = image_env("FRONTEND_IMAGE");
        apply_yaml(
            &ns,
            &format!(
                "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: web}}\nspec:\n  \
                 image: {frontend}:v1\n  ports: [{{name: http, containerPort: 8080, servicePort: 80}}]\n  \
                 readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}\n  \
                 http:\n    hostnames: [{host}]\n    gateway: {{name: local, namespace: gateway-system}}\n"
            ),
        );
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(120),
            "Ready through the Gateway",
            is_ready,
        )
        .await;
        eventually(
            Duration::from_secs(20),
            "an answer through the Gateway",
            || async {
                match http_get_via(&format!("http://{host}/healthz"), GATEWAY).await? {
                    (200, _) => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        for _ in 0..20 {
            let (code, _) = http_get_via(&format!("http://{host}/healthz"), GATEWAY)
                .await
                .unwrap();
            assert_eq!(code, 200);
        }
        for _ in 0..10 {
            let (code, body) = http_get_via(&format!("http://{host}/entries"), GATEWAY)
                .await
                .unwrap();
            assert_eq!(code, 503, "/entries without Redis: {body}");
        }
        // The README's ready-made query for Traefik, on counters (a test has no minute to rate).
        let check = |max: f64| {
            PrometheusCheck {
            name: "error-rate".into(),
            address: prom.url.clone(),
            query: r#"sum(traefik_service_requests_total{service=~"{{namespace}}-{{stable}}-http-.*",code=~"5.."}) / sum(traefik_service_requests_total{service=~"{{namespace}}-{{stable}}-http-.*"})"#.into(),
            min: None,
            max: Some(max),
        }
        };
        let query = query_for(&check(0.05), "web-canary", "web", &ns);
        // Traefik's own counts by code (the requests above, and any it answered while the
        // route was being programmed), then the query's value must be their share of errors.
        let by_code = format!(
            r#"sum by (code) (traefik_service_requests_total{{service=~"{ns}-web-http-.*"}})"#
        );
        let (answer, counted) = eventually(
            Duration::from_secs(60),
            "Traefik's counts of those requests in Prometheus",
            || async {
                let counts: Vec<(String, f64)> = prom
                    .query(&by_code)
                    .await
                    .iter()
                    .map(|r| {
                        let code = r["metric"]["code"].as_str().unwrap_or_default().to_string();
                        let n = r["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0.0);
                        (code, n)
                    })
                    .collect();
                let count = |p: fn(&str) -> bool| -> f64 {
                    counts.iter().filter(|(c, _)| p(c)).map(|(_, n)| n).sum()
                };
                let (total, errors) = (count(|_| true), count(|c| c.starts_with('5')));
                if count(|c| c == "200") < 20.0 || count(|c| c == "503") < 10.0 {
                    return Err(format!("counts by code: {counts:?}"));
                }
                let answer = prom.query_answer(&query).await;
                let value = answer["data"]["result"][0]["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok());
                match value {
                    Some(v) if (v - errors / total).abs() < 1e-9 => Ok((answer, counts)),
                    _ => Err(format!("{answer} against counts {counts:?}")),
                }
            },
        )
        .await;
        let strict = prometheus_verdict(&check(0.05), Ok(&answer));
        assert_eq!(strict.verdict, Verdict::Fail, "{strict:?}");
        let lenient = prometheus_verdict(&check(0.5), Ok(&answer));
        assert_eq!(lenient.verdict, Verdict::Pass, "{lenient:?}");
        // A Service nothing was sent to has no series: no data, not a failure.
        let none = query_for(&check(0.05), "web-canary", "web-canary", &ns);
        let empty = prometheus_verdict(&check(0.05), Ok(&prom.query_answer(&none).await));
        assert_eq!(empty.verdict, Verdict::NoData, "{empty:?}");
        eprintln!(
            "Traefik's counts for {ns}/web by code: {counted:?}; error rate {} (limit <= 0.05: {:?}, <= 0.5: {:?})",
            strict.value.unwrap_or_default(),
            strict.verdict,
            lenient.verdict
        );
        run_ok(kubectl(&["delete", "namespace", &ns, "--wait=false"]));
    }
}

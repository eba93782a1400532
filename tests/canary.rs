//! Canary releases (spec.rollout.canary) on the local cluster's real node, through its real
//! Gateway (Traefik), with a client sending requests through the Gateway the whole time: the
//! split is the step's weight, a good canary is promoted without a failed request, a bad one is
//! aborted by the Gateway's own error rate (from the local Prometheus) or by its pods' health,
//! steps without a pause wait for `kubectl kubundle promote`, and a GitOps re-sync mid-canary
//! changes nothing.
//!
//! tests/run.sh runs these with tests/real_node.rs (the in-cluster operator, the images pushed by
//! deploy/local/images.sh).

mod support;

mod real_canary {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::Api;
    use kubundle::api::AppBundle;
    use kubundle::api::rollout::{Phase, RolloutStatus};

    use crate::support::real::*;
    use crate::support::*;

    /// The local Gateway's address (deploy/local/node.sh): Traefik's entrypoint for port 80.
    const GATEWAY: &str = "10.255.253.1:80";

    /// The local Prometheus as pods reach it (deploy/local/monitoring.sh).
    const PROMETHEUS: &str = "http://prometheus.monitoring.svc:9090";

    /// What the client got, by answer.
    #[derive(Clone, Copy, Debug, Default)]
    struct Counts {
        v1: u32,
        v2: u32,
        /// The canary's own 500s (the version that fails a share of the requests on purpose).
        canary_errors: u32,
        /// Anything else: a refused connection, a 502/503, a stable pod failing.
        failed: u32,
    }

    impl Counts {
        fn total(&self) -> u32 {
            self.v1 + self.v2 + self.canary_errors + self.failed
        }

        /// Percent of the answers that came from the canary (v2, its errors included).
        fn canary_share(&self) -> f64 {
            f64::from(self.v2 + self.canary_errors) * 100.0 / f64::from(self.total().max(1))
        }
    }

    /// A client that GETs `url` through the Gateway every 5 ms until stopped, counting answers
    /// (the whole run, and a window that can be restarted).
    struct Client {
        stop: Arc<AtomicBool>,
        all: Arc<Mutex<Counts>>,
        window: Arc<Mutex<Counts>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Client {
        fn start(url: &str) -> Client {
            let stop = Arc::new(AtomicBool::new(false));
            let all = Arc::new(Mutex::new(Counts::default()));
            let window = Arc::new(Mutex::new(Counts::default()));
            let task = {
                let (stop, all, window, url) =
                    (stop.clone(), all.clone(), window.clone(), url.to_string());
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let answer = http_get_via(&url, GATEWAY).await;
                        let count = |c: &mut Counts| match &answer {
                            Ok((200, body)) if body.contains("frontend v1") => c.v1 += 1,
                            Ok((200, body)) if body.contains("frontend v2") => c.v2 += 1,
                            Ok((500, body)) if body.contains("version v2 fails") => {
                                c.canary_errors += 1
                            }
                            _ => c.failed += 1,
                        };
                        count(&mut all.lock().unwrap());
                        count(&mut window.lock().unwrap());
                        if !matches!(&answer, Ok((200 | 500, _))) {
                            eprintln!("request through the gateway failed: {answer:?}");
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            };
            Client {
                stop,
                all,
                window,
                task,
            }
        }

        /// The window's counts so far; a new window starts.
        fn take_window(&self) -> Counts {
            std::mem::take(&mut *self.window.lock().unwrap())
        }

        /// Waits until the window holds at least `n` answers, then takes it.
        async fn window_of(&self, n: u32) -> Counts {
            self.take_window();
            while self.window.lock().unwrap().total() < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            self.take_window()
        }

        async fn stop(self) -> Counts {
            self.stop.store(true, Ordering::Relaxed);
            self.task.await.unwrap();
            *self.all.lock().unwrap()
        }
    }

    fn rollout(b: &AppBundle) -> Option<&RolloutStatus> {
        b.status.as_ref().and_then(|s| s.rollout.as_ref())
    }

    /// The error-rate check of the canary's Service, from the Gateway's own request counts (no
    /// 5xx series yet is a rate of 0; no request at all is no data).
    fn error_rate_check(ns: &str) -> String {
        format!(
            "{{name: error-rate, address: '{PROMETHEUS}', max: 0.05, query: '(sum(rate(traefik_service_requests_total{{service=~\"{ns}-{{{{canary}}}}-http-.*\",code=~\"5..\"}}[20s])) or vector(0)) / sum(rate(traefik_service_requests_total{{service=~\"{ns}-{{{{canary}}}}-http-.*\"}}[20s]))'}}"
        )
    }

    /// An AppBundle of the guestbook frontend behind the local Gateway, 4 pods, with a canary of
    /// `steps` and the checks `checks` every 5 s.
    fn bundle(ns: &str, version: &str, extra: &str, steps: &str, checks: &str) -> String {
        let frontend = image_env("FRONTEND_IMAGE");
        format!(
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: web}}\nspec:\n  \
             image: {frontend}:{version}\n  replicas: 4\n  \
             ports: [{{name: http, containerPort: 8080, servicePort: 80}}]\n  \
             env: [{{name: SHUTDOWN_DELAY_SECONDS, value: '10'}}{extra}]\n  \
             readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}\n  \
             progressDeadlineSeconds: 120\n  \
             http:\n    hostnames: [web.{ns}.test]\n    gateway: {{name: local, namespace: gateway-system}}\n  \
             rollout:\n    canary:\n      steps: {steps}\n      \
             analysis: {{intervalSeconds: 5, prometheus: [{checks}]}}\n"
        )
    }

    async fn stable_uid(client: &kube::Client, ns: &str) -> String {
        let d = Api::<Deployment>::namespaced(client.clone(), ns)
            .get("web")
            .await
            .unwrap();
        d.metadata.uid.unwrap()
    }

    async fn canary_replicas(client: &kube::Client, ns: &str) -> Option<i32> {
        Api::<Deployment>::namespaced(client.clone(), ns)
            .get_opt("web-canary")
            .await
            .unwrap()
            .and_then(|d| d.spec.and_then(|s| s.replicas))
    }

    /// Applies v1 and waits until it is Ready, recorded as the stable revision, answering
    /// through the Gateway.
    async fn stable_v1(api: &Api<AppBundle>, ns: &str, yaml: &str) {
        apply_yaml(ns, yaml);
        wait_bundle(
            api,
            "web",
            Duration::from_secs(180),
            "v1 Ready and recorded",
            |b| {
                is_ready(b)
                    && b.status
                        .as_ref()
                        .is_some_and(|s| s.current_revision.is_some())
            },
        )
        .await;
        let url = format!("http://web.{ns}.test/");
        eventually(
            Duration::from_secs(30),
            "an answer through the Gateway",
            || async {
                match http_get_via(&url, GATEWAY).await? {
                    (200, body) if body.contains("frontend v1") => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }

    /// Waits for the canary at `weight` percent as the Gateway has it, its step started.
    async fn at_step(api: &Api<AppBundle>, step: i32, weight: i32) -> AppBundle {
        wait_bundle(
            api,
            "web",
            Duration::from_secs(120),
            &format!("step {} at {weight}% as the Gateway has it", step + 1),
            |b| {
                rollout(b).is_some_and(|r| {
                    r.step_index == step
                        && r.weight == weight
                        && r.gateway_weight == Some(weight)
                        && r.step_started_at.is_some()
                })
            },
        )
        .await
    }

    /// A good canary: at each step the Gateway sends the step's share to it (within 5 points over
    /// 400 requests), then it is promoted with no failed request; the stable Deployment keeps its
    /// name and UID, the canary goes to 0 pods, the new spec is the current revision; Ready is
    /// False (CanaryProgressing) throughout and True at the end; a re-sync of the same spec
    /// mid-canary (server-side apply, as Flux and Argo CD do) changes nothing.
    #[tokio::test]
    async fn a_good_canary_gets_its_share_and_is_promoted_without_a_failed_request() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "canary-good").await;
        let api = bundles(&client, &ns);
        let steps = "[{weight: 25, pauseSeconds: 10}, {weight: 50, pauseSeconds: 10}]";
        let checks = error_rate_check(&ns);
        stable_v1(&api, &ns, &bundle(&ns, "v1", "", steps, &checks)).await;
        let uid = stable_uid(&client, &ns).await;
        let before = api.get("web").await.unwrap();
        let revision = before.status.as_ref().unwrap().current_revision.clone();

        let url = format!("http://web.{ns}.test/");
        let requests = Client::start(&url);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let start = Instant::now();
        let v2 = bundle(&ns, "v2", "", steps, &checks);
        apply_yaml(&ns, &v2);
        for (step, weight) in [(0, 25), (1, 50)] {
            let b = at_step(&api, step, weight).await;
            let ready = condition_of(&b, "Ready").unwrap();
            assert_eq!(
                (ready.0.as_str(), ready.1.as_str()),
                ("False", "CanaryProgressing"),
                "{ready:?}"
            );
            let generation = b.metadata.generation;
            if step == 0 {
                // A GitOps re-sync of the same spec mid-canary: nothing changes.
                let out = kubectl_stdin(
                    &[
                        "apply",
                        "--server-side",
                        "--field-manager=gitops",
                        "-n",
                        &ns,
                        "-f",
                        "-",
                    ],
                    &v2,
                );
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let counts = requests.window_of(400).await;
            let share = counts.canary_share();
            eprintln!(
                "step {}: {weight}% asked, {share:.1}% to the canary over {} requests ({counts:?}), {:?} in",
                step + 1,
                counts.total(),
                start.elapsed()
            );
            assert!(
                (share - f64::from(weight)).abs() <= 5.0,
                "step {}: {share:.1}% of the requests went to the canary, not {weight}%: {counts:?}",
                step + 1
            );
            let now = api.get("web").await.unwrap();
            assert_eq!(
                now.metadata.generation, generation,
                "the re-sync changed the spec"
            );
            let r = rollout(&now).unwrap();
            assert!(
                r.step_index >= step,
                "the re-sync restarted the canary: {r:?}"
            );
        }
        let done = wait_bundle(
            &api,
            "web",
            Duration::from_secs(180),
            "promoted and Ready on v2",
            |b| {
                is_ready(b)
                    && rollout(b).is_some_and(|r| r.phase == Phase::Promoted)
                    && b.status
                        .as_ref()
                        .and_then(|s| s.image.as_deref())
                        .is_some_and(|i| i.ends_with(":v2"))
            },
        )
        .await;
        eprintln!("v2 applied -> promoted and Ready: {:?}", start.elapsed());
        // Every request now goes to the stable Deployment, which runs v2.
        let after = requests.window_of(200).await;
        let all = requests.stop().await;
        eprintln!("the whole canary: {all:?}; after the promotion: {after:?}");
        assert_eq!(
            all.failed + all.canary_errors,
            0,
            "failed requests: {all:?}"
        );
        assert_eq!((after.v1, after.v2), (0, after.total()), "{after:?}");
        assert_eq!(
            stable_uid(&client, &ns).await,
            uid,
            "the stable Deployment was replaced"
        );
        assert_eq!(canary_replicas(&client, &ns).await, Some(0));
        let status = done.status.as_ref().unwrap();
        assert_ne!(
            status.current_revision, revision,
            "v2 is not the current revision"
        );
        let r = rollout(&done).unwrap();
        assert_eq!((r.weight, r.canary_replicas), (0, 0), "{r:?}");
        assert!(r.checks.iter().any(|c| c.name == "error-rate"), "{r:?}");

        // A finished canary costs no writes: the AppBundle (its resourceVersion: no status
        // write) and its Deployments (their generation: their status is the Deployment
        // controller's, the canary's pods still shutting down) stay as they are.
        let versions = || async {
            let b = api.get("web").await.unwrap();
            let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
            let d = deployments.get("web").await.unwrap();
            let c = deployments.get("web-canary").await.unwrap();
            (
                b.metadata.resource_version.unwrap(),
                d.metadata.generation,
                c.metadata.generation,
            )
        };
        let before = versions().await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(
            versions().await,
            before,
            "writes at steady state after the canary"
        );
        delete_namespace(&client, &ns).await;
    }

    /// A bad canary: a version that answers 500 on a share of the page's requests fails the
    /// Gateway's error rate (the local Prometheus, from Traefik's own counts); the share goes back
    /// to 0 within one analysis interval plus the Gateway's propagation, requests to the stable
    /// version never fail, and the AppBundle is Stalled with RolloutAborted (kstatus: Failed)
    /// until a new spec. Then a version whose container cannot start fails the pods' health, and
    /// the spec going back to v1 ends that canary at once.
    #[tokio::test]
    async fn a_bad_canary_is_aborted_by_the_gateways_error_rate_and_by_its_pods_health() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "canary-bad").await;
        let api = bundles(&client, &ns);
        let steps = "[{weight: 50, pauseSeconds: 120}]";
        let checks = error_rate_check(&ns);
        let v1 = bundle(&ns, "v1", "", steps, &checks);
        stable_v1(&api, &ns, &v1).await;
        let uid = stable_uid(&client, &ns).await;

        let url = format!("http://web.{ns}.test/");
        let requests = Client::start(&url);
        let failing = ", {name: FAIL_PERCENT, value: '50'}";
        apply_yaml(&ns, &bundle(&ns, "v2", failing, steps, &checks));
        at_step(&api, 0, 50).await;
        let at_weight = Instant::now();
        let aborted = wait_bundle(
            &api,
            "web",
            Duration::from_secs(90),
            "aborted by the error rate",
            |b| {
                condition_of(b, "Stalled").is_some_and(|c| c.0 == "True" && c.1 == "RolloutAborted")
            },
        )
        .await;
        let r = rollout(&aborted).unwrap();
        eprintln!(
            "50% to a version failing half its requests -> aborted {:?} later: {}",
            at_weight.elapsed(),
            r.message
        );
        assert_eq!(r.phase, Phase::Aborted);
        assert_eq!(r.reason.as_deref(), Some("AnalysisFailed"), "{r:?}");
        assert!(r.message.contains("error-rate"), "{r:?}");
        let gone = wait_bundle(
            &api,
            "web",
            Duration::from_secs(30),
            "the Gateway sending the canary nothing",
            |b| rollout(b).is_some_and(|r| r.gateway_weight == Some(0) && r.canary_replicas == 0),
        )
        .await;
        let share_back = at_weight.elapsed();
        eprintln!("step at 50% -> the Gateway has 0% for the canary: {share_back:?}");
        // One interval (5 s) plus the rate's window filling (20 s), plus propagation.
        assert!(share_back < Duration::from_secs(45), "{share_back:?}");
        let stalled = condition_of(&gone, "Stalled").unwrap();
        assert_eq!(
            (stalled.0.as_str(), stalled.1.as_str()),
            ("True", "RolloutAborted")
        );
        // No request goes to the canary any more.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = requests.window_of(200).await;
        assert_eq!(after.v1, after.total(), "after the abort: {after:?}");
        assert_eq!(stable_uid(&client, &ns).await, uid);

        // A container that cannot start: its pods' health aborts it.
        let broken = bundle(&ns, "v2", "", steps, &checks).replace(
            "  readinessProbe:",
            "  command: [/no/such/binary]\n  readinessProbe:",
        );
        apply_yaml(&ns, &broken);
        let unhealthy = wait_bundle(
            &api,
            "web",
            Duration::from_secs(90),
            "aborted by the pods' health",
            |b| {
                condition_of(b, "Stalled").is_some_and(|c| c.0 == "True")
                    && rollout(b).is_some_and(|r| r.reason.as_deref() == Some("CanaryUnhealthy"))
            },
        )
        .await;
        eprintln!(
            "a canary that cannot start: {}",
            rollout(&unhealthy).unwrap().message
        );

        // Back to v1 (a git revert): the canary ends, Ready again.
        apply_yaml(&ns, &v1);
        let reverted = wait_bundle(&api, "web", Duration::from_secs(60), "Ready on v1", |b| {
            is_ready(b) && rollout(b).is_some_and(|r| r.canary_replicas == 0)
        })
        .await;
        assert_eq!(rollout(&reverted).unwrap().phase, Phase::Reverted);
        let all = requests.stop().await;
        eprintln!("the whole test: {all:?}");
        assert_eq!(
            all.failed, 0,
            "requests that failed other than the canary's own: {all:?}"
        );
        assert!(
            all.canary_errors > 0,
            "the failing version never answered: {all:?}"
        );
        delete_namespace(&client, &ns).await;
    }

    /// A query without data holds the step and says so, in status.rollout and Ready's message: no
    /// data is not failure (nothing counted against the failure limit, no abort before the
    /// progress deadline).
    #[tokio::test]
    async fn no_data_holds_the_step_and_says_so() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "canary-nodata").await;
        let api = bundles(&client, &ns);
        let steps = "[{weight: 20, pauseSeconds: 5}]";
        let none = format!(
            "{{name: traffic, address: '{PROMETHEUS}', min: 1, query: 'sum(kubundle_test_gate{{namespace=\"{ns}\"}})'}}"
        );
        stable_v1(&api, &ns, &bundle(&ns, "v1", "", steps, &none)).await;
        apply_yaml(&ns, &bundle(&ns, "v2", "", steps, &none));
        let held = wait_bundle(
            &api,
            "web",
            Duration::from_secs(120),
            "held for no data",
            |b| rollout(b).is_some_and(|r| r.message.contains("holding, no verdict")),
        )
        .await;
        let r = rollout(&held).unwrap();
        eprintln!("{}", r.message);
        assert!(r.message.contains("traffic: NoData"), "{r:?}");
        assert_eq!((r.phase, r.step_index), (Phase::Progressing, 0));
        tokio::time::sleep(Duration::from_secs(12)).await;
        let still = api.get("web").await.unwrap();
        let r = rollout(&still).unwrap();
        assert_eq!(
            (r.phase, r.step_index, r.failures),
            (Phase::Progressing, 0, 0),
            "{r:?}"
        );
        let ready = condition_of(&still, "Ready").unwrap();
        assert!(ready.2.contains("no verdict"), "Ready says why: {ready:?}");
        delete_namespace(&client, &ns).await;
    }

    /// `spec.rollout` removed while the canary has half of the requests: the stable Deployment
    /// takes the spec, the route goes back to it alone, and the canary's children go only once
    /// the Gateway routes without them: no request fails.
    #[tokio::test]
    async fn removing_the_canary_mid_way_drops_no_request() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "canary-removed").await;
        let api = bundles(&client, &ns);
        let steps = "[{weight: 50}]";
        let checks = error_rate_check(&ns);
        stable_v1(&api, &ns, &bundle(&ns, "v1", "", steps, &checks)).await;
        apply_yaml(&ns, &bundle(&ns, "v2", "", steps, &checks));
        at_step(&api, 0, 50).await;
        let requests = Client::start(&format!("http://web.{ns}.test/"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let plain = bundle(&ns, "v2", "", steps, &checks);
        let plain = plain.split("  rollout:").next().unwrap().to_string();
        apply_yaml(&ns, &plain);
        let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
        eventually(
            Duration::from_secs(120),
            "Ready on v2 without the canary's children",
            || async {
                let b = api.get("web").await.map_err(|e| e.to_string())?;
                let canary = deployments
                    .get_opt("web-canary")
                    .await
                    .map_err(|e| e.to_string())?;
                let on_v2 = b
                    .status
                    .as_ref()
                    .and_then(|s| s.image.as_deref())
                    .is_some_and(|i| i.ends_with(":v2"));
                if is_ready(&b) && on_v2 && rollout(&b).is_none() && canary.is_none() {
                    Ok(())
                } else {
                    Err(format!(
                        "canary Deployment {}, status {:?}",
                        canary.is_some(),
                        b.status
                    ))
                }
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let all = requests.stop().await;
        eprintln!("the canary removed mid-way: {all:?}");
        assert_eq!(
            all.failed + all.canary_errors,
            0,
            "failed requests: {all:?}"
        );
        assert!(all.total() > 200, "{all:?}");
        delete_namespace(&client, &ns).await;
    }

    /// A step without a pause waits for `kubectl kubundle promote` (WaitingForPromotion, kstatus
    /// InProgress); the request is acknowledged in status; `kubectl kubundle abort` ends a canary
    /// by hand; a request for another revision is not carried out.
    #[tokio::test]
    async fn steps_without_a_pause_wait_for_promote_and_abort_by_hand() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "canary-gate").await;
        let api = bundles(&client, &ns);
        let steps = "[{weight: 20}, {weight: 60}]";
        let checks = error_rate_check(&ns);
        stable_v1(&api, &ns, &bundle(&ns, "v1", "", steps, &checks)).await;

        apply_yaml(&ns, &bundle(&ns, "v2", "", steps, &checks));
        let paused = wait_bundle(
            &api,
            "web",
            Duration::from_secs(120),
            "waiting for promotion",
            |b| condition_of(b, "Ready").is_some_and(|c| c.1 == "WaitingForPromotion"),
        )
        .await;
        let r = rollout(&paused).unwrap();
        assert_eq!(
            (r.phase, r.step_index, r.gateway_weight),
            (Phase::Paused, 0, Some(20))
        );
        let reconciling = condition_of(&paused, "Reconciling").unwrap();
        assert_eq!(reconciling.0, "True", "kstatus must read InProgress");
        let object = serde_json::to_value(&paused).unwrap();
        assert_eq!(
            argocd_health(&object).0,
            "Suspended",
            "Argo CD's health of a paused canary"
        );
        // Nothing moves by itself.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let still = api.get("web").await.unwrap();
        assert_eq!(rollout(&still).unwrap().step_index, 0);

        let history = run_ok(kubectl_kubundle(&["history", "web", "-n", &ns]));
        assert!(history.contains("canary: Paused"), "{history}");
        let out = run_ok(kubectl_kubundle(&["promote", "web", "-n", &ns]));
        eprintln!("{out}");
        let next = at_step(&api, 1, 60).await;
        let r = rollout(&next).unwrap();
        assert!(
            r.acknowledged_request
                .as_deref()
                .is_some_and(|a| a.starts_with("promote ")),
            "{r:?}"
        );

        let out = run_ok(kubectl_kubundle(&["abort", "web", "-n", &ns]));
        eprintln!("{out}");
        let aborted = wait_bundle(
            &api,
            "web",
            Duration::from_secs(60),
            "aborted by hand",
            |b| {
                rollout(b).is_some_and(|r| {
                    r.reason.as_deref() == Some("AbortRequested") && r.canary_replicas == 0
                })
            },
        )
        .await;
        let stalled = condition_of(&aborted, "Stalled").unwrap();
        assert_eq!(
            (stalled.0.as_str(), stalled.1.as_str()),
            ("True", "RolloutAborted")
        );
        let object = serde_json::to_value(&aborted).unwrap();
        assert_eq!(
            argocd_health(&object).0,
            "Degraded",
            "Argo CD's health of an aborted canary"
        );
        let status = run_ok(kubectl_kubundle(&["status", "web", "-n", &ns]));
        eprintln!("{status}");
        assert!(
            status.contains("canary"),
            "kubectl kubundle status names the canary:\n{status}"
        );

        // retry starts it again from the first step.
        run_ok(kubectl_kubundle(&["retry", "web", "-n", &ns]));
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(120),
            "retried, waiting again",
            |b| rollout(b).is_some_and(|r| r.phase == Phase::Paused && r.step_index == 0),
        )
        .await;
        run_ok(kubectl_kubundle(&["promote", "web", "--full", "-n", &ns]));
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(180),
            "promoted in full",
            |b| is_ready(b) && rollout(b).is_some_and(|r| r.phase == Phase::Promoted),
        )
        .await;
        delete_namespace(&client, &ns).await;
    }
}

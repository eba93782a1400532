//! On the local cluster's real node (deploy/local/node.sh): pods that really run.
//!
//! kubundle runs in-cluster from its own image, installed by Helm from the chart in the local OCI
//! registry, in a namespace that enforces the restricted Pod Security Standard; the guestbook
//! answers through its Service; containers that crash, images that do not exist, OOM kills and
//! pods no node can take show in the AppBundle's status.
//!
//! tests/run.sh runs these last, one at a time, with no operator of its own running (the in-cluster
//! one reconciles every namespace), after deploy/local/images.sh pushed the images; the image
//! references come from its output (KUBUNDLE_IMAGE_REPOSITORY, KUBUNDLE_IMAGE_TAG, KUBUNDLE_CHART,
//! REDIS_IMAGE, FRONTEND_IMAGE, STRESS_IMAGE).

mod support;

mod real_node {
    use std::process::Command;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use k8s_openapi::api::core::v1::Pod;
    use kube::Api;
    use kube::api::{DeleteParams, ListParams};
    use kubundle::api::AppBundle;

    use crate::support::real::*;
    use crate::support::*;

    /// The operator runs in-cluster from its image: installed from the OCI chart under the
    /// restricted Pod Security Standard, on the real node, its probes passing; /metrics answers
    /// through its Service; deleting the leader's pod hands leadership to the other replica,
    /// which then reconciles.
    #[tokio::test]
    async fn the_operator_runs_in_cluster_and_hands_over_leadership() {
        let client = client().await;
        operator_installed();
        let pods = operator_pods(&client).await;
        assert_eq!(pods.len(), 2, "two replicas");
        let image = format!(
            "{}:{}",
            image_env("KUBUNDLE_IMAGE_REPOSITORY"),
            image_env("KUBUNDLE_IMAGE_TAG")
        );
        for p in &pods {
            let spec = p.spec.as_ref().unwrap();
            assert_eq!(spec.node_name.as_deref(), Some(NODE));
            assert_eq!(spec.containers[0].image.as_deref(), Some(image.as_str()));
            assert!(pod_ready(p), "probes pass: {:?}", p.status);
        }
        // The namespace enforces restricted: a pod that asks for root is refused there.
        let out = run(kubectl(&[
            "run",
            "root",
            "-n",
            OPERATOR_NS,
            "--image=registry.kubundle.local/redis:7.0",
            "--overrides={\"spec\":{\"securityContext\":{\"runAsUser\":0}}}",
        ]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("restricted"),
            "{stderr}"
        );

        // /metrics through the Service (kube-proxy routes the ClusterIP on this machine).
        let metrics = service_url(&client, OPERATOR_NS, "kubundle-real-metrics", false).await;
        let body = scrape(&format!("{metrics}/metrics")).await;
        assert!(sample(&body, "kubundle_leader").is_some(), "{body}");

        // Leader handover.
        let leader = eventually(Duration::from_secs(60), "a leader", || async {
            lease_holder(&client).await.ok_or("no holder".to_string())
        })
        .await;
        assert!(
            pods.iter()
                .any(|p| p.metadata.name.as_deref() == Some(&leader)),
            "{leader}"
        );
        let start = Instant::now();
        Api::<Pod>::namespaced(client.clone(), OPERATOR_NS)
            .delete(&leader, &DeleteParams::default())
            .await
            .unwrap();
        let next = eventually(Duration::from_secs(60), "another leader", || async {
            match lease_holder(&client).await {
                Some(h) if h != leader => Ok(h),
                other => Err(format!("holder {other:?}")),
            }
        })
        .await;
        eprintln!(
            "leader {leader} deleted; {next} leads after {:?}",
            start.elapsed()
        );
        let ns = real_namespace(&client, "after-handover").await;
        apply_yaml(&ns, &bundle("web", &image_env("REDIS_IMAGE"), 6379, ""));
        wait_bundle(
            &bundles(&client, &ns),
            "web",
            Duration::from_secs(60),
            "Ready",
            is_ready,
        )
        .await;
        delete_namespace(&client, &ns).await;
    }

    /// The guestbook answers: an entry written through the frontend's LoadBalancer address is read
    /// back (the frontend writes to the Redis leader and reads from the followers, found through
    /// cluster DNS); a rolling update of the frontend to v2 loses no request of a client polling
    /// the Service meanwhile; `kubectl logs` and `kubectl exec` work on its pods.
    #[tokio::test]
    async fn the_guestbook_answers_and_rolls_out_without_a_failed_request() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "guestbook").await;
        let yaml =
            std::fs::read_to_string(repo_root().join("deploy/local/guestbook.yaml")).unwrap();
        let start = Instant::now();
        apply_yaml(&ns, &yaml);
        let api = bundles(&client, &ns);
        for name in ["redis-leader", "redis-follower", "frontend"] {
            wait_bundle(&api, name, Duration::from_secs(120), "Ready", is_ready).await;
        }
        let url = service_url(&client, &ns, "frontend", true).await;
        let entry = format!("hello from the test at {:?}", std::time::SystemTime::now());
        // (Ready says the pods are available and the address assigned; kube-proxy programs the
        // address's rules moments later, as a cloud load balancer takes its time: retry.)
        eventually(Duration::from_secs(20), "the entry accepted", || async {
            match http_request("POST", &format!("{url}/entries"), &entry).await? {
                (201, _) => Ok(()),
                (code, body) => Err(format!("{code} {body}")),
            }
        })
        .await;
        eventually(
            Duration::from_secs(20),
            "the entry read back from a follower",
            || async {
                let (code, body) = http_get(&format!("{url}/entries")).await?;
                let entries: Vec<String> =
                    serde_json::from_str(&body).map_err(|e| format!("{code} {body}: {e}"))?;
                if entries.contains(&entry) {
                    Ok(())
                } else {
                    Err(body)
                }
            },
        )
        .await;
        eprintln!(
            "apply -> guestbook answering with the entry: {:?}",
            start.elapsed()
        );
        // And through the real Gateway (Traefik): the URL the status gives.
        let frontend = api.get("frontend").await.unwrap();
        let through_gateway = frontend
            .status
            .as_ref()
            .and_then(|s| s.address.as_ref())
            .and_then(|a| a.external.last().cloned())
            .expect("the frontend's URL through the Gateway");
        assert_eq!(through_gateway, "http://10.255.253.1/");
        eventually(
            Duration::from_secs(20),
            "the entry through the Gateway",
            || async {
                let (code, body) = http_get(&format!("{through_gateway}entries")).await?;
                if code == 200 && body.contains(&entry) {
                    Ok(())
                } else {
                    Err(format!("{code} {body}"))
                }
            },
        )
        .await;

        // kubectl logs and exec.
        let logs = run_ok(kubectl(&["logs", "-n", &ns, "deployment/frontend"]));
        assert!(logs.contains("guestbook frontend v1"), "{logs}");
        let pong = run_ok(kubectl(&[
            "exec",
            "-n",
            &ns,
            "deployment/redis-leader",
            "--",
            "redis-cli",
            "ping",
        ]));
        assert_eq!(pong.trim(), "PONG");
        let role = run_ok(kubectl(&[
            "exec",
            "-n",
            &ns,
            "deployment/redis-follower",
            "--",
            "redis-cli",
            "role",
        ]));
        assert!(role.starts_with("slave"), "{role}");

        // A client polls the page through the Service while the frontend rolls to v2.
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let (requests, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let poller = {
            let (stop, seen, requests, failures, url) = (
                stop.clone(),
                seen.clone(),
                requests.clone(),
                failures.clone(),
                url.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    requests.fetch_add(1, Ordering::Relaxed);
                    match http_get(&format!("{url}/")).await {
                        Ok((200, body)) => {
                            let version = if body.contains("frontend v2") {
                                "v2"
                            } else {
                                "v1"
                            };
                            let mut seen = seen.lock().unwrap();
                            if seen.last().map(String::as_str) != Some(version) {
                                seen.push(version.to_string());
                            }
                        }
                        other => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            let at = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap();
                            eprintln!(
                                "request failed during the rollout at {}.{:03} (unix): {other:?}",
                                at.as_secs(),
                                at.subsec_millis()
                            );
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v2 = format!("{}:v2", image_env("FRONTEND_IMAGE"));
        run_ok(kubectl(&[
            "patch",
            "appbundle",
            "frontend",
            "-n",
            &ns,
            "--type=merge",
            &format!("-p={{\"spec\":{{\"image\":\"{v2}\"}}}}"),
        ]));
        let rollout = Instant::now();
        wait_bundle(
            &api,
            "frontend",
            Duration::from_secs(120),
            "Ready with v2",
            |b| {
                is_ready(b)
                    && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some(v2.as_str())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        poller.await.unwrap();
        let (requests, failures) = (
            requests.load(Ordering::Relaxed),
            failures.load(Ordering::Relaxed),
        );
        let seen = seen.lock().unwrap().clone();
        eprintln!(
            "rollout to v2 Ready in {:?}: {requests} requests, {failures} failed, versions in order {seen:?}",
            rollout.elapsed()
        );
        assert_eq!(failures, 0, "requests failed during the rolling update");
        assert!(requests > 100, "the client polled too little: {requests}");
        assert_eq!(seen.first().map(String::as_str), Some("v1"));
        assert_eq!(seen.last().map(String::as_str), Some("v2"));
        delete_namespace(&client, &ns).await;
    }

    /// The AppBundle goes Ready=False (within 20 s of `after`) and then Ready again (within 60 s).
    async fn dips_and_recovers(api: &Api<AppBundle>, name: &str, after: &str) {
        let not_ready = |b: &AppBundle| condition_of(b, "Ready").is_some_and(|c| c.0 == "False");
        let what = format!("Ready=False after {after}");
        wait_bundle(api, name, Duration::from_secs(20), &what, not_ready).await;
        wait_bundle(api, name, Duration::from_secs(60), "Ready again", is_ready).await;
    }

    /// Self-healing, as the status tells it: a container that dies is restarted and a deleted
    /// pod is replaced; the AppBundle goes Ready=False meanwhile and Ready=True again.
    #[tokio::test]
    async fn a_killed_container_and_a_deleted_pod_heal_and_the_status_says_so() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "heal").await;
        // Ready 3 s after a (re)start at the earliest: a restarted container is not ready for at
        // least that long, so the Deployment (and the AppBundle) see it. Without the delay a
        // restart can complete between two of the kubelet's status syncs, and nothing but the
        // pod's restartCount would show it.
        let probe = "  readinessProbe: {tcpSocket: {port: 6379}, periodSeconds: 1, initialDelaySeconds: 3}\n";
        apply_yaml(
            &ns,
            &bundle("cache", &image_env("REDIS_IMAGE"), 6379, probe),
        );
        let api = bundles(&client, &ns);
        wait_bundle(&api, "cache", Duration::from_secs(60), "Ready", is_ready).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let first = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .remove(0);
        let first_name = first.metadata.name.clone().unwrap();

        // Kill the container's process: redis exits, the kubelet starts it again.
        let _ = run(kubectl(&[
            "exec",
            "-n",
            &ns,
            &first_name,
            "--",
            "redis-cli",
            "shutdown",
            "nosave",
        ]));
        dips_and_recovers(&api, "cache", "the kill").await;
        let restarted = pods.get(&first_name).await.unwrap();
        let restarts = restarted.status.unwrap().container_statuses.unwrap()[0].restart_count;
        assert_eq!(restarts, 1, "the same pod, its container restarted once");

        // Delete the pod: the Deployment replaces it.
        pods.delete(&first_name, &DeleteParams::default())
            .await
            .unwrap();
        dips_and_recovers(&api, "cache", "the delete").await;
        let now: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| p.metadata.name.unwrap())
            .collect();
        assert_eq!(now.len(), 1);
        assert_ne!(now[0], first_name, "a new pod replaced the deleted one");
        delete_namespace(&client, &ns).await;
    }

    /// A client refused by a LoadBalancer address while its Service has no ready pod (kube-proxy
    /// rejects it) reaches the pods once they are ready, even when it keeps its source port:
    /// conntrack must not keep the refusal. A rolling update of the guestbook was refused so, for
    /// a client that reused a port refused 19 s earlier, while the Service had 3 ready pods
    /// (deploy/local/loadbalancer.sh forgets what was tracked while the address was not routed).
    #[tokio::test]
    async fn a_client_refused_before_the_pods_are_ready_is_not_refused_after() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "lbwindow").await;
        let frontend = format!("{}:v1", image_env("FRONTEND_IMAGE"));
        let web = |replicas: u32| {
            format!(
                "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: web}}\nspec:\n  \
                 image: {frontend}\n  replicas: {replicas}\n  \
                 ports: [{{name: http, containerPort: 8080, servicePort: 80}}]\n  \
                 readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}\n  \
                 service: {{type: LoadBalancer}}\n"
            )
        };
        apply_yaml(&ns, &web(0));
        let api = bundles(&client, &ns);
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(90),
            "Ready at 0 replicas",
            is_ready,
        )
        .await;
        let address = eventually(
            Duration::from_secs(20),
            "an address for the Service",
            || async {
                let svc =
                    Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), &ns)
                        .get("web")
                        .await
                        .map_err(|e| e.to_string())?;
                svc.status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .and_then(|i| i.into_iter().next())
                    .and_then(|i| i.ip)
                    .map(|ip| format!("{ip}:80"))
                    .ok_or_else(|| "no address yet".to_string())
            },
        )
        .await;
        // A client that happens to reuse one source port: `connect(Some(port))`, the port one the
        // system gave (free).
        let port = {
            let socket = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
            socket.local_addr().unwrap().port()
        };
        let connect = |address: String, port: Option<u16>| async move {
            let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
            socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
            socket
                .bind(([0, 0, 0, 0], port.unwrap_or(0)).into())
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(
                Duration::from_secs(2),
                socket.connect(address.parse().unwrap()),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("{:?}: {e}", e.kind())),
                Err(_) => Err("no answer in 2 s".to_string()),
            }
        };
        // Refused by kube-proxy's rule for a Service without endpoints (written within its 1 s
        // sync period; before it, the host itself refuses).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let refused = connect(address.clone(), Some(port)).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.starts_with("ConnectionRefused")),
            "{address} without a ready pod, from port {port}: {refused:?} (expected refused)"
        );
        apply_yaml(&ns, &web(1));
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(90),
            "Ready at 1 replica",
            |b| ready_at(b, 1),
        )
        .await;
        let start = Instant::now();
        eventually(
            Duration::from_secs(20),
            "kube-proxy routing the address (a new source port reaching the pod)",
            || connect(address.clone(), None),
        )
        .await;
        let routed = start.elapsed();
        // What the stand-in takes to forget (it looks every 0.5 s, and again 1 s later).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let again = connect(address.clone(), Some(port)).await;
        assert!(
            again.is_ok(),
            "port {port}, refused while the Service had no pod, is refused again with a ready pod: {again:?}"
        );
        eprintln!(
            "{address}: refused from port {port} without a pod; routed {routed:?} after Ready; port {port} answered"
        );
        delete_namespace(&client, &ns).await;
    }

    /// Sidecars and init containers: the sidecar (Redis) starts first and keeps running beside the
    /// main container (the guestbook frontend, which reads from it over localhost); the init
    /// container runs between them and seeds an entry, which the frontend then serves. The
    /// sidecar's readiness counts: when it restarts, the AppBundle is not Ready until it is back.
    #[tokio::test]
    async fn a_sidecar_runs_beside_the_main_container_and_an_init_container_before_it() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "sidecar").await;
        let redis = image_env("REDIS_IMAGE");
        let frontend = format!("{}:v1", image_env("FRONTEND_IMAGE"));
        let seed = "seeded by the init container";
        let extra = format!(
            "  env:\n  - {{name: REDIS_LEADER_SERVICE_HOST, value: 127.0.0.1}}\n  - {{name: REDIS_FOLLOWER_SERVICE_HOST, value: 127.0.0.1}}\n\
             \x20 readinessProbe: {{httpGet: {{path: /healthz, port: 8080}}, periodSeconds: 1}}\n\
             \x20 sidecars:\n  - name: redis\n    image: {redis}\n    args: [--protected-mode, \"no\", --save, \"\", --appendonly, \"no\"]\n\
             \x20   startupProbe: {{tcpSocket: {{port: 6379}}, periodSeconds: 1}}\n\
             \x20   readinessProbe: {{tcpSocket: {{port: 6379}}, periodSeconds: 1, initialDelaySeconds: 3}}\n\
             \x20 initContainers:\n  - name: seed\n    image: {redis}\n    command: [/usr/bin/redis-cli, -h, 127.0.0.1, rpush, guestbook, \"{seed}\"]\n"
        );
        apply_yaml(&ns, &bundle("book", &frontend, 8080, &extra));
        let api = bundles(&client, &ns);
        wait_bundle(&api, "book", Duration::from_secs(90), "Ready", is_ready).await;

        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod = pods
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .remove(0);
        let status = pod.status.clone().unwrap();
        let init = status.init_container_statuses.clone().unwrap();
        let started = |c: &k8s_openapi::api::core::v1::ContainerStatus| {
            let state = c.state.clone().unwrap();
            state
                .running
                .and_then(|r| r.started_at)
                .or(state.terminated.and_then(|t| t.started_at))
                .unwrap_or_else(|| panic!("{} has not started: {c:?}", c.name))
                .0
        };
        let sidecar = init.iter().find(|c| c.name == "redis").unwrap();
        assert!(
            sidecar.state.as_ref().unwrap().running.is_some(),
            "the sidecar keeps running: {sidecar:?}"
        );
        let seeded = init.iter().find(|c| c.name == "seed").unwrap();
        let done = seeded
            .state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .unwrap_or_else(|| panic!("the init container ran to its end: {seeded:?}"));
        assert_eq!(done.exit_code, 0, "{seeded:?}");
        let main = &status.container_statuses.clone().unwrap()[0];
        assert_eq!(main.name, "book");
        assert!(
            started(sidecar) <= started(seeded),
            "the sidecar starts first"
        );
        assert!(
            done.finished_at.clone().unwrap().0 <= started(main),
            "the main container starts after the init container has finished"
        );

        // The frontend serves the entry the init container wrote into the sidecar's Redis.
        let url = service_url(&client, &ns, "book", false).await;
        eventually(
            Duration::from_secs(20),
            "the seeded entry served",
            || async {
                let (code, body) = http_get(&format!("{url}/entries")).await?;
                if code == 200 && body.contains(seed) {
                    Ok(())
                } else {
                    Err(format!("{code} {body}"))
                }
            },
        )
        .await;

        // The sidecar's readiness is the pod's: stop its Redis, and the AppBundle dips.
        let name = pod.metadata.name.clone().unwrap();
        let _ = run(kubectl(&[
            "exec",
            "-n",
            &ns,
            &name,
            "-c",
            "redis",
            "--",
            "/usr/bin/redis-cli",
            "shutdown",
            "nosave",
        ]));
        dips_and_recovers(&api, "book", "the sidecar's exit").await;
        let restarted = pods.get(&name).await.unwrap();
        let sidecar_restarts = restarted
            .status
            .unwrap()
            .init_container_statuses
            .unwrap()
            .into_iter()
            .find(|c| c.name == "redis")
            .unwrap()
            .restart_count;
        assert_eq!(sidecar_restarts, 1, "the sidecar restarted in the same pod");
        delete_namespace(&client, &ns).await;
    }

    /// Each way a pod fails shows in the AppBundle's Ready reason within 20 s of the apply, in
    /// the kubelet's or the scheduler's words, Stalled where it will not fix itself; and clears
    /// once the AppBundle is fixed.
    #[tokio::test]
    async fn pod_failures_show_in_status_within_20_seconds_and_clear() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "failing").await;
        let redis = image_env("REDIS_IMAGE");
        let stress = image_env("STRESS_IMAGE");
        // (name, broken spec, expected reason, stalled, message fragment, fixed spec)
        let cases = [
            (
                "crash",
                bundle("crash", &redis, 6379, "  args: [/nonexistent.conf]\n"),
                "CrashLoopBackOff",
                false,
                "keeps exiting with code 1".to_string(),
                bundle("crash", &redis, 6379, ""),
            ),
            (
                "initfail",
                bundle(
                    "initfail",
                    &redis,
                    6379,
                    "  initContainers:\n  - {name: migrate, image: REDIS, command: [/usr/bin/redis-cli, -h, 127.0.0.1, -p, \"1\", ping]}\n",
                )
                .replace("REDIS", &redis),
                "CrashLoopBackOff",
                false,
                "init container migrate of pod".to_string(),
                bundle("initfail", &redis, 6379, ""),
            ),
            (
                "noconfig",
                bundle(
                    "noconfig",
                    &redis,
                    6379,
                    "  envFrom: [{configMapRef: {name: absent-settings}}]\n",
                ),
                "ConfigMissing",
                false,
                "ConfigMap absent-settings (used by spec.envFrom[0]) does not exist".to_string(),
                bundle("noconfig", &redis, 6379, ""),
            ),
            (
                "nopull",
                bundle("nopull", "registry.kubundle.local/does-not-exist:1", 80, ""),
                "ImagePullBackOff",
                true,
                "cannot get its image registry.kubundle.local/does-not-exist:1".to_string(),
                bundle("nopull", &redis, 6379, ""),
            ),
            (
                "oom",
                bundle(
                    "oom",
                    &stress,
                    80,
                    "  args: [--vm, \"1\", --vm-bytes, 256M, --vm-hang, \"0\"]\n  resources: {limits: {memory: 64Mi}}\n",
                ),
                "OOMKilled",
                true,
                "more than its memory limit of 64Mi".to_string(),
                bundle(
                    "oom",
                    &stress,
                    80,
                    "  args: [--vm, \"1\", --vm-bytes, 16M, --vm-hang, \"0\"]\n  resources: {limits: {memory: 64Mi}}\n",
                ),
            ),
            (
                "unschedulable",
                bundle(
                    "unschedulable",
                    &redis,
                    6379,
                    "  resources: {requests: {cpu: \"64\"}}\n",
                ),
                "Unschedulable",
                false,
                "Insufficient cpu".to_string(),
                bundle(
                    "unschedulable",
                    &redis,
                    6379,
                    "  resources: {requests: {cpu: 10m}}\n",
                ),
            ),
        ];
        let api = bundles(&client, &ns);
        let start = Instant::now();
        for (_, broken, ..) in &cases {
            apply_yaml(&ns, broken);
        }
        for (name, _, reason, stalled, fragment, _) in &cases {
            let b = wait_bundle(
                &api,
                name,
                Duration::from_secs(20).saturating_sub(start.elapsed()),
                &format!("Ready=False {reason} within 20 s"),
                |b| condition_of(b, "Ready").is_some_and(|c| c.0 == "False" && c.1 == *reason),
            )
            .await;
            let (_, _, message) = condition_of(&b, "Ready").unwrap();
            assert!(message.contains(fragment.as_str()), "{name}: {message}");
            let stalled_now = condition_of(&b, "Stalled").unwrap();
            assert_eq!(
                stalled_now.0 == "True",
                *stalled,
                "{name}: Stalled {stalled_now:?}"
            );
            if *stalled {
                assert_eq!(stalled_now.1, *reason);
            }
            eprintln!("{name}: {reason} after {:?}: {message}", start.elapsed());
        }
        // The plugin's tree names the failing pod and, below it, why, in the kubelet's words.
        let tree = run_ok(kubectl_kubundle(&["status", "initfail", "-n", &ns]));
        assert!(
            tree.lines()
                .any(|l| l.contains("─ Pod initfail-") && l.contains("NotReady")),
            "{tree}"
        );
        assert!(
            tree.contains("CrashLoopBackOff: init container migrate of pod initfail-"),
            "{tree}"
        );
        eprintln!("kubectl kubundle status initfail:\n{tree}");
        for (_, _, _, _, _, fixed) in &cases {
            apply_yaml(&ns, fixed);
        }
        for (name, ..) in &cases {
            let b = wait_bundle(
                &api,
                name,
                Duration::from_secs(90),
                "Ready once fixed",
                is_ready,
            )
            .await;
            assert_eq!(condition_of(&b, "Stalled").unwrap().0, "False", "{name}");
        }
        delete_namespace(&client, &ns).await;
    }

    /// The local Gateway's address (deploy/local/node.sh): Traefik's entrypoint for port 80.
    const GATEWAY: &str = "10.255.253.1:80";

    /// A client that GETs `url` through the Gateway's address every 20 ms until stopped: the
    /// number of requests and of failed ones (anything but a 200 from the frontend).
    struct Poller {
        stop: Arc<AtomicBool>,
        requests: Arc<AtomicU32>,
        failures: Arc<AtomicU32>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Poller {
        fn start(url: &str) -> Poller {
            let stop = Arc::new(AtomicBool::new(false));
            let (requests, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
            let task = {
                let (stop, requests, failures, url) = (
                    stop.clone(),
                    requests.clone(),
                    failures.clone(),
                    url.to_string(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        requests.fetch_add(1, Ordering::Relaxed);
                        match http_get_via(&url, GATEWAY).await {
                            Ok((200, body)) if body.contains("frontend") => {}
                            other => {
                                failures.fetch_add(1, Ordering::Relaxed);
                                eprintln!("request through the gateway failed: {other:?}");
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            };
            Poller {
                stop,
                requests,
                failures,
                task,
            }
        }

        async fn stop(self) -> (u32, u32) {
            self.stop.store(true, Ordering::Relaxed);
            self.task.await.unwrap();
            (
                self.requests.load(Ordering::Relaxed),
                self.failures.load(Ordering::Relaxed),
            )
        }
    }

    /// spec.http through a real Gateway API and Ingress controller (Traefik, deploy/local/node.sh),
    /// nothing played by the test: Ready once Traefik accepted the HTTPRoute, and the URL in
    /// status.address.external answers from the pods; a rolling update through the Gateway fails
    /// no request; switching to an Ingress and back, with a client polling the URL; a Gateway
    /// whose listener does not admit the namespace, and one that does not exist, in Ready with
    /// the controller's words, cleared when fixed; a TLS Ingress answers HTTPS with the secret's
    /// certificate.
    #[tokio::test]
    async fn http_reaches_the_pods_through_a_real_gateway_and_ingress() {
        let client = client().await;
        operator_installed();
        let ns = real_namespace(&client, "routed").await;
        let api = bundles(&client, &ns);
        let host = format!("web.{ns}.test");
        let url = format!("http://{host}/");
        let frontend = image_env("FRONTEND_IMAGE");
        let bundle = |version: &str, http: &str| {
            format!(
                "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: web}}\nspec:\n  \
                 image: {frontend}:{version}\n  replicas: 2\n  \
                 ports: [{{name: http, containerPort: 8080, servicePort: 80}}]\n  \
                 env: [{{name: SHUTDOWN_DELAY_SECONDS, value: '10'}}]\n  \
                 readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}\n  \
                 http:\n    hostnames: [{host}]\n    {http}\n"
            )
        };
        let local = "gateway: {name: local, namespace: gateway-system}";
        let ready_at = |external: String| {
            move |b: &AppBundle| {
                is_ready(b)
                    && b.status
                        .as_ref()
                        .and_then(|s| s.address.as_ref())
                        .and_then(|a| a.external.first().map(String::as_str))
                        == Some(external.as_str())
            }
        };
        let start = Instant::now();
        apply_yaml(&ns, &bundle("v1", local));
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(120),
            "Ready through the Gateway",
            ready_at(url.clone()),
        )
        .await;
        let ready = start.elapsed();
        eventually(
            Duration::from_secs(20),
            "an answer through the Gateway",
            || async {
                match http_get_via(&url, GATEWAY).await? {
                    (200, body) if body.contains("frontend v1") => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        eprintln!(
            "apply -> Ready through the Gateway {ready:?}, answering {:?}",
            start.elapsed()
        );

        // A rolling update through the Gateway.
        let poller = Poller::start(&url);
        tokio::time::sleep(Duration::from_secs(1)).await;
        apply_yaml(&ns, &bundle("v2", local));
        wait_bundle(&api, "web", Duration::from_secs(120), "Ready on v2", |b| {
            is_ready(b)
                && b.status
                    .as_ref()
                    .and_then(|s| s.image.as_deref())
                    .is_some_and(|i| i.ends_with(":v2"))
        })
        .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (requests, failures) = poller.stop().await;
        eprintln!("rolling update through the Gateway: {requests} requests, {failures} failed");
        assert_eq!(failures, 0, "requests failed during the rolling update");
        assert!(requests > 100, "the client polled too little: {requests}");

        // Gateway -> Ingress -> Gateway, with the client polling.
        for (what, http) in [
            ("Ingress", "ingress: {className: traefik}"),
            ("Gateway", local),
        ] {
            let poller = Poller::start(&url);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let switch = Instant::now();
            apply_yaml(&ns, &bundle("v2", http));
            wait_bundle(
                &api,
                "web",
                Duration::from_secs(60),
                "Ready after the switch",
                ready_at(url.clone()),
            )
            .await;
            let took = switch.elapsed();
            let (kind, gone) = if what == "Ingress" {
                ("ingress", "httproute")
            } else {
                ("httproute", "ingress")
            };
            run_ok(kubectl(&["-n", &ns, "get", kind, "web"]));
            // Make before break: the old one goes a little after the new one routes.
            eventually(
                Duration::from_secs(20),
                &format!("the {gone} deleted"),
                || async {
                    let out = run(kubectl(&[
                        "-n",
                        &ns,
                        "get",
                        gone,
                        "web",
                        "--ignore-not-found",
                    ]));
                    if out.status.success() && out.stdout.is_empty() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&out.stdout).to_string())
                    }
                },
            )
            .await;
            let replaced = switch.elapsed();
            tokio::time::sleep(Duration::from_secs(3)).await;
            let (requests, failures) = poller.stop().await;
            eprintln!(
                "switch to the {what}: Ready in {took:?}, the {gone} deleted after {replaced:?}; \
                 {requests} requests, {failures} failed"
            );
            assert_eq!(failures, 0, "requests failed while switching to the {what}");
        }

        // A Gateway whose only listener admits routes of its own namespace: Traefik's refusal.
        let gateway = |from: &str| {
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: same-only-{ns}, namespace: gateway-system}}\n\
                 spec:\n  gatewayClassName: traefik\n  listeners:\n  - {{name: http, protocol: HTTP, port: 80, \
                 allowedRoutes: {{namespaces: {{from: {from}}}}}}}\n"
            )
        };
        apply_yaml("gateway-system", &gateway("Same"));
        let same_only = format!("gateway: {{name: same-only-{ns}, namespace: gateway-system}}");
        apply_yaml(&ns, &bundle("v2", &same_only));
        let refused = wait_bundle(
            &api,
            "web",
            Duration::from_secs(60),
            "RouteNotAccepted",
            |b| condition_of(b, "Ready").is_some_and(|c| c.1 == "RouteNotAccepted"),
        )
        .await;
        let message = condition_of(&refused, "Ready").unwrap().2;
        assert!(message.contains("NotAllowedByListeners"), "{message}");
        apply_yaml("gateway-system", &gateway("All"));
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(60),
            "Ready once admitted",
            ready_at(url.clone()),
        )
        .await;
        run_ok(kubectl(&[
            "-n",
            "gateway-system",
            "delete",
            "gateway",
            &format!("same-only-{ns}"),
        ]));

        // A Gateway that does not exist.
        apply_yaml(
            &ns,
            &bundle("v2", "gateway: {name: nowhere, namespace: gateway-system}"),
        );
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(60),
            "the missing Gateway named",
            |b| {
                condition_of(b, "Ready").is_some_and(|c| {
                    c.1 == "WaitingForRoute"
                        && c.2
                            .contains("Gateway gateway-system/nowhere does not exist")
                })
            },
        )
        .await;

        // HTTPS through a TLS Ingress, with the secret's certificate.
        let dir = std::env::temp_dir().join(format!("kubundle-tls-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        run_ok(Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={host}"),
            "-addext",
            &format!("subjectAltName=DNS:{host}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ]));
        run_ok(kubectl(&[
            "-n",
            &ns,
            "create",
            "secret",
            "tls",
            "web-tls",
            &format!("--cert={}", cert.display()),
            &format!("--key={}", key.display()),
        ]));
        apply_yaml(
            &ns,
            &bundle(
                "v2",
                "ingress: {className: traefik, tlsSecretName: web-tls}",
            ),
        );
        let https = format!("https://{host}/");
        wait_bundle(
            &api,
            "web",
            Duration::from_secs(60),
            "Ready with an HTTPS URL",
            ready_at(https.clone()),
        )
        .await;
        let resolve = format!("{host}:443:{}", GATEWAY.split(':').next().unwrap());
        eventually(
            Duration::from_secs(20),
            "an HTTPS answer with the secret's certificate",
            || async {
                let out = run(Command::new("curl").args([
                    "-sS",
                    "--max-time",
                    "5",
                    "--resolve",
                    &resolve,
                    "--cacert",
                    cert.to_str().unwrap(),
                    &https,
                ]));
                let body = String::from_utf8_lossy(&out.stdout).to_string();
                if out.status.success() && body.contains("frontend v2") {
                    Ok(())
                } else {
                    Err(format!("{body} {}", String::from_utf8_lossy(&out.stderr)))
                }
            },
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        delete_namespace(&client, &ns).await;
    }
}

//! The fault suite: the API server and etcd stopped and started again (etcd also with every
//! connection the operator had open black-holed), the operator killed with SIGKILL in the middle
//! of a rollout. It disrupts the whole cluster: the test command runs it on a cluster of its own
//! (tests/chaos.sh), with no operator running there; each test starts the operator it observes.

mod support;

mod faults {
    use std::time::{Duration, Instant};

    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use kube::api::{GetParams, ListParams, Patch, PatchParams};
    use kube::{Api, ResourceExt};
    use kubundle::api::AppBundle;

    use crate::support::*;

    fn cluster_sh() -> std::process::Command {
        std::process::Command::new(repo_root().join("deploy/local/cluster.sh"))
    }

    async fn start_operator() -> Operator {
        Operator::start(&["--log-format=json".to_string()], &[], &kubeconfig_path()).await
    }

    /// The HTTP status of GET `url`, or None when nothing answers.
    async fn http_status(url: &str) -> Option<u16> {
        http_get(url).await.ok().map(|(status, _)| status)
    }

    fn bundle(name: &str, image: &str) -> String {
        format!(
            "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: {name}}}\n\
             spec: {{image: '{image}', replicas: 2, ports: [{{containerPort: 80}}]}}\n"
        )
    }

    /// `n` AppBundles `b0`..`b{n-1}` of `image`, as one multi-document manifest.
    fn many(n: usize, image: &str) -> String {
        (0..n)
            .map(|i| {
                format!(
                    "apiVersion: kubundle.dev/v1alpha1\nkind: AppBundle\nmetadata: {{name: b{i}}}\n\
                     spec: {{image: '{image}', ports: [{{containerPort: 80}}]}}\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n")
    }

    fn deployment_image(d: &Deployment) -> String {
        container(d).image.clone().unwrap_or_default()
    }

    /// Stops `component` for `down` seconds while checking /readyz; then makes a spec change and
    /// a drift and measures how long kubundle takes to apply and repair them.
    /// `bound`: how soon after it is made a change must be applied (and a drift undone).
    async fn outage(
        component: &str,
        down: u64,
        expect_not_ready: bool,
        black_hole: bool,
        bound: Duration,
    ) {
        let client = client().await;
        let operator = start_operator().await;
        let ns = create_namespace(&client, &format!("fault-{component}")).await;
        apply_yaml(&ns, &bundle("web", "nginx:1.27"));
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        // The controller manager may still be catching up after the previous fault (its own
        // reflectors back off up to 30 s): Ready depends on it, not on kubundle alone.
        wait_bundle(&api, "web", Duration::from_secs(120), "Ready", is_ready).await;
        let readyz = format!("{}/readyz", operator.url);
        assert_eq!(http_status(&readyz).await, Some(200));
        // Every connection the operator has open goes silent from here on, as when a NAT or a
        // load balancer forgets them: no reset, no error; only new connections get through.
        let _silenced = black_hole.then(|| BlackHole::connections_of(&operator));

        let component_name = component.to_string();
        let restart = tokio::task::spawn_blocking(move || {
            run_ok(cluster_sh().args(["restart", &component_name, "--down", &down.to_string()]))
        });
        let mut saw_not_ready = false;
        while !restart.is_finished() {
            if http_status(&readyz).await == Some(503) {
                saw_not_ready = true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        restart.await.unwrap();
        if expect_not_ready {
            assert!(
                saw_not_ready,
                "/readyz never said not ready while {component} was down"
            );
        }
        assert_eq!(
            http_status(&format!("{}/healthz", operator.url)).await,
            Some(200)
        );

        // Back: /readyz says ready again within seconds, and a change and a drift, made now, are
        // handled within `bound`.
        let back = Instant::now();
        eventually(Duration::from_secs(20), "/readyz to say ready", || async {
            match http_status(&readyz).await {
                Some(200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let ready_after = back.elapsed();
        let client = crate::support::client().await;
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        eventually(
            Duration::from_secs(10),
            "the spec change to be accepted",
            || async {
                let patch = serde_json::json!({"spec": {"image": "nginx:1.29"}});
                api.patch("web", &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        )
        .await;
        let changed = Instant::now();
        eventually(bound, "the new image in the Deployment", || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            if deployment_image(&d) == "nginx:1.29" {
                Ok(())
            } else {
                Err(deployment_image(&d))
            }
        })
        .await;
        let applied_after = changed.elapsed();
        let drift = serde_json::json!({"spec": {"replicas": 5}});
        deployments
            .patch("web", &PatchParams::default(), &Patch::Merge(&drift))
            .await
            .unwrap();
        let drifted = Instant::now();
        eventually(bound, "the drift to be undone", || async {
            let d = deployments.get("web").await.map_err(|e| e.to_string())?;
            match d.spec.and_then(|s| s.replicas) {
                Some(2) => Ok(()),
                other => Err(format!("replicas {other:?}")),
            }
        })
        .await;
        let repaired_after = drifted.elapsed();
        // The status speaks of the new generation within `bound` too (Ready itself follows the
        // Deployment controller and the nodes, below).
        eventually(bound, "status for the new generation", || async {
            let b = api.get("web").await.map_err(|e| e.to_string())?;
            let observed = b.status.as_ref().and_then(|s| s.observed_generation);
            if observed == b.metadata.generation {
                Ok(())
            } else {
                Err(format!(
                    "observedGeneration {observed:?} of {:?}",
                    b.metadata.generation
                ))
            }
        })
        .await;
        // Ready needs the Deployment controller to roll out, which recovers at its own pace (its
        // reflectors back off up to 30 s after an outage; 65-84 s were measured). A timeout says
        // whose view was behind: the API server's (etcd against its watch cache), the Deployment
        // controller's (its observedGeneration, the ReplicaSets) or kubundle's (its cache).
        let waited = Instant::now();
        loop {
            let b = api.get("web").await.unwrap();
            if is_ready(&b) {
                break;
            }
            if waited.elapsed() > Duration::from_secs(180) {
                panic!(
                    "timed out after 180s waiting for Ready with the new image; last seen: status: {}\n{}",
                    serde_json::to_string(&b.status).unwrap(),
                    views_of_deployment(&client, &ns, "web", &operator).await
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let errors = operator
            .metric(r#"kubundle_watch_errors_total{resource="appbundles"}"#)
            .await;
        eprintln!(
            "{component} down {down}s: /readyz 200 {ready_after:?} after recovery; change applied \
             {applied_after:?} after it was made, drift repaired in {repaired_after:?}; Ready with \
             the new image {:?} after recovery (the Deployment controller's pace); watch errors \
             (appbundles) {errors}",
            back.elapsed()
        );
        if expect_not_ready {
            assert!(errors > 0.0, "no watch error counted");
        }
        delete_namespace(&client, &ns).await;
    }

    /// Each party's view of Deployment `name`, for a failure message: etcd's (a quorum GET), the
    /// API server's watch cache (a GET at resourceVersion 0), the Deployment controller's (the
    /// observedGeneration it reached, the ReplicaSets it made) and kubundle's cache.
    async fn views_of_deployment(
        client: &kube::Client,
        ns: &str,
        name: &str,
        operator: &Operator,
    ) -> String {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let brief = |d: &Deployment| {
            let status = d.status.clone().unwrap_or_default();
            format!(
                "resourceVersion {:?}, generation {:?}, spec.replicas {:?}, status: observedGeneration {:?}, \
                 replicas {:?}, updated {:?}, ready {:?}, available {:?}",
                d.metadata.resource_version,
                d.metadata.generation,
                d.spec.as_ref().and_then(|s| s.replicas),
                status.observed_generation,
                status.replicas,
                status.updated_replicas,
                status.ready_replicas,
                status.available_replicas
            )
        };
        let mut out = String::new();
        match deployments.get(name).await {
            Ok(d) => out += &format!("etcd (quorum GET): {}\n", brief(&d)),
            Err(e) => out += &format!("etcd (quorum GET): {e}\n"),
        }
        match deployments.get_with(name, &GetParams::any()).await {
            Ok(d) => out += &format!("API server watch cache (GET rv=0): {}\n", brief(&d)),
            Err(e) => out += &format!("API server watch cache (GET rv=0): {e}\n"),
        }
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
        match sets
            .list(&ListParams::default().labels(&kubundle::render::selector_string(name)))
            .await
        {
            Ok(list) => {
                for rs in list.items {
                    let status = rs.status.clone().unwrap_or_default();
                    out += &format!(
                        "ReplicaSet {}: spec.replicas {:?}, replicas {}, ready {:?}, observedGeneration {:?} of {:?}\n",
                        rs.name_any(),
                        rs.spec.as_ref().and_then(|s| s.replicas),
                        status.replicas,
                        status.ready_replicas,
                        status.observed_generation,
                        rs.metadata.generation
                    );
                }
            }
            Err(e) => out += &format!("ReplicaSets: {e}\n"),
        }
        let cached = http_get(&format!("{}/debug/cache/{ns}/{name}", operator.url)).await;
        out += &format!("kubundle's cache: {cached:?}\n");
        let watch_errors = scrape(&format!("{}/metrics", operator.url)).await;
        out += &watch_errors
            .lines()
            .filter(|l| l.starts_with("kubundle_watch_errors_total"))
            .collect::<Vec<_>>()
            .join("\n");
        out
    }

    /// An operator started while the API server is down (kubundle rescheduled during a
    /// control-plane upgrade, or a whole cluster booting) waits for it: it stays up, /healthz
    /// answers ok and /readyz 503 saying what it waits for, and once the API server is back it
    /// turns ready and reconciles. (Before: it exited at once with "cannot list AppBundles", and
    /// under a kubelet its restarts back off to minutes: CrashLoopBackOff.)
    #[tokio::test]
    async fn an_operator_started_while_the_api_server_is_down_waits_for_it() {
        let client = client().await;
        let ns = create_namespace(&client, "fault-start").await;
        apply_yaml(&ns, &bundle("web", "nginx:1.27"));
        let restart = tokio::task::spawn_blocking(|| {
            run_ok(cluster_sh().args(["restart", "kube-apiserver", "--down", "15"]))
        });
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        eventually(
            Duration::from_secs(30),
            "the API server to be down",
            || async {
                match namespaces.get(&ns).await {
                    Err(_) => Ok(()),
                    Ok(_) => Err("still answering".to_string()),
                }
            },
        )
        .await;
        let mut operator =
            Operator::try_start(&["--log-format=json".to_string()], &[], &kubeconfig_path())
                .await
                .unwrap_or_else(|e| panic!("started while the API server was down: {e}"));
        let (mut healthz, mut readyz) = (Vec::new(), Vec::new());
        while !restart.is_finished() {
            if let Some(status) = operator.child.try_wait().unwrap() {
                panic!("the operator exited ({status}) while the API server was down");
            }
            healthz.push(http_status(&format!("{}/healthz", operator.url)).await);
            readyz.push(http_get(&format!("{}/readyz", operator.url)).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        restart.await.unwrap();
        let back = Instant::now();
        assert!(
            healthz.len() > 10 && healthz.iter().all(|s| *s == Some(200)),
            "/healthz while the API server was down: {healthz:?}"
        );
        // (The last samples may be from after the API server came back.)
        let waiting = &readyz[..readyz.len() / 2];
        assert!(
            waiting.iter().all(
                |r| matches!(r, Ok((503, body)) if body.contains("waiting for the API server"))
            ),
            "/readyz while the API server was down: {waiting:?}"
        );
        eventually(Duration::from_secs(30), "/readyz to say ready", || async {
            match http_status(&format!("{}/readyz", operator.url)).await {
                Some(200) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let ready_after = back.elapsed();
        let client = crate::support::client().await;
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        // Ready follows the controller manager, which recovers at its own pace after an outage.
        wait_bundle(&api, "web", Duration::from_secs(180), "Ready", is_ready).await;
        eprintln!(
            "started during a 15 s API server outage: up throughout ({} samples), /readyz 200 \
             {ready_after:?} after the API server was back, the AppBundle Ready {:?} after",
            healthz.len(),
            back.elapsed()
        );
        assert!(operator.child.try_wait().unwrap().is_none());
        delete_namespace(&client, &ns).await;
    }

    /// The API server stopped for 60 s (a control-plane upgrade): /readyz goes false and back,
    /// and a change and a drift made after recovery are handled within 10 s. (Before: 156 s and
    /// 327 s, with /readyz saying 200 throughout.)
    #[tokio::test]
    async fn api_server_down_for_a_minute() {
        outage("kube-apiserver", 60, true, false, Duration::from_secs(10)).await;
    }

    /// etcd stopped for 20 s: the API server answers with errors meanwhile; afterwards kubundle
    /// handles a change and a drift. Usually within 0.3 s, but the API server's own watch cache
    /// re-syncs with etcd at its own pace and kubundle's watches see no error meanwhile (one run
    /// saw the change's watch event arrive after more than 10 s), so the bound here is 60 s.
    #[tokio::test]
    async fn etcd_down_for_20_seconds() {
        outage("etcd", 20, false, false, Duration::from_secs(60)).await;
    }

    /// etcd stopped for 20 s while every connection the operator had open was black-holed (its
    /// packets dropped both ways, nothing reset): its watches lose every event from then on
    /// without an error, and requests sent on those connections get no answer. A change and a
    /// drift made after etcd is back must still be handled and the status converge: the watches
    /// give up on a stream silent for 35 s (WATCH_TIMEOUT + 5 s) and requests on a dead
    /// connection fail after 30 s, so both go on over new connections. (Before: the watches
    /// waited 295 s, and a request on a dead connection waited forever.)
    #[tokio::test]
    async fn etcd_down_with_the_operators_connections_black_holed() {
        outage("etcd", 20, false, true, Duration::from_secs(90)).await;
    }

    /// A connection that goes silent after the response's headers came, in the middle of its body
    /// (a NAT or load balancer forgetting it, a proxy pausing it): the operator's client fails the
    /// read after READ_TIMEOUT instead of waiting forever. Looked for after the chaos soak with one
    /// leader for 24 minutes (network faults only) left 15 AppBundles DeploymentPending with the
    /// operator silent: the likeliest cause, a reconcile reading a body forever. Before the fix this
    /// GET never returned. Through Toxiproxy: the body (1 MiB) trickles at 16 KB/s,
    /// then every byte from the API server is dropped and nothing is closed.
    #[tokio::test]
    async fn a_response_body_that_stops_coming_fails_the_read() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kubundle::client::{READ_TIMEOUT, operator_client_for};

        let admin = client().await;
        let ns = create_namespace(&admin, "silent-body").await;
        let configs: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
        // Letters that do not compress, in case the answer is gzipped.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let blob: String = (0..1 << 20)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'a' + (seed % 26) as u8)
            })
            .collect();
        let big: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "big"}, "data": {"blob": blob}
        }))
        .unwrap();
        configs.create(&Default::default(), &big).await.unwrap();

        let proxy = crate::support::toxiproxy::Toxiproxy::start("silent-body").await;
        let kubeconfig = kube::config::Kubeconfig::read_from(&proxy.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let operator = operator_client_for(
            config,
            &kubundle::metrics::Metrics::new(),
            kubundle::leader::Fence::open(),
        )
        .unwrap();
        let through: Api<ConfigMap> = Api::namespaced(operator, &ns);
        proxy
            .add(
                "slow",
                "bandwidth",
                "downstream",
                serde_json::json!({"rate": 16}),
            )
            .await;
        let started = Instant::now();
        let get = tokio::spawn(async move { through.get("big").await.map(|_| ()) });
        // The headers are through at once; the body is about 30 KB in.
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy
            .add(
                "silent",
                "timeout",
                "downstream",
                serde_json::json!({"timeout": 0}),
            )
            .await;
        let answer = tokio::time::timeout(READ_TIMEOUT + Duration::from_secs(30), get)
            .await
            .expect("the GET still waits for a body that stopped coming")
            .unwrap();
        let took = started.elapsed();
        assert!(answer.is_err(), "the GET of 1 MiB at 16 KB/s succeeded");
        assert!(
            took >= READ_TIMEOUT,
            "the GET failed after {took:?}, before the read timeout: {answer:?}"
        );
        eprintln!("the silent body failed the read after {took:?}: {answer:?}");
        proxy.remove("silent").await;
        proxy.remove("slow").await;
        delete_namespace(&admin, &ns).await;
    }

    /// iptables rules dropping the packets of the TCP connections a process had open to the API
    /// server when they were made; removed when dropped.
    struct BlackHole {
        rules: Vec<Vec<String>>,
    }

    impl BlackHole {
        fn connections_of(operator: &Operator) -> BlackHole {
            let authority = api_server_address(&kubeconfig_path());
            let authority = authority.as_str();
            let (ip, port) = authority.rsplit_once(':').unwrap();
            let pid = format!("pid={},", operator.child.id());
            let sockets = run_ok(std::process::Command::new("ss").args([
                "-tnpH",
                "state",
                "established",
                "dst",
                authority,
            ]));
            let local_ports: Vec<String> = sockets
                .lines()
                .filter(|l| l.contains(&pid))
                .filter_map(|l| l.split_whitespace().nth(2))
                .filter_map(|local| local.rsplit_once(':').map(|(_, p)| p.to_string()))
                .collect();
            assert!(
                !local_ports.is_empty(),
                "the operator has no connection to {authority}:\n{sockets}"
            );
            let mut rules = Vec::new();
            for local in &local_ports {
                for (dir_ip, dir_port, other_port) in
                    [("-d", "--dport", "--sport"), ("-s", "--sport", "--dport")]
                {
                    rules.push(
                        [
                            "OUTPUT", "-p", "tcp", dir_ip, ip, dir_port, port, other_port, local,
                            "-j", "DROP",
                        ]
                        .map(String::from)
                        .to_vec(),
                    );
                }
            }
            for rule in &rules {
                run_ok(std::process::Command::new("iptables").arg("-I").args(rule));
            }
            eprintln!(
                "black-holed the operator's {} connections to {authority} (local ports {})",
                local_ports.len(),
                local_ports.join(", ")
            );
            BlackHole { rules }
        }
    }

    impl Drop for BlackHole {
        fn drop(&mut self) {
            for rule in &self.rules {
                let _ = std::process::Command::new("iptables")
                    .arg("-D")
                    .args(rule)
                    .status();
            }
        }
    }

    /// The operator killed with SIGKILL in the middle of an image update of 500 AppBundles: a new
    /// one finishes the rollout, every AppBundle ends Ready with the new image, exactly one
    /// Deployment and one Service each.
    #[tokio::test]
    async fn operator_killed_mid_rollout() {
        const N: usize = 500;
        let client = client().await;
        let ns = create_namespace(&client, "fault-kill").await;
        let operator = start_operator().await;
        let all = |image: &str| many(N, image);
        let out = kubectl_stdin(
            &["apply", "--server-side", "-n", &ns, "-f", "-"],
            &all("nginx:1.27"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        let count_ready = |image: &'static str| {
            let api = api.clone();
            async move {
                let list = api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let n = list
                    .items
                    .iter()
                    .filter(|b| {
                        is_ready(b)
                            && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some(image)
                    })
                    .count();
                Ok::<usize, String>(n)
            }
        };
        eventually(Duration::from_secs(300), "500 AppBundles Ready", || async {
            let n = count_ready("nginx:1.27").await?;
            if n == N {
                Ok(())
            } else {
                Err(format!("{n} Ready"))
            }
        })
        .await;

        // The update is applied while the operator works; it is killed once it has applied 50
        // of the 500 new Deployments (by its own counter), in the middle of its writes.
        let applies = r#"kubundle_api_writes_total{kind="Deployment",verb="apply"}"#;
        let before = operator.metric(applies).await;
        let update = all("nginx:1.29");
        let apply_ns = ns.clone();
        let apply = tokio::task::spawn_blocking(move || {
            kubectl_stdin(
                &["apply", "--server-side", "-n", &apply_ns, "-f", "-"],
                &update,
            )
        });
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        eventually(
            Duration::from_secs(120),
            "50 Deployment updates by the operator",
            || async {
                let n = operator.metric(applies).await - before;
                if n >= 50.0 {
                    Ok(())
                } else {
                    Err(format!("{n} applied"))
                }
            },
        )
        .await;
        drop(operator); // SIGKILL
        let killed_at = Instant::now();
        let out = apply.await.unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let updated_at_kill = deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|d| deployment_image(d) == "nginx:1.29")
            .count();
        let _operator = start_operator().await;
        eventually(
            Duration::from_secs(300),
            "500 AppBundles Ready with the new image",
            || async {
                let n = count_ready("nginx:1.29").await?;
                if n == N {
                    Ok(())
                } else {
                    Err(format!("{n} Ready with nginx:1.29"))
                }
            },
        )
        .await;
        eprintln!(
            "killed with {updated_at_kill} of {N} Deployments updated; all {N} Ready with the new image {:?} after the kill",
            killed_at.elapsed()
        );
        let deployments = deployments
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(client.clone(), &ns);
        let services = services.list(&ListParams::default()).await.unwrap().items;
        assert_eq!(deployments.len(), N);
        assert_eq!(services.len(), N);
        for d in &deployments {
            assert_eq!(d.owner_references().len(), 1, "{}", d.name_any());
        }
        delete_namespace(&client, &ns).await;
    }

    /// The leader frozen (SIGSTOP) for 30 s, longer than its Lease: the standby takes over and
    /// applies the changes made meanwhile; when the old leader is let go (SIGCONT), its watches
    /// hand it those changes at once, and it must write nothing before it finds it has lost the
    /// Lease. Who wrote what is read from the API server's audit log (each replica runs as its
    /// own ServiceAccount), not from the operators' own counters.
    #[tokio::test]
    async fn a_leader_frozen_past_its_lease_writes_nothing_when_it_wakes() {
        const N: usize = 60;
        let client = client().await;
        let lease_ns = create_namespace(&client, "frozen-lease").await;
        let ns = create_namespace(&client, "frozen-apps").await;
        let args: Vec<String> = [
            "--leader-elect",
            "--leader-election-lease=kubundle-frozen",
            "--log-format=json",
        ]
        .map(String::from)
        .to_vec();
        let env = |pod: &str| {
            vec![
                ("POD_NAME".to_string(), pod.to_string()),
                ("POD_NAMESPACE".to_string(), lease_ns.clone()),
            ]
        };
        let mut replicas = Vec::new();
        for name in ["frozen-a", "frozen-b"] {
            let kubeconfig = audit::identity(name);
            replicas.push((name, Operator::start(&args, &env(name), &kubeconfig).await));
        }
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(client.clone(), &lease_ns);
        let holder = |leases: Api<k8s_openapi::api::coordination::v1::Lease>| async move {
            leases
                .get_opt("kubundle-frozen")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec.and_then(|s| s.holder_identity))
        };
        let leader = eventually(Duration::from_secs(30), "a leader", || async {
            holder(leases.clone())
                .await
                .ok_or_else(|| "no holder".to_string())
        })
        .await;
        let all = |image: &str| many(N, image);
        let apply = |image: &str| {
            let out = kubectl_stdin(
                &["apply", "--server-side", "-n", &ns, "-f", "-"],
                &all(image),
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        apply("nginx:1.27");
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        let ready_with = |image: &'static str| {
            let api = api.clone();
            async move {
                let list = api
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let n = list
                    .items
                    .iter()
                    .filter(|b| {
                        is_ready(b)
                            && b.status.as_ref().and_then(|s| s.image.as_deref()) == Some(image)
                    })
                    .count();
                if n == N {
                    Ok(())
                } else {
                    Err(format!("{n} of {N} Ready with {image}"))
                }
            }
        };
        eventually(Duration::from_secs(120), "every AppBundle Ready", || {
            ready_with("nginx:1.27")
        })
        .await;

        let pid = |name: &str| {
            let (_, op) = replicas.iter().find(|(n, _)| *n == name).unwrap();
            op.child.id() as i32
        };
        let frozen = pid(&leader);
        let standby = if leader == "frozen-a" {
            "frozen-b"
        } else {
            "frozen-a"
        };
        let frozen_at = std::time::SystemTime::now();
        // SAFETY: a signal to a child process of this test.
        assert_eq!(unsafe { libc::kill(frozen, libc::SIGSTOP) }, 0);
        let stopped = Instant::now();
        eventually(
            Duration::from_secs(40),
            "the standby to take the Lease",
            || async {
                match holder(leases.clone()).await {
                    Some(h) if h == standby => Ok(()),
                    other => Err(format!("held by {other:?}")),
                }
            },
        )
        .await;
        let took_over = stopped.elapsed();
        apply("nginx:1.29");
        eventually(
            Duration::from_secs(120),
            "the new leader to roll every AppBundle",
            || ready_with("nginx:1.29"),
        )
        .await;
        if let Some(left) = Duration::from_secs(30).checked_sub(stopped.elapsed()) {
            tokio::time::sleep(left).await;
        }
        let woke_at = std::time::SystemTime::now();
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(frozen, libc::SIGCONT) }, 0);
        tokio::time::sleep(Duration::from_secs(10)).await;

        let writes = audit::writes_since(frozen_at);
        let by_frozen: Vec<&audit::Write> = writes
            .iter()
            .filter(|w| w.who == leader && w.resource != "leases" && w.at >= woke_at)
            .collect();
        let by_new = writes
            .iter()
            .filter(|w| w.who == standby && w.resource != "leases")
            .count();
        eprintln!(
            "leader frozen {:?}; the standby took the Lease {took_over:?} after the freeze and wrote \
             {by_new} times; the old leader wrote {} times after it woke",
            stopped.elapsed(),
            by_frozen.len()
        );
        assert!(
            by_new > 0,
            "the audit log has no write by the new leader: is it on?"
        );
        assert!(
            by_frozen.is_empty(),
            "the old leader wrote after it woke, without the Lease:\n{}",
            by_frozen
                .iter()
                .map(|w| format!("{:?} {} {} ({})", w.at, w.verb, w.what, w.code))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let split = audit::split_brain_seconds(&writes);
        assert!(
            split.is_empty(),
            "two leaders wrote in the same second:\n{}",
            split.join("\n")
        );
        drop(replicas);
        delete_namespace(&client, &ns).await;
        delete_namespace(&client, &lease_ns).await;
    }

    /// An AppBundle deleted and made again under the same name before the garbage collector has
    /// deleted its children (here: the controller manager is down, as it was for good in the chaos
    /// soak after an API server restart): the new AppBundle takes the children of its earlier life
    /// over, as it does orphans, instead of calling them another's (Stalled, NameConflict) and
    /// waiting for a collector that may never come; and the collector, back, deletes nothing: the
    /// same Deployment, no pod rolled.
    #[tokio::test]
    async fn an_appbundle_made_again_takes_over_what_its_earlier_life_left() {
        let client = client().await;
        let operator = start_operator().await;
        let ns = create_namespace(&client, "fault-again").await;
        apply_yaml(&ns, &bundle("web", "nginx:1.27"));
        let api: Api<AppBundle> = Api::namespaced(client.clone(), &ns);
        wait_bundle(&api, "web", Duration::from_secs(120), "Ready", is_ready).await;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let before = deployments.get("web").await.unwrap();
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
        let sets_before: Vec<String> = sets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.name_any())
            .collect();

        let restart = tokio::task::spawn_blocking(|| {
            run_ok(cluster_sh().args(["restart", "kube-controller-manager", "--down", "40"]))
        });
        // Until the controller manager has stopped (its PID file names a process no longer running).
        tokio::time::sleep(Duration::from_secs(3)).await;
        let old_uid = api.get("web").await.unwrap().uid().unwrap();
        api.delete("web", &kube::api::DeleteParams::background())
            .await
            .unwrap();
        eventually(Duration::from_secs(10), "the AppBundle gone", || async {
            match api.get_opt("web").await {
                Ok(None) => Ok(()),
                other => Err(format!("{:?}", other.map(|b| b.map(|b| b.uid())))),
            }
        })
        .await;
        let left = deployments.get("web").await.unwrap();
        assert_eq!(
            left.owner_references()[0].uid,
            old_uid,
            "the garbage collector was meant to be down"
        );
        apply_yaml(&ns, &bundle("web", "nginx:1.27"));
        let new_uid = api.get("web").await.unwrap().uid().unwrap();
        let made_again = Instant::now();
        let owner = |d: &Deployment| d.owner_references().first().map(|o| o.uid.clone());
        eventually(
            Duration::from_secs(15),
            "the new AppBundle to control the Deployment",
            || async {
                let b = api.get("web").await.map_err(|e| e.to_string())?;
                if let Some(c) = condition_of(&b, "Stalled").filter(|c| c.0 == "True") {
                    return Err(format!("Stalled: {} {}", c.1, c.2));
                }
                let d = deployments.get("web").await.map_err(|e| e.to_string())?;
                if owner(&d) == Some(new_uid.clone()) && d.owner_references().len() == 1 {
                    Ok(())
                } else {
                    Err(format!("owners {:?}", d.owner_references()))
                }
            },
        )
        .await;
        let took_over = made_again.elapsed();
        restart.await.unwrap();
        // The garbage collector is back and has looked at the children: nothing deleted.
        wait_bundle(&api, "web", Duration::from_secs(120), "Ready", is_ready).await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = deployments.get("web").await.unwrap();
        assert_eq!(
            after.uid(),
            before.uid(),
            "the Deployment was deleted and made again"
        );
        let sets_after: Vec<String> = sets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|r| r.name_any())
            .collect();
        assert_eq!(sets_after, sets_before, "a pod rolled");
        let services: Api<k8s_openapi::api::core::v1::Service> =
            Api::namespaced(client.clone(), &ns);
        let service = services.get("web").await.unwrap();
        assert_eq!(service.owner_references().len(), 1);
        assert_eq!(service.owner_references()[0].uid, new_uid);
        eprintln!(
            "made again while the garbage collector was down: children taken over {took_over:?} \
             after; the same Deployment and ReplicaSet after the collector came back"
        );
        drop(operator);
        delete_namespace(&client, &ns).await;
    }
}
